//! `POST /v1/session`: a Mini App user proven by Zalo. The Mini App sends the Zalo access token
//! zmp-sdk's `getAccessToken()` gives it; the gateway asks Zalo's Graph API whose token it is
//! (`GET /v2.0/me`) and answers a session token, signed with the deployment's session secret,
//! for that user of the key's app. Under it (`X-Zcdp-Session`) the Mini App's events about that
//! user are recorded as verified, and it may exchange the user's phone token.
//!
//! Every call costs a request to Zalo, so it is rate-limited per app and per user; a token Zalo
//! refuses is 401 `invalid_access_token`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use schemas::time::now_ms;
use schemas::zalo::GraphError;
use sha2::Digest as _;

use crate::Gateway;
use crate::api::{ApiError, caller};
use crate::metrics::METRICS;

/// The largest body `POST /v1/session` reads: a token and a little JSON.
const MAX_SESSION_BODY: usize = 8 * 1024;

/// How long a token Zalo refused is refused without asking Zalo again.
const REFUSED_TOKEN_MS: i64 = 10 * 60 * 1000;

/// Tokens Zalo refused, by SHA-256, until when: bounded like the webhook replay guard.
#[derive(Default)]
pub struct RefusedTokens(crate::zalo_hooks::SeenWebhooks);

impl RefusedTokens {
    fn seen(&self, digest: &str, now: i64) -> bool {
        self.0.holds(digest, now)
    }
    fn remember(&self, digest: String, until: i64) {
        self.0.first_time(digest, until, schemas::time::now_ms());
    }
}

pub fn routes() -> axum::Router<Arc<Gateway>> {
    axum::Router::new().route("/v1/session", post(open))
}

async fn open(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let resp = handle(&gw, &headers, body).await.unwrap_or_else(|e| e.into_response());
    METRICS.requests.with_label_values(&["session", resp.status().as_str()]).inc();
    resp
}

/// Takes a token of the app's Graph budget, then one of the user's: each a 429 when spent.
pub(crate) fn take_graph_budget(gw: &Gateway, app: &str, user: Option<&str>) -> Result<(), ApiError> {
    let limited = |what: &str, wait| {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("too many {what} calls to Zalo; retry after the delay"))
            .retry(wait)
    };
    gw.graph_limiter.take(app, 1).map_err(|w| limited("of this app's", w))?;
    if let Some(user) = user {
        gw.user_limiter.take(&format!("{app}\u{1f}{user}"), 1).map_err(|w| limited("of this user's", w))?;
    }
    Ok(())
}

async fn handle(gw: &Gateway, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let who = caller(gw, headers)?;
    let body = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the request body: {e}")))?;
    if body.len() > MAX_SESSION_BODY {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "a session request is at most 8 KB"));
    }
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("body is not JSON: {e}")))?;
    let Some(token) = req["access_token"].as_str().map(str::trim).filter(|t| !t.is_empty() && t.len() <= 2048) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "access_token is required: the Zalo access token from zmp-sdk getAccessToken()",
        ));
    };
    let Some(zalo) = gw.zalo_of(&who.app) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_configured", "this app has no Zalo app in --zalo-apps-file"));
    };
    // A token Zalo refused a moment ago is refused again without asking: junk cannot drain the
    // app's Graph budget twice. Remembered per Zalo app: whether Zalo takes a token depends on
    // the app asking.
    let token_digest = {
        let mut h = sha2::Sha256::new();
        h.update(zalo.app_id.as_deref().unwrap_or_default().as_bytes());
        h.update([0x1f]);
        h.update(token.as_bytes());
        hex::encode(h.finalize())
    };
    let invalid =
        || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_access_token", "Zalo does not know this access token (or it has expired)");
    if gw.refused_tokens.seen(&token_digest, now_ms()) {
        return Err(invalid());
    }
    take_graph_budget(gw, &who.app, None)?;
    let user = schemas::zalo::graph_me(&gw.http, &zalo.graph_url, token, zalo.app_secret.as_deref()).await.map_err(|e| match e {
        GraphError::Refused { .. } => {
            gw.refused_tokens.remember(token_digest.clone(), now_ms() + REFUSED_TOKEN_MS);
            invalid()
        }
        GraphError::Unreachable(_) => ApiError::new(StatusCode::BAD_GATEWAY, "zalo_unreachable", e.to_string()),
        GraphError::BadAnswer => ApiError::new(StatusCode::BAD_GATEWAY, "zalo_bad_answer", e.to_string()),
    })?;
    take_graph_budget(gw, &who.app, Some(&user.id))?;
    let (session, token) = gw.sessions.open(&who.app, &user.id, now_ms());
    let expires_at = chrono::DateTime::from_timestamp_millis(session.expires_at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok((StatusCode::OK, Json(json!({"session": token, "zalo_id": user.id, "expires_at": expires_at}))).into_response())
}
