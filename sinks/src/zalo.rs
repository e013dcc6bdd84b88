//! Zalo's HTTP APIs as zalo-api.md describes them: OA Open API v3 messages (consultation,
//! transaction, promotion, template), ZNS template messages by phone or hashed phone, the OAuth v4
//! token refresh with its rotating single-use refresh token, and the Graph phone exchange.
//!
//! - Errors come in HTTP-200 bodies (`{"error": -213, "message": …}`); they become [`ZaloError::Api`].
//! - The access token goes in the `access_token` header, with `appsecret_proof`.
//! - [`TokenStore`]: one refresh at a time, before the access token expires; the new refresh
//!   token is written to disk (temp file, fsync, rename, fsync dir) before the new access token is
//!   used, so a crash never loses the only valid refresh token.
//! - [`RateLimiter`]: never more than N requests in any window (Zalo: 4,000 a minute per app).
//! - Retries with backoff only when nothing can have been sent: -32 and HTTP 429 (rate limit), a
//!   connection that could not be made. A time-out, a cut connection or a 5xx may follow a
//!   delivered message: never retried ([`ZaloError::may_have_been_delivered`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, register_histogram_vec, register_int_counter, register_int_counter_vec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Clock;
use crate::zalo_rules::{oa_error, zns_error};

struct ZaloMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    refreshes: IntCounter,
    rate_waits: IntCounter,
}

static METRICS: LazyLock<ZaloMetrics> = LazyLock::new(|| ZaloMetrics {
    requests: register_int_counter_vec!(
        "zcdp_zalo_requests_total",
        "Requests to Zalo, by API and outcome (ok or Zalo's error code)",
        &["api", "outcome"]
    )
    .expect("metric"),
    seconds: register_histogram_vec!("zcdp_zalo_request_seconds", "Latency of requests to Zalo", &["api"]).expect("metric"),
    refreshes: register_int_counter!("zcdp_zalo_token_refreshes_total", "Access-token refreshes").expect("metric"),
    rate_waits: register_int_counter!("zcdp_zalo_rate_limit_waits_total", "Requests held back to stay under Zalo's rate limit")
        .expect("metric"),
});

/// Why a call to Zalo did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZaloError {
    /// Zalo answered with an error code (in an HTTP-200 body).
    #[error("Zalo error {code}: {message}")]
    Api { code: i64, message: String },
    /// An HTTP status other than 200.
    #[error("HTTP {0} from Zalo")]
    Http(u16),
    /// No connection could be made (refused, no route, DNS): the request never left.
    #[error("Zalo unreachable: {0}")]
    Transport(String),
    /// The request was sent, or may have been, but no answer came back that could be read:
    /// a time-out, a connection cut after the request was written, an unreadable body. Zalo may
    /// have delivered (and billed) the message.
    #[error("no answer from Zalo: {0}")]
    NoAnswer(String),
    /// No valid token could be had (refresh refused, no refresh token).
    #[error("Zalo token: {0}")]
    Token(String),
    /// The token file cannot be written: a rotated refresh token would be lost at the next
    /// restart (Zalo's refresh tokens are single-use). The sink stops on it.
    #[error("Zalo token file: {0}")]
    TokenFile(String),
}

impl ZaloError {
    /// Refused before anything was sent, and worth trying again after a pause: Zalo's rate limit
    /// (-32, HTTP 429), or no connection at all. Only these are retried: a send is never
    /// repeated when Zalo may have acted on it.
    pub fn safe_to_retry(&self) -> bool {
        match self {
            ZaloError::Api { code, .. } => *code == oa_error::RATE_LIMIT,
            ZaloError::Http(s) => *s == 429,
            ZaloError::Transport(_) => true,
            ZaloError::NoAnswer(_) | ZaloError::Token(_) | ZaloError::TokenFile(_) => false,
        }
    }

