//! The report page (`GET /report`) and how one signs in to it, without ever putting a key in a
//! URL: a form posts the admin key once (`POST /report/sign-in`), and the answer sets an
//! HttpOnly, SameSite=Strict cookie holding a token signed with the session secret — the key
//! itself never leaves the form. For scripts and tests, an admin key's holder can ask for a
//! one-time link (`POST /report/links`, key in `Authorization`), good for a minute and once.
//! The page's reads then carry the cookie; only reads (GET) accept it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use schemas::keys::{Access, Caller};
use schemas::session::Purpose;

use super::{QueryApi, error};

/// The cookie's name.
pub const COOKIE: &str = "zcdp_report";
/// How long a sign-in lasts.
const SIGNED_IN_FOR: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time link may wait to be opened.
const LINK_FOR: Duration = Duration::from_secs(60);

/// Headers every answer of the page and its sign-in carries: no referrer, no framing, no cache.
fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

/// The page: one static file, no build step. It reads the API with the sign-in cookie and
/// refreshes itself every 5 s (`?refresh=ms`); without a sign-in it shows the form.
pub async fn page() -> Response {
    hardened(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("report.html")).into_response())
}

/// Sets the cookie for `caller` (an admin) and sends the browser to the page.
fn signed_in(api: &QueryApi, caller: &Caller, refresh: Option<&str>, headers: &HeaderMap) -> Response {
    let (_, token) = api.sessions.open_for(Purpose::Report, &caller.app, &caller.key_id, schemas::time::now_ms(), SIGNED_IN_FOR);
    // Secure when the request came over HTTPS (behind a proxy that says so); a browser keeps a
    // Secure cookie from plain http://localhost too, but not from another plain-HTTP host.
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SIGNED_IN_FOR.as_secs(),
        if https { "; Secure" } else { "" }
    );
    let to = match refresh.and_then(|r| r.parse::<u64>().ok()) {
        Some(ms) => format!("/report?refresh={ms}"),
        None => "/report".to_string(),
    };
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("token is hex"));
    hardened(resp)
}

#[derive(serde::Deserialize)]
pub struct SignIn {
    key: String,
}

/// `POST /report/sign-in` (form `key=<admin key>`): the cookie and the page, or the page again
/// saying the key was refused.
pub async fn sign_in(State(api): State<Arc<QueryApi>>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    match api.keys.resolve(form.key.trim()) {
        Some(c) if c.access == Access::Admin => signed_in(&api, &c, None, &headers),
        _ => hardened((StatusCode::SEE_OTHER, [(header::LOCATION, "/report?signin=refused")]).into_response()),
    }
}

/// `POST /report/sign-out`: the cookie cleared.
pub async fn sign_out() -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/report")]).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")).expect("ascii"),
    );
    hardened(resp)
}

/// `POST /report/links` (admin key in `Authorization`): a one-time sign-in link, good for a
/// minute: `{"url": "/report/sign-in?code=…", "expires_at": …}`.
pub async fn link(State(api): State<Arc<QueryApi>>, headers: HeaderMap) -> Response {
    let Some(caller) = api.keys.caller(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "give the admin key: Authorization: Bearer <admin key>");
    };
    if caller.access != Access::Admin {
        return error(StatusCode::FORBIDDEN, "forbidden", "only an admin key signs in to the report page");
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let (s, code) =
        api.sessions.open_for(Purpose::ReportLink, &caller.app, &format!("{}.{nonce}", caller.key_id), schemas::time::now_ms(), LINK_FOR);
    Json(json!({"url": format!("/report/sign-in?code={code}"), "expires_at": s.expires_at})).into_response()
}

/// `GET /report/sign-in?code=…[&refresh=ms]`: a one-time link opened. Each code works once (on
/// this replica; it lasts a minute in any case).
pub async fn open_link(State(api): State<Arc<QueryApi>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let now = schemas::time::now_ms();
    let refused = || hardened((StatusCode::SEE_OTHER, [(header::LOCATION, "/report?signin=refused")]).into_response());
    let Some(code) = q.get("code") else { return refused() };
    let Ok(s) = api.sessions.verify_for(Purpose::ReportLink, code, now) else { return refused() };
    {
        let mut used = api.used_links.lock().expect("links lock");
        used.retain(|_, expires| *expires > now);
        if used.insert(s.user.clone(), s.expires_at).is_some() {
            return refused();
        }
    }
    let key_id = s.user.split('.').next().unwrap_or_default().to_string();
    if !api.keys.has(&s.app, Access::Admin, &key_id) {
        return refused();
    }
    signed_in(&api, &Caller { app: s.app, access: Access::Admin, key_id }, q.get("refresh").map(String::as_str), &headers)
}

/// The admin a request's report cookie stands for, if it carries a valid one.
pub fn cookie_caller(api: &QueryApi, headers: &HeaderMap) -> Option<Caller> {
    let cookies = headers.get_all(header::COOKIE);
    let token = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))?;
    let s = api.sessions.verify_for(Purpose::Report, token, schemas::time::now_ms()).ok()?;
    // Only while the admin key it was made with is still a key: removing a leaked key ends it.
    api.keys.has(&s.app, Access::Admin, &s.user).then_some(Caller { app: s.app, access: Access::Admin, key_id: s.user })
}
