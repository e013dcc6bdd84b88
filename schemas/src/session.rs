//! Sessions: proof, for one app and one Zalo user, that Zalo vouched for the user. The gateway
//! opens one (`POST /v1/session`) once Zalo's Graph API has said whose access token the Mini App
//! sent; the token it answers carries app, user and expiry, signed with HMAC-SHA256 under the
//! deployment's session secret, so every gateway and query replica can check it without shared
//! state, across restarts. A session proves who the user is — never which phone is theirs, and
//! never anything about another user.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session flags, for every role that opens or checks sessions (`ingest`, `serve`, `up`).
#[derive(clap::Args, Debug, Clone)]
pub struct SessionArgs {
    /// The secret that signs sessions: the same on every gateway and query replica, kept across
    /// restarts (32+ random characters; changing it ends every open session).
    #[arg(long = "session-secret", env = "ZCDP_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<String>,
    /// How long a session lasts; the SDK opens a new one before it ends.
    #[arg(long = "session-ttl", env = "ZCDP_SESSION_TTL", default_value = "1h", value_parser = crate::duration::parse_duration)]
    pub session_ttl: Duration,
}

impl Default for SessionArgs {
    fn default() -> Self {
        SessionArgs { session_secret: None, session_ttl: Duration::from_secs(3600) }
    }
}

/// The shortest session secret the roles meant for production take.
pub const MIN_SECRET_LEN: usize = 32;

/// The session secret of `zcdp up --demo` and of tests: in zcdp's source, so refused in
/// production.
pub const DEMO_SECRET: &str = "zcdp-demo-session-secret-not-for-production";

/// What a session says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub app: String,
    /// The Zalo user id (by app) Zalo's Graph API returned.
    pub user: String,
    /// Epoch ms.
    pub expires_at: i64,
}

/// Why a session token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session token is not one this deployment signed")]
    Invalid,
    #[error("the session has expired: open a new one (POST /v1/session)")]
    Expired,
}

/// Signs and checks session tokens.
#[derive(Clone)]
pub struct Sessions {
    secret: Vec<u8>,
    pub ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(secret: &str, ttl: Duration) -> Sessions {
        Sessions { secret: secret.as_bytes().to_vec(), ttl }
    }

    /// From the flags, for a role meant for production: the secret must be given, and not short
    /// or a placeholder.
    pub fn for_production(args: &SessionArgs, role: &str) -> anyhow::Result<Sessions> {
        let Some(secret) = args.session_secret.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            anyhow::bail!(
                "zcdp {role} needs --session-secret (or ZCDP_SESSION_SECRET): the same random secret on every gateway and query replica, e.g. `openssl rand -hex 32`"
            );
        };
        let lower = secret.to_ascii_lowercase();
        if secret == DEMO_SECRET {
            anyhow::bail!("zcdp {role}: --session-secret is zcdp's demo secret, which anyone can read in its source");
        }
        if secret.len() < MIN_SECRET_LEN || lower.contains("change-me") || lower.contains("changeme") || secret.starts_with('<') {
            anyhow::bail!("zcdp {role}: --session-secret is a placeholder or shorter than {MIN_SECRET_LEN} characters");
        }
        Ok(Sessions::new(secret, args.session_ttl))
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(purpose.domain());
        mac.update(payload);
        mac
    }

    /// A new session for `user` of `app`, from `now` (epoch ms), and its token.
    pub fn open(&self, app: &str, user: &str, now: i64) -> (Session, String) {
        self.open_for(Purpose::User, app, user, now, self.ttl)
    }

    /// A token for another purpose than a user's session (the report page's sign-in), lasting
    /// `ttl`. A token made for one purpose is refused for any other.
    pub fn open_for(&self, purpose: Purpose, app: &str, subject: &str, now: i64, ttl: Duration) -> (Session, String) {
        let s = Session { app: app.to_string(), user: subject.to_string(), expires_at: now + ttl.as_millis() as i64 };
        let token = self.sign(purpose, &s);
        (s, token)
    }

    /// `hex(app 0x1f user 0x1f expiry).hex(mac)`, the MAC over the purpose and the payload.
    pub fn sign(&self, purpose: Purpose, s: &Session) -> String {
        let payload = format!("{}\x1f{}\x1f{}", s.app, s.user, s.expires_at);
        let mac = self.mac(purpose, payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", hex::encode(payload), hex::encode(mac))
    }

    /// The session a token stands for, if this deployment signed it and it has not expired at
    /// `now`. The signature is checked in constant time.
    pub fn verify(&self, token: &str, now: i64) -> Result<Session, SessionError> {
        self.verify_for(Purpose::User, token, now)
    }

    /// As [`Sessions::verify`], for a token made for `purpose`.
    pub fn verify_for(&self, purpose: Purpose, token: &str, now: i64) -> Result<Session, SessionError> {
        let (payload, mac) = token.trim().split_once('.').ok_or(SessionError::Invalid)?;
        let (payload, mac) =
            (hex::decode(payload).map_err(|_| SessionError::Invalid)?, hex::decode(mac).map_err(|_| SessionError::Invalid)?);
        self.mac(purpose, &payload).verify_slice(&mac).map_err(|_| SessionError::Invalid)?;
        let text = String::from_utf8(payload).map_err(|_| SessionError::Invalid)?;
        let mut parts = text.split('\x1f');
        let (Some(app), Some(user), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(SessionError::Invalid);
        };
        let expires_at: i64 = expires.parse().map_err(|_| SessionError::Invalid)?;
        if expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(Session { app: app.to_string(), user: user.to_string(), expires_at })
    }
}

