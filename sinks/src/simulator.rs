//! The Zalo simulator: the same HTTP as Zalo's OA Open API v3, OAuth v4 and ZNS template
//! endpoints (paths, `access_token` header, errors in HTTP-200 bodies), enforcing the rules of
//! [`crate::zalo_rules`] — rotating single-use refresh tokens, followers and the 7-day window,
//! package quotas, the night ban, the per-minute rate limit — and listing what it received at
//! `GET /sim/received`. `POST /sim/users` tells it who follows the OA and when they last
//! interacted; `POST /sim/oa_events` plays a user following, unfollowing or writing to the OA, and
//! posts the signed webhook to `webhook_url` as Zalo does; a delivered ZNS message is followed by
//! a signed `user_received_message` webhook. Mini App users, as Zalo knows them: `POST /sim/users`
//! with a `zalo_id` (and a `phone`) makes one and answers the access token and the phone token
//! zmp-sdk would give that user's Mini App; `GET /v2.0/me` answers who an access token it issued
//! belongs to, and `GET /v2.0/me/info` exchanges a phone token for that user's number only, with
//! that same user's access token and the app secret.
//!
//! Faults, for the at-most-once tests: `POST /sim/faults` with `{"delay_ms": 3000, "count": 1}`
//! makes the next sends (OA and ZNS) wait that long before answering, and `{"status": 500,
//! "count": 1}` makes them answer that HTTP status; either way the message was accepted first
//! (it is in `/sim/received`, and a ZNS delivery webhook still follows), as a real Zalo may do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use schemas::time::{vn_day, vn_month};

use crate::zalo_rules::*;

/// The simulated app and OA.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: String,
    pub secret_key: String,
    pub package: OaPackage,
    /// Requests a minute the app may make (Zalo: 4,000).
    pub rate_limit_per_minute: u32,
    /// How long an access token lives (Zalo: 25 h, `expires_in` 90000 s).
    pub access_ttl_ms: i64,
    /// The refresh token that works first.
    pub initial_refresh_token: String,
    /// The rate limit's window (a minute at Zalo; shorter in tests).
    pub rate_window_ms: i64,
    /// Where Zalo's webhook events go (the gateway's `/webhooks/zalo`), if anywhere.
    pub webhook_url: Option<String>,
    /// The OA secret key that signs webhook events.
    pub oa_secret: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            app_id: "sim-app".into(),
            secret_key: "sim-secret".into(),
            package: OaPackage::Basic,
            rate_limit_per_minute: 4000,
            access_ttl_ms: 90_000 * 1000,
            initial_refresh_token: "sim-refresh-0".into(),
            rate_window_ms: 60_000,
            webhook_url: None,
            oa_secret: "sim-oa-secret".into(),
        }
    }
}

/// `POST /sim/users`: an OA follower (`user_id`, the id by OA), a Mini App user (`zalo_id`, the
/// id by app, with a `phone`), or both.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SimUser {
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub follows: bool,
    /// Epoch ms of the user's last interaction with the OA.
    #[serde(default)]
    pub last_interaction: Option<i64>,
    /// The Mini App user's id by app: the simulator issues them an access token and, with a
    /// `phone`, a phone token.
    #[serde(default)]
    pub zalo_id: Option<String>,
    /// 84… (normalised), the number the phone token stands for.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A Mini App user Zalo knows.
#[derive(Debug, Clone)]
struct AppUser {
    zalo_id: String,
    name: Option<String>,
    phone: Option<String>,
}

/// A request the simulator received, and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub at: i64,
    /// `cs`, `transaction`, `promotion`, `template` (OA) or `zns`.
    pub kind: String,
    pub to: String,
    pub body: Value,
    /// 0 when delivered, else Zalo's error code.
    pub error: i64,
}

struct St {
    access: HashMap<String, i64>,
    /// Mini App users' access tokens → the user.
    app_users: HashMap<String, AppUser>,
    /// Phone tokens → the access token of the user they were issued for.
    phone_tokens: HashMap<String, String>,
    refresh: String,
    issued: u64,
    users: HashMap<String, SimUser>,
    received: Vec<Received>,
    minute: (i64, u32),
    refreshes: u64,
    refused_refreshes: u64,
    webhooks_sent: u64,
    faults: VecDeque<Fault>,
}