    /// Whether Zalo may have acted on the request although it did not say so: no answer, or a
    /// server error (5xx) that may come after the message was accepted. A send that ends so is
    /// recorded `unknown`, never sent again.
    pub fn may_have_been_delivered(&self) -> bool {
        match self {
            ZaloError::NoAnswer(_) => true,
            ZaloError::Http(s) => *s >= 500,
            ZaloError::Api { .. } | ZaloError::Transport(_) | ZaloError::Token(_) | ZaloError::TokenFile(_) => false,
        }
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            ZaloError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn token_rejected(&self) -> bool {
        matches!(self.code(), Some(oa_error::TOKEN_INVALID | oa_error::TOKEN_EXPIRED | zns_error::TOKEN_INVALID))
    }
}

/// Never more than `limit` requests in any `window`, whichever task asks.
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    /// Kept between two requests' start times so server-side clocks and delays never count one
    /// request into the wrong window.
    margin: Duration,
    starts: std::sync::Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter { limit: limit.max(1) as usize, window, margin: window / 30, starts: Default::default() }
    }

    /// Waits until one more request fits, and counts it.
    pub async fn acquire(&self) {
        let mut waited = false;
        loop {
            let wait = {
                let mut starts = self.starts.lock().expect("limiter lock");
                let now = Instant::now();
                while starts.front().is_some_and(|t| now.duration_since(*t) >= self.window + self.margin) {
                    starts.pop_front();
                }
                if starts.len() < self.limit {
                    starts.push_back(now);
                    return;
                }
                (starts[0] + self.window + self.margin).saturating_duration_since(now)
            };
            if !waited {
                METRICS.rate_waits.inc();
                waited = true;
            }
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: Option<String>,
    /// Epoch ms.
    access_expires_at: i64,
    refresh_token: String,
}

impl Tokens {
    /// Writes them to the token file ([`write_atomically`]).
    fn keep(&self, path: &Path) -> anyhow::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self).expect("tokens serialise"))
    }
}

/// The OA's tokens, refreshed before expiry, persisted atomically.
pub struct TokenStore {
    path: PathBuf,
    tokens: Mutex<Tokens>,
    oauth_url: String,
    app_id: String,
    app_secret: String,
    http: reqwest::Client,
    clock: Clock,
    /// Refresh when less than this is left.
    pub margin_ms: i64,
}

