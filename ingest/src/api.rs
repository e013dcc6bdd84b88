//! What every endpoint of the gateway shares: the JSON error answer ([`ApiError`], with
//! `Retry-After` where a retry helps) and the admission of a request that carries events (the
//! write key, the body's presence and size, Kafka's reachability).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use schemas::keys::{Access, Caller};
use schemas::session::SESSION_HEADER;

use crate::Gateway;
use crate::accept::{AcceptError, Vouch};
use crate::metrics::METRICS;
use crate::validate::RejectCode;
use crate::writer::WriteError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub(crate) fn retry(mut self, after: Duration) -> ApiError {
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

pub(crate) fn unavailable(e: &WriteError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kafka_unavailable",
        format!("{e}; nothing in this request is acknowledged: send it again (event ids make the retry safe)"),
    )
    .retry(Duration::from_secs(2))
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> ApiError {
        match e {
            AcceptError::Write(w) => unavailable(&w),
            AcceptError::Encode(message) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", message),
        }
    }
}

/// Who a request is, by its key (any kind may post events); 401 without a known one.
pub(crate) fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, ApiError> {
    gw.keys.caller(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown key: send Authorization: Bearer <write key> (or X-Write-Key)",
        )
    })
}

/// Who vouches for a request's events: a secret or admin key's holder is the shop's server; a
/// write key is a client — under the session its `X-Zcdp-Session` proves, when it sends one (a
/// session header that is not valid, or another app's, is a 401: nothing of the request is
/// taken).
pub(crate) fn vouch(gw: &Gateway, caller: &Caller, headers: &HeaderMap) -> Result<Vouch, ApiError> {
    if caller.access >= Access::Secret {
        return Ok(Vouch::Server);
    }
    let Some(token) = headers.get(SESSION_HEADER) else { return Ok(Vouch::Client) };
    let token = token.to_str().unwrap_or_default();
    match gw.sessions.verify(token, schemas::time::now_ms()) {
        Ok(s) if s.app == caller.app => Ok(Vouch::Session(s.user)),
        Ok(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_session", "the session is another app's")),
        Err(e) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_session", e.to_string())),
    }
}

/// Checks the key, the body's presence and size, and Kafka's reachability: what every ingest
/// request needs before its events are looked at.
pub(crate) fn admit(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<(Caller, Bytes), ApiError> {
    let who = caller(gw, headers)?;
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
    Ok((who, body))
}

pub(crate) fn too_large(what: &str, limit: usize) -> ApiError {
    METRICS.rejected.with_label_values(&[RejectCode::TooLarge.as_str()]).inc();
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{what} is larger than {} KB; split it", limit / 1024))
}