/// What goes wrong with a send's answer, after the message was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The answer comes this late (past the client's time-out, say).
    Delay(Duration),
    /// The answer is this HTTP status (a 5xx).
    Status(u16),
}

#[derive(Deserialize)]
struct FaultsIn {
    delay_ms: Option<u64>,
    status: Option<u16>,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

pub use crate::Clock;

pub struct Simulator {
    cfg: SimConfig,
    st: Mutex<St>,
    clock: Clock,
}

fn zalo_error(code: i64, message: &str) -> Json<Value> {
    Json(json!({"error": code, "message": message}))
}

impl Simulator {
    pub fn new(cfg: SimConfig, clock: Clock) -> Arc<Simulator> {
        let st = St {
            access: HashMap::new(),
            app_users: HashMap::new(),
            phone_tokens: HashMap::new(),
            refresh: cfg.initial_refresh_token.clone(),
            issued: 0,
            users: HashMap::new(),
            received: Vec::new(),
            minute: (0, 0),
            refreshes: 0,
            refused_refreshes: 0,
            webhooks_sent: 0,
            faults: VecDeque::new(),
        };
        Arc::new(Simulator { cfg, st: Mutex::new(st), clock })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v4/oa/access_token", post(refresh))
            .route("/v3.0/oa/message/{kind}", post(oa_message))
            .route("/message/template", post(zns))
            .route("/message/template/hashphone", post(zns))
            .route("/v2.0/me", get(me))
            .route("/v2.0/me/info", get(phone_info))
            .route("/sim/users", post(put_user))
            .route("/sim/oa_events", post(oa_event))
            .route("/sim/received", get(received))
            .route("/sim/faults", post(put_faults))
            .with_state(self.clone())
    }

    /// The next `count` sends, once accepted, answer with `fault`.
    pub fn add_faults(&self, fault: Fault, count: usize) {
        self.st.lock().expect("sim lock").faults.extend(std::iter::repeat_n(fault, count));
    }

    pub fn received(&self) -> Vec<Received> {
        self.st.lock().expect("sim lock").received.clone()
    }

    /// Successful refreshes, and refreshes refused (a used or unknown refresh token).
    pub fn refreshes(&self) -> (u64, u64) {
        let st = self.st.lock().expect("sim lock");
        (st.refreshes, st.refused_refreshes)
    }

    /// Starts the simulator on `addr`; returns its base URL.
    pub async fn serve(self: &Arc<Self>, addr: &str) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = self.router();
        let h = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the Zalo simulator stopped");
            }
        });
        Ok((base, h))
    }

    /// Posts a webhook event signed as Zalo signs it, in the background (Zalo retries; the
    /// simulator tries three times).
    fn post_webhook(self: &Arc<Self>, mut event: Value) {
        let Some(url) = self.cfg.webhook_url.clone() else { return };
        let now = (self.clock)();
        event["app_id"] = json!(self.cfg.app_id);
        event["timestamp"] = json!(now.to_string());
        let body = event.to_string();
        let sig = schemas::zalo::event_signature(&self.cfg.app_id, &body, &now.to_string(), &self.cfg.oa_secret);
        self.st.lock().expect("sim lock").webhooks_sent += 1;
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            for attempt in 0..3u64 {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-ZEvent-Signature", &sig)
                    .header("X-ZEvent-Server", "ZNS")
                    .body(body.clone())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
            }
            tracing::warn!("the simulator's webhook was not accepted after 3 tries");
        });
    }

    /// Checks the token and the rate limit of an API call; Err is Zalo's error body.
    fn admit(&self, st: &mut St, headers: &HeaderMap, now: i64) -> Result<(), Json<Value>> {
        let minute = now.div_euclid(self.cfg.rate_window_ms.max(1));
        if st.minute.0 != minute {
            st.minute = (minute, 0);
        }
        st.minute.1 += 1;
        if st.minute.1 > self.cfg.rate_limit_per_minute {
            return Err(zalo_error(oa_error::RATE_LIMIT, "rate limit exceeded"));
        }
        let token = headers.get("access_token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        match st.access.get(token) {
            None => Err(zalo_error(oa_error::TOKEN_INVALID, "access token is invalid")),
            Some(expires) if *expires <= now => Err(zalo_error(oa_error::TOKEN_EXPIRED, "access token has expired")),
            Some(_) => Ok(()),
        }
    }
}