impl TokenStore {
    /// Loads the token file, or starts from `initial_refresh` when there is none.
    pub fn open(
        path: &Path,
        initial_refresh: Option<&str>,
        oauth_url: &str,
        app_id: &str,
        app_secret: &str,
        http: reqwest::Client,
        clock: Clock,
    ) -> anyhow::Result<TokenStore> {
        let tokens = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Tokens>(&bytes).with_context(|| format!("reading the token file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tokens {
                access_token: None,
                access_expires_at: 0,
                refresh_token: initial_refresh
                    .filter(|t| !t.is_empty())
                    .with_context(|| format!("no Zalo token file at {} and no --zalo-refresh-token to start from", path.display()))?
                    .to_string(),
            },
            Err(e) => return Err(e).with_context(|| format!("reading the token file {}", path.display())),
        };
        // Written now: the sink must be able to keep a rotated refresh token before it uses one.
        tokens.keep(path).with_context(|| {
            format!(
                "cannot write the Zalo token file {} (the sink keeps the rotated refresh token there; give a writable --zalo-token-file)",
                path.display()
            )
        })?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            tokens: Mutex::new(tokens),
            oauth_url: oauth_url.trim_end_matches('/').to_string(),
            app_id: app_id.to_string(),
            app_secret: app_secret.to_string(),
            http,
            clock,
            margin_ms: 10 * 60 * 1000,
        })
    }

    /// A valid access token: the current one, or a new one when it expires within the margin (or
    /// `stale` is the one Zalo just refused). Refreshes are serialised: concurrent callers wait
    /// for the one refresh and share its result, so each refresh token is used once.
    pub async fn access_token(&self, stale: Option<&str>) -> Result<String, ZaloError> {
        let mut t = self.tokens.lock().await;
        let now = (self.clock)();
        if let Some(a) = &t.access_token
            && t.access_expires_at - self.margin_ms > now
            && stale != Some(a.as_str())
        {
            return Ok(a.clone());
        }
        // The refresh kills the refresh token held: first make sure its successor can be kept.
        t.keep(&self.path).map_err(|e| {
            ZaloError::TokenFile(format!(
                "cannot write {}: {e:#}; not refreshing (the current refresh token still works)",
                self.path.display()
            ))
        })?;
        let started = std::time::Instant::now();
        let answer = self
            .http
            .post(format!("{}/v4/oa/access_token", self.oauth_url))
            .header("secret_key", &self.app_secret)
            .form(&[("refresh_token", t.refresh_token.as_str()), ("app_id", self.app_id.as_str()), ("grant_type", "refresh_token")])
            .send()
            .await;
        // Nothing was sent yet: whatever went wrong with the refresh, the message was not.
        let body = read_answer("oauth", answer, started).await.map_err(|e| match e {
            ZaloError::Api { .. } | ZaloError::Token(_) | ZaloError::TokenFile(_) => e,
            other => ZaloError::Token(format!("refreshing the access token: {other}")),
        })?;
        let (Some(access), Some(refresh)) = (body["access_token"].as_str(), body["refresh_token"].as_str()) else {
            return Err(ZaloError::Token(format!(
                "the refresh was refused ({}); authorise the OA again and set --zalo-refresh-token",
                body["message"]
            )));
        };
        // `expires_in` is a string of seconds ("90000"); accept a number too.
        let expires_s = body["expires_in"].as_str().and_then(|s| s.parse::<i64>().ok()).or(body["expires_in"].as_i64()).unwrap_or(3600);
        let next = Tokens {
            access_token: Some(access.to_string()),
            access_expires_at: now + expires_s * 1000,
            refresh_token: refresh.to_string(),
        };
        METRICS.refreshes.inc();
        // The old refresh token is dead now: the new one must reach the disk before anything else.
        let kept = next.keep(&self.path);
        *t = next;
        kept.map_err(|e| {
            ZaloError::TokenFile(format!(
                "could not keep the rotated refresh token in {}: {e:#}; it lives only in this process now: fix the file and authorise the OA again (--zalo-refresh-token) if the sink stops",
                self.path.display()
            ))
        })?;
        Ok(access.to_string())
    }

    /// The refresh token currently held (tests and operators' checks).
    pub async fn refresh_token(&self) -> String {
        self.tokens.lock().await.refresh_token.clone()
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a temp
/// file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("tokens")));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

async fn read_answer(api: &str, answer: reqwest::Result<reqwest::Response>, started: std::time::Instant) -> Result<Value, ZaloError> {
    METRICS.seconds.with_label_values(&[api]).observe(started.elapsed().as_secs_f64());
    let outcome = |o: &str| METRICS.requests.with_label_values(&[api, o]).inc();
    let resp = match answer {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            outcome("unreachable");
            return Err(ZaloError::Transport(e.without_url().to_string()));
        }
        Err(e) => {
            outcome(if e.is_timeout() { "timeout" } else { "no_answer" });
            return Err(ZaloError::NoAnswer(e.without_url().to_string()));
        }
    };
    let status = resp.status();
    if !status.is_success() {
        outcome(status.as_str());
        return Err(ZaloError::Http(status.as_u16()));
    }
    let body: Value = match resp.json().await {
        Ok(b) => b,
        Err(e) => {
            outcome("bad_body");
            return Err(ZaloError::NoAnswer(format!("unreadable answer: {}", e.without_url())));
        }
    };
    match body["error"].as_i64() {
        Some(code) if code != 0 => {
            outcome(&code.to_string());
            Err(ZaloError::Api { code, message: body["message"].as_str().unwrap_or_default().to_string() })
        }
        _ => {
            outcome("ok");
            Ok(body)
        }
    }
}

/// The OA message kinds of Open API v3 (`/v3.0/oa/message/{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaKind {
    Consultation,
    Transaction,
    Promotion,
    Template,
}

impl OaKind {
    pub fn path(self) -> &'static str {
        match self {
            OaKind::Consultation => "/v3.0/oa/message/cs",
            OaKind::Transaction => "/v3.0/oa/message/transaction",
            OaKind::Promotion => "/v3.0/oa/message/promotion",
            OaKind::Template => "/v3.0/oa/message/template",
        }
    }
}

/// What a campaign sends, before it is shaped for an API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    pub title: Option<String>,
    pub text: String,
    pub button: Option<(String, String)>,
    pub template_id: Option<String>,
    pub template_data: serde_json::Map<String, Value>,
    /// Transaction messages: rows of the table element.
    pub table: Vec<(String, String)>,
}

/// Consultation text is at most 2,000 characters. [SDK]
pub const MAX_TEXT_CHARS: usize = 2000;

