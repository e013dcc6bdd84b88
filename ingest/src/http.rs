//! The HTTP endpoints Mini Apps post to. A 200 means every accepted event is acknowledged by
//! Kafka and every rejected one is in the dead-letter topic; anything less is a 503 the client
//! retries (event ids make the retry harmless).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use schemas::event::DeadLetter;
use schemas::topics::Topic;

use crate::Gateway;
use crate::consent::{ConsentDecision, origin_headers};
use crate::json::Tok;
use crate::metrics::METRICS;
use crate::validate::{
    Checked, Encoded, Events, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, Receipt, RejectCode, Rejection, Times, optional_time, read_batch, read_one,
};
use crate::writer::{Pending, WriteError, now_ms};

pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// How much of an unparseable body the dead-letter record keeps.
const MAX_DEADLETTER_RAW: usize = 4096;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/events", post(single))
        .route("/v1/users/phone", post(crate::zalo_hooks::phone))
        .route("/webhooks/zalo", post(crate::zalo_hooks::webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::schema_api::router())
        // A little over the batch limit so the handler, not the framework, answers 413 with a
        // reason for bodies just above it.
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES + 64 * 1024))
        .with_state(gw)
}

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    fn retry(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn unavailable(e: &WriteError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kafka_unavailable",
        format!("{e}; nothing in this request is acknowledged: send it again (event ids make the retry safe)"),
    )
    .retry(Duration::from_secs(2))
}

async fn batch(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let start = Instant::now();
    let resp = match handle_batch(&gw, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    observe("batch", &resp, start);
    resp
}

async fn single(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let start = Instant::now();
    let resp = match handle_single(&gw, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    observe("events", &resp, start);
    resp
}

fn observe(endpoint: &str, resp: &Response, start: Instant) {
    METRICS.requests.with_label_values(&[endpoint, resp.status().as_str()]).inc();
    METRICS.request_seconds.with_label_values(&[endpoint]).observe(start.elapsed().as_secs_f64());
}

/// Checks the key, the body's presence and size, and Kafka's reachability: what every ingest
/// request needs before its events are looked at.
pub(crate) fn admit<'g>(
    gw: &'g Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<(&'g str, Bytes), ApiError> {
    let app = gw.keys.app_for(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown write key: send Authorization: Bearer <write key> (or X-Write-Key)",
        )
    })?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(what, limit)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the request body: {e}"))
        }
    })?;
    if body.len() > limit {
        return Err(too_large(what, limit));
    }
    if !gw.writer.reachable() {
        return Err(unavailable(&WriteError::Unreachable));
    }
    Ok((app, body))
}

/// A request body as text, or why it is not.
fn body_text(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))
}

fn too_large(what: &str, limit: usize) -> ApiError {
    METRICS.rejected.with_label_values(&[RejectCode::TooLarge.as_str()]).inc();
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{what} is larger than {} KB; split it", limit / 1024))
}

async fn handle_batch(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (app, body) = admit(gw, headers, body, MAX_BATCH_BYTES, "the batch body")?;
    let received_at = now_ms();
    // One pass over the whole body: the envelope and every event in it, checked and encoded.
    let batch = match body_text(&body).and_then(|text| read_batch(text, app)) {
        Ok(b) => b,
        Err(reason) => return Err(unparseable(gw, app, "http:/v1/batch", &body, received_at, reason).await),
    };
    if batch.count > MAX_BATCH_EVENTS {
        METRICS.rejected.with_label_values(&[RejectCode::TooLarge.as_str()]).inc();
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!("the batch has {} events; the limit is {MAX_BATCH_EVENTS}", batch.count),
        ));
    }
    if let Some((i, bytes)) = batch.events.too_large {
        METRICS.rejected.with_label_values(&[RejectCode::TooLarge.as_str()]).inc();
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!("event {i} is {bytes} bytes; the limit is 32 KB an event"),
        ));
    }
    let sent_at = optional_time("sent_at", batch.sent_at.unwrap_or(Tok::Null))
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", r.message))?;
    gw.limiter.take(app, batch.count).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("app {app} is over its rate of {} events a second; retry after the delay", gw.rate),
        )
        .retry(wait)
    })?;
    let receipt = Receipt { app_id: app, received_at, sent_at };
    let outcome = ingest(gw, &receipt, batch.events, "http:/v1/batch").await?;
    Ok((StatusCode::OK, Json(outcome.body())).into_response())
}