#[derive(Deserialize)]
struct RefreshForm {
    refresh_token: String,
    app_id: String,
    grant_type: String,
}

/// OAuth v4: a refresh token works once; the answer carries the next one.
async fn refresh(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Form(f): Form<RefreshForm>) -> Json<Value> {
    let secret = headers.get("secret_key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if secret != sim.cfg.secret_key || f.app_id != sim.cfg.app_id || f.grant_type != "refresh_token" {
        return zalo_error(oauth_error::INVALID_APP, "invalid app id, secret key or grant type");
    }
    let now = (sim.clock)();
    let mut st = sim.st.lock().expect("sim lock");
    if f.refresh_token != st.refresh {
        st.refused_refreshes += 1;
        return zalo_error(oauth_error::INVALID_REFRESH_TOKEN, "invalid refresh token");
    }
    st.issued += 1;
    st.refreshes += 1;
    let access = format!("sim-access-{}-{}", st.issued, uuid::Uuid::new_v4().simple());
    st.refresh = format!("sim-refresh-{}-{}", st.issued, uuid::Uuid::new_v4().simple());
    st.access.insert(access.clone(), now + sim.cfg.access_ttl_ms);
    Json(json!({"access_token": access, "refresh_token": st.refresh, "expires_in": (sim.cfg.access_ttl_ms / 1000).to_string()}))
}

async fn put_user(State(sim): State<Arc<Simulator>>, Json(u): Json<SimUser>) -> Json<Value> {
    let mut st = sim.st.lock().expect("sim lock");
    let mut answer = json!({"ok": true});
    if let Some(zalo_id) = u.zalo_id.clone().filter(|z| !z.is_empty()) {
        let access = format!("sim-user-{}", uuid::Uuid::new_v4().simple());
        answer["access_token"] = json!(access);
        if u.phone.is_some() {
            let code = format!("sim-phone-{}", uuid::Uuid::new_v4().simple());
            st.phone_tokens.insert(code.clone(), access.clone());
            answer["phone_token"] = json!(code);
        }
        st.app_users.insert(access, AppUser { zalo_id, name: u.name.clone(), phone: u.phone.clone() });
    }
    if !u.user_id.is_empty() {
        st.users.insert(u.user_id.clone(), u);
    }
    Json(answer)
}

/// `GET /v2.0/me?fields=…`: who an access token the simulator issued belongs to.
async fn me(State(sim): State<Arc<Simulator>>, headers: HeaderMap) -> Json<Value> {
    let token = headers.get("access_token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    match sim.st.lock().expect("sim lock").app_users.get(token) {
        Some(u) => Json(json!({"id": u.zalo_id, "name": u.name.clone().unwrap_or_default(),
            "picture": {"data": {"url": format!("https://s.zalo.sim/avatar/{}.jpg", u.zalo_id)}}})),
        None => zalo_error(zns_error::TOKEN_INVALID, "invalid access token"),
    }
}

/// Everything received, oldest first; `?since=N` skips the first N (`total` says how many there
/// are, so a poller asks for `since=total` next time).
async fn received(State(sim): State<Arc<Simulator>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let (refreshes, refused) = sim.refreshes();
    let webhooks = sim.st.lock().expect("sim lock").webhooks_sent;
    let all = sim.received();
    let total = all.len();
    let since = q.get("since").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0).min(total);
    let list: Vec<Received> = all.into_iter().skip(since).collect();
    Json(json!({"received": list, "total": total, "refreshes": refreshes, "refused_refreshes": refused, "webhooks_sent": webhooks}))
}