/// What a token was made for: each has its own MAC domain, so no token serves two purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A Mini App user's session (`X-Zcdp-Session`).
    User,
    /// The report page's cookie, for an admin key's holder (subject: the key's id).
    Report,
    /// A one-time link that signs the report page in (subject: a nonce).
    ReportLink,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::User => b"zcdp-session-v1\x1f",
            Purpose::Report => b"zcdp-report-v1\x1f",
            Purpose::ReportLink => b"zcdp-report-link-v1\x1f",
        }
    }
}

/// The header a session token travels in.
pub const SESSION_HEADER: &str = "x-zcdp-session";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_proves_its_app_user_and_expiry_and_nothing_else() {
        let s = Sessions::new("a-secret-of-the-deployment-0123456789", Duration::from_secs(3600));
        let (session, token) = s.open("demo", "5012345678901234567", 1_000);
        assert_eq!(session.expires_at, 1_000 + 3_600_000);
        assert_eq!(s.verify(&token, 2_000), Ok(session.clone()));
        assert_eq!(s.verify(&token, session.expires_at), Err(SessionError::Expired));
        // Another deployment's secret, a changed user, a cut token: refused.
        let other = Sessions::new("another-secret-0123456789abcdef0123", Duration::from_secs(3600));
        assert_eq!(other.verify(&token, 2_000), Err(SessionError::Invalid));
        let (payload, mac) = token.split_once('.').unwrap();
        let forged = hex::encode(String::from_utf8(hex::decode(payload).unwrap()).unwrap().replace("5012345678901234567", "1"));
        assert_eq!(s.verify(&format!("{forged}.{mac}"), 2_000), Err(SessionError::Invalid));
        assert_eq!(s.verify(&token[..token.len() - 2], 2_000), Err(SessionError::Invalid));
        assert_eq!(s.verify("", 2_000), Err(SessionError::Invalid));
        assert_eq!(s.verify("zz.zz", 2_000), Err(SessionError::Invalid));
        // A token made for the report page is no user session, and the other way round.
        let (_, report) = s.open_for(Purpose::Report, "demo", "key", 1_000, Duration::from_secs(60));
        assert_eq!(s.verify(&report, 2_000), Err(SessionError::Invalid));
        assert!(s.verify_for(Purpose::Report, &report, 2_000).is_ok());
        assert_eq!(s.verify_for(Purpose::Report, &token, 2_000), Err(SessionError::Invalid));
    }

    #[test]
    fn production_needs_a_real_secret() {
        let args = |s: Option<&str>| SessionArgs { session_secret: s.map(str::to_string), ..SessionArgs::default() };
        assert!(Sessions::for_production(&args(None), "ingest").unwrap_err().to_string().contains("--session-secret"));
        assert!(Sessions::for_production(&args(Some("short")), "ingest").is_err());
        assert!(Sessions::for_production(&args(Some("change-me-change-me-change-me-change-me")), "ingest").is_err());
        assert!(Sessions::for_production(&args(Some(&"x".repeat(40))), "ingest").is_ok());
    }
}
