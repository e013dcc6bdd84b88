//! What two roles must agree on about Zalo: the app's credentials and base URLs (one set of
//! flags, taken by the gateway for webhooks and the phone exchange, and by the sink for sending),
//! how Zalo signs the events it posts to a webhook, and the Graph API's phone exchange.

use std::path::PathBuf;

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
        }
    }
}

impl ZaloArgs {
    /// Whether an app is configured (else webhooks and the phone exchange are off).
    pub fn configured(&self) -> bool {
        self.app_id.is_some()
    }

    /// For the sink, a role meant for production: an app — its id and secret given, and a first
    /// refresh token or a token file — and, when the URLs are Zalo's own, none of them the
    /// simulator's public values or a placeholder. (Pointed at a simulator, as the compose file
    /// does, the simulator's values are what it takes.)
    pub fn check_for_production(&self, role: &str) -> anyhow::Result<()> {
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