#[derive(Deserialize)]
struct OaEventIn {
    /// follow, unfollow, user_send_text, …
    event_name: String,
    /// The user's OA user id (UID).
    user_id: String,
    /// The user's id for the app (the Mini App's Zalo id).
    #[serde(default)]
    user_id_by_app: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// A user acts on the OA in Zalo: the simulator updates what it knows and posts the webhook.
async fn oa_event(State(sim): State<Arc<Simulator>>, Json(e): Json<OaEventIn>) -> Json<Value> {
    let now = (sim.clock)();
    {
        let mut st = sim.st.lock().expect("sim lock");
        let u = st.users.entry(e.user_id.clone()).or_insert_with(|| SimUser { user_id: e.user_id.clone(), ..SimUser::default() });
        match e.event_name.as_str() {
            "follow" => u.follows = true,
            "unfollow" => u.follows = false,
            _ => {}
        }
        if e.event_name != "unfollow" {
            u.last_interaction = Some(now);
        }
    }
    let mut event = match e.event_name.as_str() {
        "follow" | "unfollow" => {
            json!({"event_name": e.event_name, "oa_id": "sim-oa", "source": "oa_profile", "follower": {"id": e.user_id}})
        }
        _ => json!({"event_name": e.event_name, "sender": {"id": e.user_id}, "recipient": {"id": "sim-oa"},
            "message": {"text": e.text.unwrap_or_default(), "msg_id": uuid::Uuid::new_v4().simple().to_string()}}),
    };
    if let Some(by_app) = e.user_id_by_app {
        event["user_id_by_app"] = json!(by_app);
    }
    sim.post_webhook(event);
    Json(json!({"ok": true}))
}

/// The Mini App phone exchange: a phone token the simulator issued, with the access token of
/// the same user and the app secret, is that user's number; anything else is refused.
async fn phone_info(State(sim): State<Arc<Simulator>>, headers: HeaderMap) -> Json<Value> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if h("secret_key") != sim.cfg.secret_key {
        return zalo_error(zns_error::TOKEN_INVALID, "invalid secret key");
    }
    let st = sim.st.lock().expect("sim lock");
    let access = h("access_token");
    let Some(user) = st.app_users.get(&access) else {
        return zalo_error(zns_error::TOKEN_INVALID, "invalid access token");
    };
    match (st.phone_tokens.get(&h("code")), &user.phone) {
        (Some(owner), Some(n)) if *owner == access => Json(json!({"data": {"number": n}, "error": 0, "message": "Success"})),
        _ => zalo_error(oa_error::INVALID_PARAM, "invalid code"),
    }
}

async fn put_faults(State(sim): State<Arc<Simulator>>, Json(f): Json<FaultsIn>) -> Response {
    let fault = match (f.delay_ms, f.status) {
        (Some(ms), None) => Fault::Delay(Duration::from_millis(ms)),
        (None, Some(status)) if (500..=599).contains(&status) => Fault::Status(status),
        _ => return (StatusCode::BAD_REQUEST, "give delay_ms, or a 5xx status").into_response(),
    };
    sim.add_faults(fault, f.count.min(1000));
    Json(json!({"ok": true})).into_response()
}

