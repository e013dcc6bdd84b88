//! What Zalo sends to zcdp, and the one call the Mini App cannot make itself.
//!
//! - `POST /webhooks/zalo`: Zalo's webhook events, signed in `X-ZEvent-Signature` with
//!   sha256(appId + body + timestamp + OA secret). A bad or missing signature gets 401. OA events
//!   become `zmp.identities.v1` events through the same validation as the Mini App's (follow →
//!   `oa_followed`, unfollow → `oa_unfollowed`, a user's message, reaction or form →
//!   `oa_interacted`, which opens the 48 h window); ZNS delivery receipts
//!   (`user_received_message`) become `delivered` records in `zmp.messages.v1`. Event ids are
//!   derived from the event, so Zalo's retries are dropped as duplicates downstream.
//! - `POST /v1/users/phone` (write key): the Mini App's `getPhoneNumber()` token is exchanged
//!   server-side at graph.zalo.me with the app secret, and the number recorded as an `identify`
//!   event — accepted only under the user's consent to purpose `phone`, like any other.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use schemas::derived::{MessageEvent, MessageStatus};
use schemas::time::now_ms;
use schemas::topics::Topic;
use schemas::zalo::ZaloArgs;

use crate::Gateway;
use crate::accept::{Vouch, ingest};
use crate::api::{ApiError, admit, vouch};
use crate::metrics::METRICS;
use crate::session::take_graph_budget;
use crate::validate::{MAX_EVENT_BYTES, Receipt, read_one};
use crate::writer::Pending;

/// Zalo's webhook and the phone exchange.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new().route("/v1/users/phone", post(phone)).route("/webhooks/zalo", post(webhook))
}

/// How far from now a webhook's own timestamp may be.
pub const WEBHOOK_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Webhooks already taken, by signature, until their window ends: a replay inside the window is
/// acknowledged and dropped. Bounded: past [`SEEN_MAX`] entries the expired ones go, and when
/// none has expired the oldest window's do.
#[derive(Default)]
pub struct SeenWebhooks(std::sync::Mutex<std::collections::HashMap<String, i64>>);

/// Webhooks remembered at most (a signature is 64 hex digits: a few MB).
const SEEN_MAX: usize = 50_000;

impl SeenWebhooks {
    /// Whether `key` is remembered and its time has not ended.
    pub fn holds(&self, key: &str, now: i64) -> bool {
        self.0.lock().expect("webhooks lock").get(key).is_some_and(|u| *u > now)
    }

    /// Forgets `signature` (its event was not stored after all).
    pub fn forget(&self, signature: &str) {
        self.0.lock().expect("webhooks lock").remove(signature);
    }

    /// Whether `signature` is new (it is remembered until `until`).
    pub fn first_time(&self, signature: String, until: i64, now: i64) -> bool {
        let mut seen = self.0.lock().expect("webhooks lock");
        if seen.len() >= SEEN_MAX {
            seen.retain(|_, u| *u > now);
            if seen.len() >= SEEN_MAX {
                let oldest = seen.values().copied().min().unwrap_or(now);
                seen.retain(|_, u| *u > oldest);
            }
        }
        match seen.get(&signature) {
            Some(u) if *u > now => false,
            _ => {
                seen.insert(signature, until);
                true
            }
        }
    }
}

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// The identities event an OA webhook event stands for, if any.
fn oa_event_type(name: &str) -> Option<&'static str> {
    match name {
        "follow" => Some("oa_followed"),
        "unfollow" => Some("oa_unfollowed"),
        n if n.starts_with("user_send_") || n == "user_submit_info" || n == "user_reacted_message" || n == "user_received_message_oa" => {
            Some("oa_interacted")
        }
        _ => None,
    }
}

async fn webhook(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let outcome = handle_webhook(&gw, &headers, body).await;
    let label = match &outcome {
        Ok(_) => "accepted",
        Err(r) if r.status() == StatusCode::UNAUTHORIZED => "bad_signature",
        Err(_) => "refused",
    };
    METRICS.webhooks.with_label_values(&[label]).inc();
    outcome.unwrap_or_else(|r| r)
}

