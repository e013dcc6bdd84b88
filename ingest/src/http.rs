//! The HTTP endpoints Mini Apps post to. A 200 means every accepted event is acknowledged by
//! Kafka and every rejected one is in the dead-letter topic; anything less is a 503 the client
//! retries (event ids make the retry harmless).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use schemas::event::DeadLetter;
use schemas::time::now_ms;
use schemas::topics::Topic;

use crate::Gateway;
use crate::accept::ingest;
use crate::api::{ApiError, admit, vouch};
use crate::json::Tok;
use crate::metrics::METRICS;
use crate::validate::{MAX_BATCH_EVENTS, MAX_EVENT_BYTES, Receipt, RejectCode, optional_time, read_batch, read_one};
use crate::writer::Pending;

pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// How much of an unparseable body the dead-letter record keeps.
const MAX_DEADLETTER_RAW: usize = 4096;

/// The Mini App's endpoints and the probes.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/events", post(single))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// The OpenAPI 3.1 document of the whole HTTP API (`docs/openapi.json`, built in).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`: anyone may read it; it holds no key and no data.
pub async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
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

/// A request body as text, or why it is not.
fn body_text(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))
}

async fn handle_batch(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (who, body) = admit(gw, headers, body, MAX_BATCH_BYTES, "the batch body")?;
    let app = who.app.as_str();
    let vouch = vouch(gw, &who, headers)?;
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
    let outcome = ingest(gw, &receipt, batch.events, "http:/v1/batch", &vouch).await.map_err(ApiError::from)?;
    Ok((StatusCode::OK, Json(outcome.body())).into_response())
}

async fn handle_single(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (who, body) = admit(gw, headers, body, MAX_EVENT_BYTES, "an event")?;
    let app = who.app.as_str();
    let vouch = vouch(gw, &who, headers)?;
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
    let outcome = ingest(gw, &receipt, events, "http:/v1/events", &vouch).await.map_err(ApiError::from)?;
    let status = if outcome.accepted == 1 { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, Json(outcome.body())).into_response())
}

/// A body that is not JSON of the right shape: 400, and a dead-letter record of its start so an
/// operator can see what a broken SDK sends. Long digit runs are masked: they may be phones.
/// It counts as one event against the app's rate: garbage cannot fill the dead-letter topic
/// faster than events could.
async fn unparseable(gw: &Gateway, app: &str, source: &str, body: &[u8], received_at: i64, reason: String) -> ApiError {
    METRICS.rejected.with_label_values(&[RejectCode::InvalidJson.as_str()]).inc();
    if let Err(wait) = gw.limiter.take(app, 1) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("app {app} is over its rate of {} events a second", gw.rate),
        )
        .retry(wait);
    }
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
        raw: crate::redact::redact(head),
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

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let kafka = gw.writer.reachable();
    let consent = gw.consent.caught_up();
    let status = if kafka && consent { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": kafka && consent, "kafka": kafka, "consent_view": consent}))).into_response()
}