async fn handle_single(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (app, body) = admit(gw, headers, body, MAX_EVENT_BYTES, "an event")?;
    let received_at = now_ms();
    let events = match body_text(&body).and_then(|text| read_one(text, app).map_err(|e| format!("body is not a JSON event: {e}"))) {
        Ok(v) => v,
        Err(reason) => return Err(unparseable(gw, app, "http:/v1/events", &body, received_at, reason).await),
    };
    gw.limiter.take(app, 1).map_err(|wait| {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("app {app} is over its rate of {} events a second", gw.rate))
            .retry(wait)
    })?;
    let receipt = Receipt { app_id: app, received_at, sent_at: None };
    let outcome = ingest(gw, &receipt, events, "http:/v1/events").await?;
    let status = if outcome.accepted == 1 { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, Json(outcome.body())).into_response())
}

/// A body that is not JSON of the right shape: 400, and a dead-letter record of its start so an
/// operator can see what a broken SDK sends. Long digit runs are masked: they may be phones.
async fn unparseable(gw: &Gateway, app: &str, source: &str, body: &[u8], received_at: i64, reason: String) -> ApiError {
    METRICS.rejected.with_label_values(&[RejectCode::InvalidJson.as_str()]).inc();
    let head = &body[..body.len().min(MAX_DEADLETTER_RAW)];
    let letter = DeadLetter {
        received_at,
        source: source.into(),
        app_id: Some(app.into()),
        event_id: None,
        event_type: None,
        index: None,
        reason_code: RejectCode::InvalidJson.as_str().into(),
        reason: reason.clone(),
        raw: mask_digit_runs(head),
    };
    let waited: Result<(), String> = async {
        let bytes = schemas::codec::encode(&letter).map_err(|e| e.to_string())?;
        let mut pending = Pending::default();
        gw.writer.send(&mut pending, Topic::DeadLetter.name(), app.as_bytes(), &bytes, received_at).map_err(|e| e.to_string())?;
        gw.writer.wait(pending).await.map(|_| ()).map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = waited {
        tracing::warn!(app, error = %e, "could not dead-letter an unparseable body");
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", reason)
}

fn mask_digit_runs(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if run >= 9 {
            out.extend_from_slice(b"[digits]");
            i += run;
        } else if run > 0 {
            out.extend_from_slice(&bytes[i..i + run]);
            i += run;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

pub(crate) struct Outcome {
    pub(crate) accepted: usize,
    pub(crate) rejected: Vec<(usize, Option<String>, Rejection)>,
}

impl Outcome {
    pub(crate) fn body(&self) -> Value {
        let rejected: Vec<Value> = self
            .rejected
            .iter()
            .map(|(i, id, r)| json!({"index": i, "event_id": id, "code": r.code.as_str(), "reason": r.message}))
            .collect();
        json!({"accepted": self.accepted, "rejected": rejected})
    }
}

/// Validates, checks consent, writes accepted events to their topics and rejected ones to the
/// dead-letter topic, and waits until Kafka has all of them.
///
/// One pass: each event is validated, encoded and handed to the producer while it is still in
/// the cache, and dropped. Only events whose data needs a consent wait until the whole batch has
/// been seen (a consent later in the same batch counts for them); they are written after the
/// others.
pub(crate) async fn ingest(gw: &Gateway, receipt: &Receipt<'_>, events: Events<'_>, source: &str) -> Result<Outcome, ApiError> {
    let total = events.len();
    let Events { buf: parts, checked, .. } = events;
    let mut w = BatchWriter {
        gw,
        receipt,
        source,
        pending: Pending::default(),
        buf: Vec::with_capacity(1024),
        accepted_by_topic: [0; INPUT_TOPICS.len()],
        outcome: Outcome { accepted: 0, rejected: Vec::new() },
    };
    // Duplicated ids inside one batch: the first one counts. Ids are canonical UUIDs by now.
    let mut seen: HashSet<u128, foldhash::fast::RandomState> = HashSet::with_capacity_and_hasher(total, Default::default());
    let mut consents: Vec<ConsentDecision<'_>> = Vec::new();
    let mut waiting: Vec<(usize, &str, Encoded, Times)> = Vec::new();
    for (i, c) in checked.into_iter().enumerate() {
        let (raw, e) = match c {
            Checked::Accepted(raw, e) => (raw, e),
            Checked::Rejected(raw, why) => {
                w.reject(i, raw, why)?;
                continue;
            }
        };
        if !seen.insert(e.id) {
            w.reject(i, raw, Rejection::new(RejectCode::DuplicateEventId, "the same event_id appears earlier in this batch"))?;
            continue;
        }
        let times = e.times(receipt.sent_at, receipt.received_at);
        if !e.needs_consent.is_empty() {
            waiting.push((i, raw, e, times));
            continue;
        }
        w.accept(&e, &parts, &times)?;
        if let Some((purpose, granted)) = e.consent {
            consents.push(ConsentDecision { ids: e.user_ids(&parts), purpose, granted, at: times.corrected });
        }
    }

    if !waiting.is_empty() {
        // Consent decisions in this batch: the latest (by corrected time) per user id and purpose.
        let mut in_batch: HashMap<(&str, &str), (bool, i64), foldhash::fast::RandomState> = HashMap::default();
        for d in &consents {
            for id in d.ids.into_iter().flatten() {
                let slot = in_batch.entry((id, d.purpose)).or_insert((d.granted, d.at));
                if d.at >= slot.1 {
                    *slot = (d.granted, d.at);
                }
            }
        }
        for (i, raw, e, times) in &waiting {
            let ids: Vec<&str> = e.user_ids(&parts).into_iter().flatten().collect();
            let refused = e.needs_consent.purposes().find(|purpose| {
                let latest = ids.iter().filter_map(|id| in_batch.get(&(*id, *purpose))).max_by_key(|d| d.1);
                !match latest {
                    Some(&(granted, _)) => granted,
                    None => gw.consent.granted(receipt.app_id, &ids, purpose),
                }
            });
            match refused {
                Some(purpose) => w.reject(
                    *i,
                    raw,
                    Rejection::new(
                        RejectCode::NoConsent,
                        format!(
                            "the user has not consented to purpose {purpose:?}: send consent_changed {{purpose: {purpose:?}, granted: true}} first or in the same batch"
                        ),
                    ),
                )?,
                None => w.accept(e, &parts, times)?,
            }
        }
        w.outcome.rejected.sort_by_key(|(i, _, _)| *i);
    }

    let BatchWriter { pending, accepted_by_topic, outcome, .. } = w;
    let waited = gw.writer.wait(pending).await.map_err(|e| {
        tracing::warn!(app = receipt.app_id, events = total, error = %e, "batch not acknowledged");
        unavailable(&e)
    })?;
    METRICS.produce_seconds.observe(waited.as_secs_f64());
    gw.consent.apply_all(receipt.app_id, &consents);
    for (topic, n) in INPUT_TOPICS.iter().zip(accepted_by_topic) {
        if n > 0 {
            METRICS.accepted.with_label_values(&[receipt.app_id, topic.name()]).inc_by(n);
        }
    }
    for (_, _, r) in &outcome.rejected {
        METRICS.rejected.with_label_values(&[r.code.as_str()]).inc();
    }
    tracing::debug!(app = receipt.app_id, accepted = outcome.accepted, rejected = outcome.rejected.len(), "batch stored");
    Ok(outcome)
}

/// The topics events are accepted into, for counting per topic without a map.
const INPUT_TOPICS: [Topic; 5] = [Topic::Views, Topic::Carts, Topic::Orders, Topic::Identities, Topic::Engagement];

/// One request's writes: records handed to the producer, counts, the answer being built.
struct BatchWriter<'g, 'r> {
    gw: &'g Gateway,
    receipt: &'r Receipt<'r>,
    source: &'r str,
    pending: Pending,
    buf: Vec<u8>,
    accepted_by_topic: [u64; INPUT_TOPICS.len()],
    outcome: Outcome,
}

impl BatchWriter<'_, '_> {
    /// Frames an accepted event with its times and hands it to the producer.
    fn accept(&mut self, event: &Encoded, parts: &[u8], times: &Times) -> Result<(), ApiError> {
        event.frame(parts, times, &mut self.buf);
        let topic = event.topic;
        let headers = event.consent.is_some().then(|| origin_headers(&self.gw.consent.origin));
        self.gw
            .writer
            .send_with_headers(&mut self.pending, topic.name(), event.key(parts), &self.buf, self.receipt.received_at, headers)
            .map_err(|e| unavailable(&e))?;
        if let Some(n) = INPUT_TOPICS.iter().position(|t| *t == topic) {
            self.accepted_by_topic[n] += 1;
        }
        self.outcome.accepted += 1;
        Ok(())
    }

    /// Writes a rejected event to the dead-letter topic and notes it for the answer.
    fn reject(&mut self, index: usize, raw: &str, rejection: Rejection) -> Result<(), ApiError> {
        let letter = dead_letter(self.receipt, self.source, index, raw, &rejection);
        self.buf.clear();
        schemas::codec::encode_into(&letter, &mut self.buf)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()))?;
        self.gw
            .writer
            .send(&mut self.pending, Topic::DeadLetter.name(), self.receipt.app_id.as_bytes(), &self.buf, self.receipt.received_at)
            .map_err(|e| unavailable(&e))?;
        self.outcome.rejected.push((index, letter.event_id, rejection));
        Ok(())
    }
}

/// The dead-letter record of one rejected event. The phone and traits are replaced: a rejected
/// event must not keep personal data the user has not agreed to.
fn dead_letter(receipt: &Receipt<'_>, source: &str, index: usize, raw: &str, r: &Rejection) -> DeadLetter {
    let mut value: Option<Value> = serde_json::from_str(raw).ok();
    let field = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    let event_id = field(&value, "event_id");
    let event_type = field(&value, "type");
    let raw_bytes = match value.as_mut().and_then(|v| v.get_mut("properties")).and_then(Value::as_object_mut) {
        Some(props) if props.contains_key("phone") || props.contains_key("traits") => {
            for k in ["phone", "traits"] {
                if let Some(v) = props.get_mut(k) {
                    *v = Value::String("[redacted]".into());
                }
            }
            value.as_ref().map(|v| v.to_string().into_bytes()).unwrap_or_default()
        }
        _ => raw.as_bytes().to_vec(),
    };
    DeadLetter {
        received_at: receipt.received_at,
        source: source.into(),
        app_id: Some(receipt.app_id.into()),
        event_id,
        event_type,
        index: Some(index as i64),
        reason_code: r.code.as_str().into(),
        reason: r.message.clone(),
        raw: raw_bytes,
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let kafka = gw.writer.reachable();
    let consent = gw.consent.caught_up();
    let status = if kafka && consent { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": kafka && consent, "kafka": kafka, "consent_view": consent}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_digit_runs_are_masked() {
        assert_eq!(mask_digit_runs(b"{\"phone\":\"0987654321\",\"n\":12}"), b"{\"phone\":\"[digits]\",\"n\":12}".to_vec());
    }

    #[test]
    fn rejected_identify_keeps_no_phone_or_traits() {
        let raw = r#"{"event_id":"x","type":"identify","properties":{"phone":"0987654321","traits":{"name":"Lan"}}}"#;
        let r = Receipt { app_id: "demo", received_at: 1, sent_at: None };
        let d = dead_letter(&r, "t", 0, raw, &Rejection::new(RejectCode::NoConsent, "no"));
        let text = String::from_utf8(d.raw).unwrap();
        assert!(!text.contains("0987654321") && !text.contains("Lan"), "{text}");
        assert_eq!(d.event_id.as_deref(), Some("x"));
        assert_eq!(d.event_type.as_deref(), Some("identify"));
    }
}