async fn handle_webhook(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, Response> {
    if gw.zalo_apps.iter().all(|z| z.oa_secret.is_none()) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no Zalo app is configured (--zalo-app-id and --zalo-oa-secret, or --zalo-apps-file)",
        ));
    }
    let body = body.map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_body", &e.to_string()))?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "a webhook event is at most 32 KB"));
    }
    let text = std::str::from_utf8(&body).map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid_json", "body is not UTF-8"))?;
    let event: Value = serde_json::from_str(text).map_err(|e| refuse(StatusCode::BAD_REQUEST, "invalid_json", &e.to_string()))?;
    let timestamp = match &event["timestamp"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let signature = headers.get("x-zevent-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The event names its Zalo app; that app's OA secret must have signed it, and its zcdp app
    // is the one the event is recorded under.
    let zalo = gw.zalo_apps.iter().find(|z| z.app_id.is_some() && z.app_id.as_deref() == event["app_id"].as_str());
    let Some((zalo, app_id, secret)) = zalo.and_then(|z| Some((z, z.app_id.as_deref()?, z.oa_secret.as_deref()?))) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "bad_signature", "X-ZEvent-Signature does not match this app's OA secret"));
    };
    if !schemas::zalo::signature_ok(signature, app_id, text, &timestamp, secret) {
        return Err(refuse(StatusCode::UNAUTHORIZED, "bad_signature", "X-ZEvent-Signature does not match this app's OA secret"));
    }
    // A signed event is good for a while around its own time, once: an old one (or one replayed
    // by whoever saw it) is refused, a repeat within the window (Zalo retrying) acknowledged.
    let now = now_ms();
    let Some(ts) = timestamp.parse::<i64>().ok().filter(|ts| (now - ts).abs() <= WEBHOOK_WINDOW_MS) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "stale_webhook",
            "the event's timestamp is missing or more than 10 minutes from now: refused, so a replayed event cannot change state",
        ));
    };
    let seen_as = schemas::zalo::canonical_signature(signature);
    if !gw.webhooks_seen.first_time(seen_as.clone(), ts + WEBHOOK_WINDOW_MS, now) {
        return Ok((StatusCode::OK, Json(json!({"duplicate": true}))).into_response());
    }
    // Not stored (Kafka did not take it): Zalo's retry must be taken, not dropped as a repeat.
    let outcome = take_webhook(gw, &event, zalo, &timestamp, ts).await;
    if outcome.is_err() {
        gw.webhooks_seen.forget(&seen_as);
    }
    outcome
}

/// A verified, fresh webhook event, recorded.
async fn take_webhook(gw: &Gateway, event: &Value, zalo: &ZaloArgs, timestamp: &str, ts: i64) -> Result<Response, Response> {
    let name = event["event_name"].as_str().unwrap_or_default();
    let app_id = zalo.app_id.as_deref().unwrap_or_default();
    if name == "user_received_message" {
        return delivered(gw, event, &zalo.cdp_app, ts).await.map_err(|e| e.into_response());
    }
    let Some(kind) = oa_event_type(name) else {
        return Ok((StatusCode::OK, Json(json!({"ignored": name}))).into_response());
    };
    // follow/unfollow name the user in `follower`, messages in `sender`.
    let uid = event["follower"]["id"].as_str().or(event["sender"]["id"].as_str()).unwrap_or_default();
    if uid.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "no_user", "the event names no follower or sender id"));
    }
    let mut user = json!({"oa_user_id": uid});
    match event["user_id_by_app"].as_str().filter(|s| !s.is_empty()) {
        Some(by_app) => user["zalo_id"] = json!(by_app),
        // Without the app-scoped id the user is known by their OA id alone (a profile of its own).
        None => user["anonymous_id"] = json!(format!("{}{uid}", crate::accept::OA_ANONYMOUS_PREFIX)),
    }
    let event_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("zalo-webhook/{app_id}/{name}/{uid}/{timestamp}").as_bytes());
    let time = chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let oa_id = event["oa_id"].as_str().or(event["recipient"]["id"].as_str()).unwrap_or_default();
    let zcdp_event = json!({"event_id": event_id.to_string(), "type": kind, "event_time": time, "user": user,
        "context": {"library": "zalo-webhook"}, "properties": {"oa_id": oa_id}})
    .to_string();
    let app = zalo.cdp_app.as_str();
    let parsed = read_one(&zcdp_event, app).map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()))?;
    let receipt = Receipt { app_id: app, received_at: now_ms(), sent_at: None };
    let outcome = ingest(gw, &receipt, parsed, "webhook:zalo", &Vouch::Zalo).await.map_err(|e| ApiError::from(e).into_response())?;
    // Zalo retries anything but a 200; a rejected event (dead-lettered with its reason) would be
    // rejected again, so it is acknowledged too.
    Ok((StatusCode::OK, Json(outcome.body())).into_response())
}

