//! What two roles must agree on about Zalo: the app's credentials and base URLs (one set of
//! flags, taken by the gateway for webhooks and the phone exchange, and by the sink for sending),
//! how Zalo signs the events it posts to a webhook, and the Graph API's phone exchange.

use std::path::PathBuf;

use anyhow::Context as _;

use sha2::{Digest, Sha256};

/// The Zalo app and OA zcdp acts for. Without `--zalo-app-id`, `zcdp up` runs the Zalo
/// simulator in-process and points everything at it.
#[derive(clap::Args, Debug, Clone)]
pub struct ZaloArgs {
    /// Zalo app id (developers.zalo.me). Given: real Zalo (or the server the URLs name).
    #[arg(id = "zalo_app_id", long = "zalo-app-id", env = "ZCDP_ZALO_APP_ID")]
    pub app_id: Option<String>,
    /// The app's secret key: the `secret_key` header of token refreshes and the phone exchange.
    #[arg(id = "zalo_app_secret", long = "zalo-app-secret", env = "ZCDP_ZALO_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// The OA secret key that signs webhook events (X-ZEvent-Signature).
    #[arg(id = "zalo_oa_secret", long = "zalo-oa-secret", env = "ZCDP_ZALO_OA_SECRET", hide_env_values = true)]
    pub oa_secret: Option<String>,
    /// The first refresh token (from the OA authorisation). Used only while --zalo-token-file
    /// does not exist; after that the file holds the current, rotated one.
    #[arg(id = "zalo_refresh_token", long = "zalo-refresh-token", env = "ZCDP_ZALO_REFRESH_TOKEN", hide_env_values = true)]
    pub refresh_token: Option<String>,
    /// Where the current access and refresh tokens are kept (replaced atomically on each refresh).
    #[arg(id = "zalo_token_file", long = "zalo-token-file", env = "ZCDP_ZALO_TOKEN_FILE", default_value = "./data/zalo-tokens.json")]
    pub token_file: PathBuf,
    /// The zcdp app (write-key app id) that Zalo's webhook events are recorded under.
    #[arg(id = "zalo_cdp_app", long = "zalo-cdp-app", env = "ZCDP_ZALO_CDP_APP", default_value = "demo")]
    pub cdp_app: String,
    /// OA Open API base URL.
    #[arg(id = "zalo_oa_url", long = "zalo-oa-url", env = "ZCDP_ZALO_OA_URL", default_value = "https://openapi.zalo.me")]
    pub oa_url: String,
    /// ZNS (ZBS template message) base URL.
    #[arg(id = "zalo_zns_url", long = "zalo-zns-url", env = "ZCDP_ZALO_ZNS_URL", default_value = "https://business.openapi.zalo.me")]
    pub zns_url: String,
    /// OAuth base URL (token refresh).
    #[arg(id = "zalo_oauth_url", long = "zalo-oauth-url", env = "ZCDP_ZALO_OAUTH_URL", default_value = "https://oauth.zaloapp.com")]
    pub oauth_url: String,
    /// Graph API base URL (the Mini App phone-token exchange).
    #[arg(id = "zalo_graph_url", long = "zalo-graph-url", env = "ZCDP_ZALO_GRAPH_URL", default_value = "https://graph.zalo.me")]
    pub graph_url: String,
    /// Requests a minute the app may make to Zalo (Zalo's limit is 4,000 a minute per app).
    #[arg(id = "zalo_rate_limit", long = "zalo-rate-limit", env = "ZCDP_ZALO_RATE_LIMIT", default_value_t = 4000)]
    pub rate_limit: u32,
    /// Several zcdp apps, each with its own Zalo app and OA: a TOML file with one `[apps.<zcdp
    /// app>]` table each (docs/messaging.md). Given, it replaces the single app of the other
    /// --zalo-* flags, whose URLs, rate limit and token file directory are its defaults.
    #[arg(id = "zalo_apps_file", long = "zalo-apps-file", env = "ZCDP_ZALO_APPS_FILE")]
    pub apps_file: Option<PathBuf>,
}