/// The JSON body of an OA v3 message to `user_id`.
pub fn oa_body(kind: OaKind, user_id: &str, c: &Content) -> Value {
    let text: String = c.text.chars().take(MAX_TEXT_CHARS).collect();
    let buttons = || -> Vec<Value> {
        c.button.iter().map(|(title, url)| json!({"title": title, "type": "oa.open.url", "payload": {"url": url}})).collect()
    };
    let header = c.title.clone().unwrap_or_default();
    match kind {
        OaKind::Consultation => json!({"recipient": {"user_id": user_id}, "message": {"text": text}}),
        OaKind::Transaction => {
            let table: Vec<Value> = c.table.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            let mut elements = vec![
                json!({"type": "header", "content": header, "align": "left"}),
                json!({"type": "text", "content": text, "align": "left"}),
            ];
            if !table.is_empty() {
                elements.push(json!({"type": "table", "content": table}));
            }
            json!({"recipient": {"user_id": user_id}, "message": {"attachment": {"type": "template", "payload": {
                "template_type": "transaction_order", "language": "VI", "elements": elements, "buttons": buttons()}}}})
        }
        OaKind::Promotion => json!({"recipient": {"user_id": user_id}, "message": {"attachment": {"type": "template", "payload": {
            "template_type": "promotion", "language": "VI",
            "elements": [{"type": "header", "content": header}, {"type": "text", "content": text, "align": "left"}],
            "buttons": buttons()}}}}),
        // The 2026 replacement of UID promotions; its exact shape is UNCONFIRMED (zalo-api.md).
        OaKind::Template => json!({"user_id": user_id, "template_id": c.template_id.clone().unwrap_or_default(),
            "template_data": c.template_data}),
    }
}

/// The JSON body of a ZNS template message to a phone (84…) or, with `hashed`, to the sha256 of
/// it. `tracking_id` (≤ 48 chars) comes back in the delivery webhook.
pub fn zns_body(phone_or_hash: &str, hashed: bool, c: &Content, tracking_id: &str, development: bool) -> Value {
    let mut b = json!({"template_id": c.template_id.clone().unwrap_or_default(), "template_data": c.template_data,
        "tracking_id": tracking_id});
    b[if hashed { "hash_phone" } else { "phone" }] = json!(phone_or_hash);
    if development {
        b["mode"] = json!("development");
    }
    b
}

/// A message Zalo accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: String,
}

/// The client of one Zalo app / OA.
pub struct ZaloClient {
    http: reqwest::Client,
    oa_url: String,
    zns_url: String,
    graph_url: String,
    app_secret: String,
    pub tokens: Arc<TokenStore>,
    limiter: RateLimiter,
    /// The zcdp app whose OA this is (`--zalo-cdp-app`): only its triggers are sent through it.
    pub cdp_app: String,
    /// Attempts for a transient error (1 = no retry).
    pub attempts: u32,
    pub backoff: Duration,
}

pub struct ClientConfig<'a> {
    pub args: &'a schemas::zalo::ZaloArgs,
    pub clock: Clock,
    /// The rate limit's window (a minute for Zalo; shorter in tests).
    pub rate_window: Duration,
    pub timeout: Duration,
}

impl ZaloClient {
    pub fn new(cfg: ClientConfig<'_>) -> anyhow::Result<ZaloClient> {
        let a = cfg.args;
        let app_id = a.app_id.as_deref().context("--zalo-app-id is needed to send")?;
        let app_secret = a.app_secret.as_deref().context("--zalo-app-secret is needed to send")?;
        let http = reqwest::Client::builder().timeout(cfg.timeout).build()?;
        let tokens =
            TokenStore::open(&a.token_file, a.refresh_token.as_deref(), &a.oauth_url, app_id, app_secret, http.clone(), cfg.clock)?;
        Ok(ZaloClient {
            http,
            oa_url: a.oa_url.trim_end_matches('/').into(),
            zns_url: a.zns_url.trim_end_matches('/').into(),
            graph_url: a.graph_url.trim_end_matches('/').into(),
            app_secret: app_secret.into(),
            tokens: Arc::new(tokens),
            limiter: RateLimiter::new(a.rate_limit, cfg.rate_window),
            cdp_app: a.cdp_app.clone(),
            attempts: 4,
            backoff: Duration::from_millis(200),
        })
    }