/// A send's answer, late or replaced as the next fault says.
async fn answer(fault: Option<Fault>, ok: Json<Value>) -> Response {
    match fault {
        None => ok.into_response(),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            ok.into_response()
        }
        Some(Fault::Status(s)) => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

async fn oa_message(State(sim): State<Arc<Simulator>>, Path(kind): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    match take_oa_message(&sim, kind, &headers, body) {
        Ok((fault, ok)) => answer(fault, ok).await,
        Err(refused) => refused,
    }
}

/// An OA message judged by the rules and recorded: the answer and the fault to give it, or the
/// refusal.
fn take_oa_message(sim: &Simulator, kind: String, headers: &HeaderMap, body: Value) -> Result<(Option<Fault>, Json<Value>), Response> {
    let now = (sim.clock)();
    let mut st = sim.st.lock().expect("sim lock");
    sim.admit(&mut st, headers, now).map_err(IntoResponse::into_response)?;
    if !["cs", "transaction", "promotion", "template"].contains(&kind.as_str()) {
        return Err(zalo_error(oa_error::INVALID_PARAM, "unknown message type").into_response());
    }
    let Some(to) = body["recipient"]["user_id"].as_str().or(body["user_id"].as_str()).map(str::to_string) else {
        return Err(zalo_error(oa_error::INVALID_PARAM, "recipient.user_id is required").into_response());
    };
    let user = st.users.get(&to).cloned().unwrap_or_default();
    let promotional = kind == "promotion" || kind == "template";
    let error = if !user.follows {
        oa_error::NOT_FOLLOWER
    } else if user.last_interaction.is_none_or(|t| now - t > UID_WINDOW_MS) {
        oa_error::NO_INTERACTION_7_DAYS
    } else if promotional && is_night(now) {
        oa_error::NIGHT
    } else if promotional && {
        let sent: Vec<i64> = st
            .received
            .iter()
            .filter(|r| r.to == to && r.error == 0 && (r.kind == "promotion" || r.kind == "template"))
            .map(|r| r.at)
            .collect();
        sent.iter().filter(|t| vn_month(**t) == vn_month(now)).count() as u32 >= sim.cfg.package.monthly_promotions()
            || sent.iter().filter(|t| vn_day(**t) == vn_day(now)).count() as u32 >= PROMOTIONS_PER_DAY
    } {
        oa_error::OUT_OF_QUOTA
    } else {
        0
    };
    st.received.push(Received { at: now, kind, to: to.clone(), body, error });
    if error != 0 {
        return Err(zalo_error(error, "refused by the simulator's rules").into_response());
    }
    let fault = st.faults.pop_front();
    let id = uuid::Uuid::new_v4().simple().to_string();
    Ok((fault, Json(json!({"data": {"message_id": id, "user_id": to, "sent_time": now.to_string()}, "error": 0, "message": "Success"}))))
}

async fn zns(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    match take_zns(&sim, &headers, body) {
        Ok((fault, ok)) => answer(fault, ok).await,
        Err(refused) => refused,
    }
}

/// A ZNS message judged and recorded, its delivery webhook on its way: as [`take_oa_message`].
fn take_zns(sim: &Arc<Simulator>, headers: &HeaderMap, body: Value) -> Result<(Option<Fault>, Json<Value>), Response> {
    let now = (sim.clock)();
    let mut st = sim.st.lock().expect("sim lock");
    sim.admit(&mut st, headers, now).map_err(IntoResponse::into_response)?;
    let hashed = body["hash_phone"].as_str();
    let phone = hashed.or(body["phone"].as_str()).unwrap_or_default().to_string();
    let phone_ok = match hashed {
        Some(h) => h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => phone.starts_with("84") && (11..=12).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit()),
    };
    let error = if !phone_ok {
        zns_error::PHONE_INVALID
    } else if body["template_id"].as_str().is_none_or(str::is_empty) {
        zns_error::TEMPLATE_INVALID
    } else if body["tracking_id"].as_str().is_none_or(|t| t.is_empty() || t.len() > 48) {
        oa_error::INVALID_PARAM
    } else {
        0
    };
    let tracking = body["tracking_id"].as_str().unwrap_or_default().to_string();
    st.received.push(Received { at: now, kind: "zns".into(), to: phone.clone(), body, error });
    if error != 0 {
        return Err(zalo_error(error, "refused by the simulator's rules").into_response());
    }
    let fault = st.faults.pop_front();
    drop(st);
    let id = uuid::Uuid::new_v4().simple().to_string();
    sim.post_webhook(json!({"event_name": "user_received_message", "sender": {"id": "sim-oa"}, "recipient": {"id": phone},
        "message": {"delivery_time": now.to_string(), "msg_id": id, "tracking_id": tracking}}));
    Ok((
        fault,
        Json(json!({"error": 0, "message": "Success", "data": {"msg_id": id, "sent_time": now.to_string(), "sending_mode": "1",
            "quota": {"dailyQuota": "500", "remainingQuota": "499"}}})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::time::DAY_MS;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// 2026-11-23T10:00:00+07:00.
    const TEN_AM: i64 = 1_795_402_800_000;

    async fn start(cfg: SimConfig, now: Arc<AtomicI64>) -> (String, tokio::task::JoinHandle<()>) {
        let clock: Clock = Arc::new(move || now.load(Ordering::SeqCst));
        let sim = Simulator::new(cfg, clock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = tokio::spawn(async move { axum::serve(listener, sim.router()).await.unwrap() });
        (format!("http://{addr}"), h)
    }

    async fn refresh(c: &reqwest::Client, base: &str, token: &str) -> Value {
        c.post(format!("{base}/v4/oa/access_token"))
            .header("secret_key", "sim-secret")
            .form(&[("refresh_token", token), ("app_id", "sim-app"), ("grant_type", "refresh_token")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_work_once() {
        let (base, _h) = start(SimConfig::default(), Arc::new(AtomicI64::new(TEN_AM))).await;
        let c = reqwest::Client::new();
        let first = refresh(&c, &base, "sim-refresh-0").await;
        assert_eq!(first["expires_in"], "90000");
        let next = first["refresh_token"].as_str().unwrap().to_string();
        // The used one is dead; the new one works once.
        assert_ne!(refresh(&c, &base, "sim-refresh-0").await["error"], json!(null));
        assert!(refresh(&c, &base, &next).await["access_token"].is_string());
        assert!(refresh(&c, &base, &next).await["error"].as_i64().is_some_and(|e| e < 0));
    }

    #[tokio::test]
    async fn oa_messages_follow_followers_windows_quota_and_night() {
        let now = Arc::new(AtomicI64::new(TEN_AM));
        let (base, _h) = start(SimConfig::default(), now.clone()).await;
        let c = reqwest::Client::new();
        let token = refresh(&c, &base, "sim-refresh-0").await["access_token"].as_str().unwrap().to_string();
        for (id, follows, last) in
            [("u1", true, Some(TEN_AM - 3_600_000)), ("u2", false, Some(TEN_AM)), ("u3", true, Some(TEN_AM - 8 * DAY_MS))]
        {
            c.post(format!("{base}/sim/users"))
                .json(&json!({"user_id": id, "follows": follows, "last_interaction": last}))
                .send()
                .await
                .unwrap();
        }
        let send = |kind: &'static str, to: &'static str, token: String| {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let r: Value = c
                    .post(format!("{base}/v3.0/oa/message/{kind}"))
                    .header("access_token", token)
                    .json(&json!({"recipient": {"user_id": to}, "message": {"text": "hi"}}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                r["error"].as_i64().unwrap()
            }
        };
        assert_eq!(send("cs", "u1", "nope".into()).await, oa_error::TOKEN_INVALID);
        assert_eq!(send("cs", "u1", token.clone()).await, 0);
        assert_eq!(send("cs", "u2", token.clone()).await, oa_error::NOT_FOLLOWER);
        assert_eq!(send("cs", "u3", token.clone()).await, oa_error::NO_INTERACTION_7_DAYS);
        // Basic package: one promotion a month (and one a day).
        assert_eq!(send("promotion", "u1", token.clone()).await, 0);
        now.store(TEN_AM + 5 * 3600_000, Ordering::SeqCst);
        assert_eq!(send("promotion", "u1", token.clone()).await, oa_error::OUT_OF_QUOTA);
        // 23:00: night.
        now.store(TEN_AM + 13 * 3600_000, Ordering::SeqCst);
        assert_eq!(send("promotion", "u1", token.clone()).await, oa_error::NIGHT);
        // After 25 h the token has expired.
        now.store(TEN_AM + 26 * 3600_000, Ordering::SeqCst);
        assert_eq!(send("cs", "u1", token).await, oa_error::TOKEN_EXPIRED);
        let got: Value = c.get(format!("{base}/sim/received")).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["received"].as_array().unwrap().len(), 6, "every admitted request is listed with its outcome");
    }

    #[tokio::test]
    async fn zns_checks_phone_template_and_tracking_id_and_the_rate_limit() {
        let cfg = SimConfig { rate_limit_per_minute: 4, ..SimConfig::default() };
        let (base, _h) = start(cfg, Arc::new(AtomicI64::new(TEN_AM))).await;
        let c = reqwest::Client::new();
        let token = refresh(&c, &base, "sim-refresh-0").await["access_token"].as_str().unwrap().to_string();
        let zns = |body: Value| {
            let (c, base, token) = (c.clone(), base.clone(), token.clone());
            async move {
                let r: Value = c
                    .post(format!("{base}/message/template"))
                    .header("access_token", token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                r["error"].as_i64().unwrap()
            }
        };
        let ok = json!({"phone": "84901234567", "template_id": "t1", "template_data": {}, "tracking_id": "trig-1"});
        assert_eq!(zns(ok.clone()).await, 0);
        assert_eq!(zns(json!({"phone": "0901234567", "template_id": "t1", "tracking_id": "x"})).await, zns_error::PHONE_INVALID);
        assert_eq!(zns(json!({"phone": "84901234567", "template_id": "", "tracking_id": "x"})).await, zns_error::TEMPLATE_INVALID);
        assert_eq!(zns(ok.clone()).await, 0);
        // The fifth call in the same minute is over the limit of 4.
        assert_eq!(zns(ok).await, oa_error::RATE_LIMIT);
    }
}