/// A ZNS delivery receipt → a `delivered` record on the user's partition of `zmp.messages.v1`.
async fn delivered(gw: &Gateway, event: &Value, cdp_app: &str, ts: i64) -> Result<Response, ApiError> {
    let tracking = event["message"]["tracking_id"].as_str().unwrap_or_default();
    let (message_id, user_key) = tracking.split_once('.').unwrap_or((tracking, ""));
    let at = event["message"]["delivery_time"].as_str().and_then(|t| t.parse().ok()).unwrap_or(ts);
    let rec = MessageEvent {
        message_id: message_id.to_string(),
        app_id: cdp_app.to_string(),
        user_key: user_key.to_string(),
        channel: "zns".into(),
        status: MessageStatus::Delivered.as_str().into(),
        zalo_message_id: event["message"]["msg_id"].as_str().map(str::to_string),
        at,
        ..MessageEvent::default()
    };
    let bytes = schemas::codec::encode(&rec).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let key = if user_key.is_empty() { message_id } else { user_key };
    let mut pending = Pending::default();
    let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable", e);
    gw.writer.send(&mut pending, Topic::Messages.name(), key.as_bytes(), &bytes, now_ms()).map_err(|e| unavailable(e.to_string()))?;
    gw.writer.wait(pending).await.map_err(|e| unavailable(e.to_string()))?;
    Ok((StatusCode::OK, Json(json!({"recorded": "delivered"}))).into_response())
}

/// `POST /v1/users/phone` `{"user": {…}, "access_token": "<user's>", "code": "<phone token>"}`.
async fn phone(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    match handle_phone(&gw, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/users/phone` `{"access_token": "<the user's>", "code": "<getPhoneNumber's token>"}`.
/// From the Mini App (write key), under the user's session: the access token must be that same
/// user's (Zalo says whose it is), and the number is recorded for the session's user. From the
/// shop's server (secret key), for the `user` the body names. Either way the number is Zalo's
/// answer, never the client's: the identify is recorded as Zalo's word (`trust` zalo).
async fn handle_phone(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (who, body) = admit(gw, headers, body, MAX_EVENT_BYTES, "a phone exchange")?;
    let app = who.app.as_str();
    let vouch = vouch(gw, &who, headers)?;
    let session_user = match &vouch {
        Vouch::Session(user) => Some(user.clone()),
        Vouch::Server => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_required",
                "the phone exchange needs the user's session (X-Zcdp-Session from POST /v1/session), or the shop's secret key",
            ));
        }
    };
    take_graph_budget(gw, app, session_user.as_deref())?;
    let Some((zalo, secret)) = gw.zalo_of(app).and_then(|z| Some((z, z.app_secret.as_deref()?))) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_configured", "no Zalo app secret is configured (--zalo-app-secret)"));
    };
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("body is not JSON: {e}")))?;
    let (Some(token), Some(code)) = (req["access_token"].as_str(), req["code"].as_str()) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "missing_field", "access_token and code (getPhoneNumber's token) are required"));
    };
    let user = match &session_user {
        Some(user) => {
            // The phone token is decoded with the access token: it must be the session user's.
            let owner = schemas::zalo::graph_me(&gw.http, &zalo.graph_url, token, Some(secret)).await.map_err(|e| match e {
                schemas::zalo::GraphError::Refused { .. } => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_access_token", "Zalo does not know this access token")
                }
                other => ApiError::new(StatusCode::BAD_GATEWAY, "zalo_unreachable", other.to_string()),
            })?;
            if &owner.id != user || req["user"]["zalo_id"].as_str().is_some_and(|z| z != user) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "identity_mismatch",
                    "the access token (or the user named) is not the session's user: a session exchanges its own user's phone only",
                ));
            }
            json!({"zalo_id": user})
        }
        None if req["user"].is_object() => req["user"].clone(),
        None => return Err(ApiError::new(StatusCode::BAD_REQUEST, "missing_field", "user {zalo_id} is required with the secret key")),
    };
    let number = exchange(gw, &zalo.graph_url, token, code, secret).await?;
    let event_id = req["event_id"].as_str().map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let event = json!({"event_id": event_id, "type": "identify", "user": user, "context": {"library": "zcdp-phone-exchange"},
        "properties": {"phone": number}})
    .to_string();
    let parsed = read_one(&event, app).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;
    let receipt = Receipt { app_id: app, received_at: now_ms(), sent_at: None };
    let outcome = ingest(gw, &receipt, parsed, "http:/v1/users/phone", &Vouch::Zalo).await.map_err(ApiError::from)?;
    let status = if outcome.accepted == 1 { StatusCode::OK } else { StatusCode::FORBIDDEN };
    Ok((status, Json(outcome.body())).into_response())
}

/// The Graph API's phone exchange ([`schemas::zalo::exchange_phone_token`]), its failures as
/// this endpoint's errors.
async fn exchange(gw: &Gateway, graph_url: &str, token: &str, code: &str, secret: &str) -> Result<String, ApiError> {
    use schemas::zalo::GraphError as E;
    schemas::zalo::exchange_phone_token(&gw.http, graph_url, token, code, secret).await.map_err(|e| {
        let (status, code) = match e {
            E::Unreachable(_) => (StatusCode::BAD_GATEWAY, "zalo_unreachable"),
            E::BadAnswer => (StatusCode::BAD_GATEWAY, "zalo_bad_answer"),
            E::Refused { .. } => (StatusCode::BAD_REQUEST, "phone_token_refused"),
        };
        ApiError::new(status, code, e.to_string())
    })
}