/// One zcdp app's Zalo app in a `--zalo-apps-file`; what is left out comes from the flags.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    app_id: String,
    app_secret: String,
    oa_secret: Option<String>,
    refresh_token: Option<String>,
    token_file: Option<PathBuf>,
    oa_url: Option<String>,
    zns_url: Option<String>,
    oauth_url: Option<String>,
    graph_url: Option<String>,
    rate_limit: Option<u32>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: std::collections::BTreeMap<String, AppEntry>,
}

impl Default for ZaloArgs {
    fn default() -> Self {
        ZaloArgs {
            app_id: None,
            app_secret: None,
            oa_secret: None,
            refresh_token: None,
            token_file: PathBuf::from("./data/zalo-tokens.json"),
            cdp_app: "demo".into(),
            oa_url: "https://openapi.zalo.me".into(),
            zns_url: "https://business.openapi.zalo.me".into(),
            oauth_url: "https://oauth.zaloapp.com".into(),
            graph_url: "https://graph.zalo.me".into(),
            rate_limit: 4000,
            apps_file: None,
        }
    }
}

impl ZaloArgs {
    /// Whether an app is configured (else webhooks and the phone exchange are off).
    pub fn configured(&self) -> bool {
        self.app_id.is_some() || self.apps_file.is_some()
    }