    /// appsecret_proof: hex HMAC-SHA256 of the access token keyed by the app secret. [SDK]
    fn proof(&self, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.app_secret.as_bytes()).expect("HMAC takes any key");
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// POSTs `body` with the access token, within the rate limit; a refused token is refreshed
    /// once; errors that prove nothing was sent ([`ZaloError::safe_to_retry`]) are retried with
    /// exponential backoff. Nothing else is: a time-out or a 5xx may follow a delivered message.
    async fn post(&self, api: &str, url: &str, body: &Value) -> Result<Value, ZaloError> {
        let mut stale: Option<String> = None;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.tokens.access_token(stale.as_deref()).await?;
            self.limiter.acquire().await;
            let started = std::time::Instant::now();
            let answer =
                self.http.post(url).header("access_token", &token).header("appsecret_proof", self.proof(&token)).json(body).send().await;
            match read_answer(api, answer, started).await {
                Ok(v) => return Ok(v),
                Err(e) if e.token_rejected() && !refreshed => {
                    refreshed = true;
                    stale = Some(token);
                }
                Err(e) if e.safe_to_retry() && attempt < self.attempts => {
                    let pause = self.backoff * 2u32.pow(attempt - 1);
                    tracing::debug!(api, error = %e, ?pause, "transient Zalo error; retrying");
                    tokio::time::sleep(pause.min(Duration::from_secs(10))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn send_oa(&self, kind: OaKind, user_id: &str, content: &Content) -> Result<Accepted, ZaloError> {
        let body = oa_body(kind, user_id, content);
        let v = self.post("oa", &format!("{}{}", self.oa_url, kind.path()), &body).await?;
        Ok(Accepted { message_id: v["data"]["message_id"].as_str().unwrap_or_default().to_string() })
    }

    pub async fn send_zns(&self, phone: &str, content: &Content, tracking_id: &str) -> Result<Accepted, ZaloError> {
        let v =
            self.post("zns", &format!("{}/message/template", self.zns_url), &zns_body(phone, false, content, tracking_id, false)).await?;
        Ok(Accepted { message_id: v["data"]["msg_id"].as_str().unwrap_or_default().to_string() })
    }

    /// ZNS to the SHA-256 (hex) of the 84… phone, for shops that keep no phone numbers.
    pub async fn send_zns_hashed(&self, phone_sha256: &str, content: &Content, tracking_id: &str) -> Result<Accepted, ZaloError> {
        let body = zns_body(phone_sha256, true, content, tracking_id, false);
        let v = self.post("zns", &format!("{}/message/template/hashphone", self.zns_url), &body).await?;
        Ok(Accepted { message_id: v["data"]["msg_id"].as_str().unwrap_or_default().to_string() })
    }

    /// The graph base URL (for the gateway's phone exchange, which has no OA token).
    pub fn graph_url(&self) -> &str {
        &self.graph_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limiter_never_admits_more_than_the_limit_in_a_window() {
        let l = Arc::new(RateLimiter::new(5, Duration::from_millis(300)));
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..12 {
            let l = l.clone();
            handles.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut times: Vec<Instant> = Vec::new();
        for h in handles {
            times.push(h.await.unwrap());
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().filter(|u| u.duration_since(*t) < Duration::from_millis(300)).count();
            assert!(in_window <= 5, "{in_window} requests within one window");
        }
        assert!(times[11].duration_since(t0) >= Duration::from_millis(600), "12 requests at 5 a window need three windows");
    }

    #[test]
    fn bodies_follow_the_documented_shapes() {
        let c = Content { text: "x".repeat(2100), title: Some("T".into()), ..Content::default() };
        let cs = oa_body(OaKind::Consultation, "u1", &c);
        assert_eq!(cs["recipient"]["user_id"], "u1");
        assert_eq!(cs["message"]["text"].as_str().unwrap().chars().count(), MAX_TEXT_CHARS);
        let promo = oa_body(OaKind::Promotion, "u1", &c);
        assert_eq!(promo["message"]["attachment"]["payload"]["template_type"], "promotion");
        let zns = zns_body("84901234567", false, &Content { template_id: Some("t".into()), ..c.clone() }, "trk", false);
        assert_eq!(
            (zns["phone"].as_str(), zns["template_id"].as_str(), zns["tracking_id"].as_str()),
            (Some("84901234567"), Some("t"), Some("trk"))
        );
        assert!(zns_body("ab", true, &c, "trk", false)["hash_phone"].is_string());
    }

    #[test]
    fn only_errors_that_prove_nothing_was_sent_are_retried() {
        assert!(ZaloError::Api { code: -32, message: String::new() }.safe_to_retry());
        assert!(!ZaloError::Api { code: -213, message: String::new() }.safe_to_retry());
        assert!(ZaloError::Http(429).safe_to_retry());
        assert!(!ZaloError::Http(503).safe_to_retry() && ZaloError::Http(503).may_have_been_delivered());
        assert!(!ZaloError::Http(400).safe_to_retry() && !ZaloError::Http(400).may_have_been_delivered());
        assert!(ZaloError::Transport("connection refused".into()).safe_to_retry());
        assert!(!ZaloError::NoAnswer("timeout".into()).safe_to_retry() && ZaloError::NoAnswer("timeout".into()).may_have_been_delivered());
    }
}