    /// Every zcdp app with a Zalo app of its own, each as the flags of that one app
    /// (`cdp_app` its zcdp app): from `--zalo-apps-file`, else the flags' app when one is given,
    /// else none. Two zcdp apps may not share a Zalo app: a webhook names the Zalo app, and must
    /// name one zcdp app.
    pub fn apps(&self) -> anyhow::Result<Vec<ZaloArgs>> {
        let Some(path) = &self.apps_file else {
            return Ok(if self.app_id.is_some() { vec![self.clone()] } else { Vec::new() });
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading --zalo-apps-file {}", path.display()))?;
        let file: AppsFile = toml::from_str(&text).with_context(|| format!("--zalo-apps-file {}", path.display()))?;
        if file.apps.is_empty() {
            anyhow::bail!("--zalo-apps-file {}: no [apps.<zcdp app>] table", path.display());
        }
        let dir = self.token_file.parent().map(PathBuf::from).unwrap_or_default();
        let mut out: Vec<ZaloArgs> = Vec::new();
        for (cdp_app, e) in file.apps {
            let bad = |what: &str| anyhow::anyhow!("--zalo-apps-file {}: [apps.{cdp_app}] {what}", path.display());
            if cdp_app.is_empty() || cdp_app.contains(['/', '\u{1f}']) || cdp_app.chars().any(char::is_whitespace) {
                return Err(bad("is not a zcdp app id (no '/', spaces or control characters)"));
            }
            if e.app_id.trim().is_empty() || e.app_secret.trim().is_empty() {
                return Err(bad("needs app_id and app_secret"));
            }
            if let Some(other) = out.iter().find(|o| o.app_id.as_deref() == Some(e.app_id.as_str())) {
                return Err(bad(&format!("has the Zalo app_id of [apps.{}]: each zcdp app needs its own Zalo app", other.cdp_app)));
            }
            out.push(ZaloArgs {
                app_id: Some(e.app_id),
                app_secret: Some(e.app_secret),
                oa_secret: e.oa_secret,
                refresh_token: e.refresh_token,
                token_file: e.token_file.unwrap_or_else(|| dir.join(format!("zalo-tokens-{cdp_app}.json"))),
                oa_url: e.oa_url.unwrap_or_else(|| self.oa_url.clone()),
                zns_url: e.zns_url.unwrap_or_else(|| self.zns_url.clone()),
                oauth_url: e.oauth_url.unwrap_or_else(|| self.oauth_url.clone()),
                graph_url: e.graph_url.unwrap_or_else(|| self.graph_url.clone()),
                rate_limit: e.rate_limit.unwrap_or(self.rate_limit),
                apps_file: None,
                cdp_app,
            });
        }
        let mut files: Vec<&PathBuf> = out.iter().map(|a| &a.token_file).collect();
        files.sort();
        if files.windows(2).any(|w| w[0] == w[1]) {
            anyhow::bail!("--zalo-apps-file {}: two apps share a token_file (Zalo's refresh tokens are single-use)", path.display());
        }
        Ok(out)
    }

    /// For the sink, a role meant for production: an app — its id and secret given, and a first
    /// refresh token or a token file — and, when the URLs are Zalo's own, none of them the
    /// simulator's public values or a placeholder. (Pointed at a simulator, as the compose file
    /// does, the simulator's values are what it takes.)
    pub fn check_for_production(&self, role: &str) -> anyhow::Result<()> {
        if self.apps_file.is_some() {
            for app in self.apps()? {
                app.check_for_production(role).with_context(|| format!("the Zalo app of zcdp app {}", app.cdp_app))?;
            }
            return Ok(());
        }
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        if given(&self.app_id).is_none() || given(&self.app_secret).is_none() {
            anyhow::bail!(
                "zcdp {role} needs the Zalo app: --zalo-app-id and --zalo-app-secret (or ZCDP_ZALO_APP_ID, ZCDP_ZALO_APP_SECRET)"
            );
        }
        if given(&self.refresh_token).is_none() && !self.token_file.exists() {
            anyhow::bail!(
                "zcdp {role} needs the OA's first refresh token (--zalo-refresh-token) while {} does not exist",
                self.token_file.display()
            );
        }
        self.check_secrets_for_production(role)
    }

    /// For any role that holds the Zalo app's secrets (the gateway checks webhook signatures and
    /// appsecret proofs with them): when the URLs are Zalo's own, none of the secrets may be the
    /// simulator's public values or a placeholder — with those, anyone could sign a webhook.
    /// Nothing given is nothing to check.
    pub fn check_secrets_for_production(&self, role: &str) -> anyhow::Result<()> {
        if self.apps_file.is_some() {
            for app in self.apps()? {
                app.check_secrets_for_production(role).with_context(|| format!("the Zalo app of zcdp app {}", app.cdp_app))?;
            }
            return Ok(());
        }
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let real_zalo = [&self.oa_url, &self.zns_url, &self.oauth_url, &self.graph_url]
            .iter()
            .any(|u| u.contains("zalo.me") || u.contains("zaloapp.com") || u.contains("zalo.vn"));
        if !real_zalo {
            return Ok(());
        }
        for (flag, v) in [
            ("--zalo-app-id", given(&self.app_id)),
            ("--zalo-app-secret", given(&self.app_secret)),
            ("--zalo-oa-secret", given(&self.oa_secret)),
        ] {
            let Some(v) = v else { continue };
            let lower = v.to_ascii_lowercase();
            if SIMULATOR_VALUES.contains(&v.as_str()) || lower.contains("change-me") || lower.contains("changeme") || v.starts_with('<') {
                anyhow::bail!("zcdp {role}: {flag} is the Zalo simulator's public value or a placeholder; give the real app's");
            }
        }
        Ok(())
    }
}

/// The Zalo simulator's credentials, which are in zcdp's source: never a real app's.
pub const SIMULATOR_VALUES: &[&str] = &["sim-app", "sim-secret", "sim-oa-secret", "sim-refresh-0"];

/// The signature Zalo puts in `X-ZEvent-Signature` of a webhook event:
/// `mac=` + hex sha256(appId + body + timeStamp + OA secret key) — a plain SHA-256, not an HMAC.
/// [DocCopy/2nd in zalo-api.md: `mac = sha256(appId + data + timeStamp + OAsecretKey)`]
pub fn event_signature(app_id: &str, body: &str, timestamp: &str, oa_secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(app_id.as_bytes());
    h.update(body.as_bytes());
    h.update(timestamp.as_bytes());
    h.update(oa_secret.as_bytes());
    format!("mac={}", hex::encode(h.finalize()))
}

/// A signature header's digest as the check reads it: without `mac=`, spaces or case. Two
/// headers that pass the check for one event have the same canonical form.
pub fn canonical_signature(header: &str) -> String {
    let got = header.trim();
    got.strip_prefix("mac=").unwrap_or(got).trim().to_ascii_lowercase()
}

/// Checks a webhook's signature header (with or without the `mac=` prefix), in constant time.
pub fn signature_ok(header: &str, app_id: &str, body: &str, timestamp: &str, oa_secret: &str) -> bool {
    let want = event_signature(app_id, body, timestamp, oa_secret);
    let want = want.trim_start_matches("mac=").as_bytes();
    let got = canonical_signature(header);
    let got = got.as_bytes();
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Why the Graph API did not say who a token's user is, or their phone.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// No answer: connection refused, reset, timed out (the URL is left out of the message).
    #[error("graph.zalo.me: {0}")]
    Unreachable(String),
    #[error("graph.zalo.me answered non-JSON")]
    BadAnswer,
    /// Zalo answered with an error code (0 without the expected data counts as refused too).
    #[error("Zalo refused the token (error {code}: {message})")]
    Refused { code: i64, message: String },
}

/// `appsecret_proof`: hex HMAC-SHA256 of the access token under the app secret, which Zalo asks
/// for with user tokens (sent when the secret is known; harmless where it is not checked).
pub fn appsecret_proof(access_token: &str, app_secret: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(access_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a token a client gave can be one of Zalo's: visible ASCII, of a sane length. Anything
/// else could not even be sent as a header; it is refused as Zalo would refuse it.
fn token_shaped(token: &str) -> bool {
    !token.is_empty() && token.len() <= 4096 && token.bytes().all(|b| b.is_ascii_graphic())
}

fn not_a_token() -> GraphError {
    GraphError::Refused { code: -1, message: "not a Zalo token (visible ASCII, at most 4,096 bytes)".into() }
}

/// The user a Mini App access token (zmp-sdk `getAccessToken()`) belongs to, by Zalo's word:
/// `GET {graph}/v2.0/me?fields=id,name,picture` with header `access_token` →
/// `{"id": "<user id by app>", "name": …}`. The id is the app-scoped Zalo id (`getUserID`).
pub async fn graph_me(
    http: &reqwest::Client,
    graph_url: &str,
    access_token: &str,
    app_secret: Option<&str>,
) -> Result<GraphUser, GraphError> {
    if !token_shaped(access_token) {
        return Err(not_a_token());
    }
    let mut req = http
        .get(format!("{}/v2.0/me", graph_url.trim_end_matches('/')))
        .query(&[("fields", "id,name,picture")])
        .header("access_token", access_token);
    if let Some(secret) = app_secret {
        req = req.header("appsecret_proof", appsecret_proof(access_token, secret));
    }
    let resp = req.send().await.map_err(|e| GraphError::Unreachable(e.without_url().to_string()))?;
    let v: serde_json::Value = resp.json().await.map_err(|_| GraphError::BadAnswer)?;
    // Zalo answers the user at the top level; some gateways in front of it wrap it in `data`.
    let user = if v["id"].is_string() { &v } else { &v["data"] };
    match (v["error"].as_i64().unwrap_or(0), user["id"].as_str().filter(|id| !id.trim().is_empty())) {
        (0, Some(id)) => Ok(GraphUser { id: id.to_string(), name: user["name"].as_str().map(str::to_string) }),
        (code, _) => Err(GraphError::Refused { code, message: v["message"].as_str().unwrap_or_default().to_string() }),
    }
}

/// Who Zalo says a token's user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphUser {
    pub id: String,
    pub name: Option<String>,
}

/// Exchanges a Mini App phone token (zmp-sdk `getPhoneNumber()`'s `token`) for the number,
/// server-side: `GET {graph}/v2.0/me/info` with headers `access_token` (the user's), `code` (the
/// phone token) and `secret_key` (the app's) → `{"data": {"number": "849…"}, "error": 0}`.
pub async fn exchange_phone_token(
    http: &reqwest::Client,
    graph_url: &str,
    user_access_token: &str,
    code: &str,
    app_secret: &str,
) -> Result<String, GraphError> {
    if !token_shaped(user_access_token) || !token_shaped(code) {
        return Err(not_a_token());
    }
    let resp = http
        .get(format!("{}/v2.0/me/info", graph_url.trim_end_matches('/')))
        .header("access_token", user_access_token)
        .header("code", code)
        .header("secret_key", app_secret)
        .send()
        .await
        .map_err(|e| GraphError::Unreachable(e.without_url().to_string()))?;
    let v: serde_json::Value = resp.json().await.map_err(|_| GraphError::BadAnswer)?;
    match (v["error"].as_i64().unwrap_or(0), v["data"]["number"].as_str()) {
        (0, Some(n)) => Ok(n.to_string()),
        (code, _) => Err(GraphError::Refused { code, message: v["message"].as_str().unwrap_or_default().to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps_from(text: &str) -> anyhow::Result<Vec<ZaloArgs>> {
        let path = std::env::temp_dir().join(format!("zcdp-zalo-apps-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        let flags = ZaloArgs { apps_file: Some(path.clone()), rate_limit: 100, ..ZaloArgs::default() };
        let apps = flags.apps();
        std::fs::remove_file(&path).unwrap();
        apps
    }

    /// `--zalo-apps-file`: one Zalo app per zcdp app, the flags' defaults for what is left out,
    /// and what would mix two apps refused with the reason.
    #[test]
    fn an_apps_file_gives_each_app_its_own_zalo_app() {
        let apps = apps_from(
            "[apps.a]\napp_id = \"za\"\napp_secret = \"sa\"\n[apps.b]\napp_id = \"zb\"\napp_secret = \"sb\"\noa_url = \"http://b\"\n",
        )
        .unwrap();
        assert_eq!(
            apps.iter().map(|a| (a.cdp_app.as_str(), a.app_id.as_deref())).collect::<Vec<_>>(),
            [("a", Some("za")), ("b", Some("zb"))]
        );
        assert_eq!((apps[0].oa_url.as_str(), apps[1].oa_url.as_str()), ("https://openapi.zalo.me", "http://b"));
        assert_eq!(apps[0].rate_limit, 100);
        assert_ne!(apps[0].token_file, apps[1].token_file, "each app keeps its own tokens");
        for (text, why) in [
            ("[apps.a]\napp_id = \"z\"\napp_secret = \"s\"\n[apps.b]\napp_id = \"z\"\napp_secret = \"t\"\n", "its own Zalo app"),
            (
                "[apps.a]\napp_id = \"z\"\napp_secret = \"s\"\ntoken_file = \"t.json\"\n[apps.b]\napp_id = \"y\"\napp_secret = \"t\"\ntoken_file = \"t.json\"\n",
                "share a token_file",
            ),
            ("[apps.\"a/b\"]\napp_id = \"z\"\napp_secret = \"s\"\n", "not a zcdp app id"),
            ("[apps.a]\napp_id = \"z\"\n", "app_secret"),
            ("[apps.a]\napp_id = \"z\"\napp_secret = \"s\"\nsecret = \"x\"\n", "unknown field"),
            ("", "apps"),
        ] {
            let e = format!("{:#}", apps_from(text).unwrap_err());
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn signatures_cover_app_body_time_and_secret() {
        let sig = event_signature("app", r#"{"a":1}"#, "1700000000000", "s3cret");
        assert!(sig.starts_with("mac=") && sig.len() == 4 + 64);
        assert!(signature_ok(&sig, "app", r#"{"a":1}"#, "1700000000000", "s3cret"));
        assert!(signature_ok(sig.trim_start_matches("mac="), "app", r#"{"a":1}"#, "1700000000000", "s3cret"));
        assert!(!signature_ok(&sig, "app", r#"{"a":2}"#, "1700000000000", "s3cret"), "another body");
        assert!(!signature_ok(&sig, "app", r#"{"a":1}"#, "1700000000001", "s3cret"), "another time");
        assert!(!signature_ok(&sig, "app", r#"{"a":1}"#, "1700000000000", "other"), "another secret");
        assert!(!signature_ok("", "app", r#"{"a":1}"#, "1700000000000", "s3cret"));
    }
}
