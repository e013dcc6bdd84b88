//! API keys: which app a request speaks for, and what it may do there. Three kinds per app
//! (docs/security.md):
//!
//! - a **write key** is publishable: it ships inside the Mini App's JavaScript, so anyone has it.
//!   It posts events (unverified, or verified under a session), opens a session, and reads the
//!   session user's own profile and recommendations;
//! - a **secret key** stays on the shop's servers: events for any user, trusted facts (a phone,
//!   identify, consent on a user's behalf, orders that drive transactional messages), reading any
//!   profile, segments, engagement, campaigns;
//! - an **admin key**: everything a secret key may, plus erasure and the report page.
//!
//! A key is a secret (even a write key is one per app): it is never logged, echoed or put in a
//! URL. Keys are held as SHA-256 digests and a presented key is compared with every one of them
//! in constant time; what a log or an audit record names is the key's id, a short digest.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// What a key may do. Each kind may do everything the kinds before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Write,
    Secret,
    Admin,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Write => "write",
            Access::Secret => "secret",
            Access::Admin => "admin",
        }
    }
}

/// Who a request is, by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub app: String,
    pub access: Access,
    /// The key's id: the first 12 hex digits of its SHA-256. Safe to log and to record.
    pub key_id: String,
}

/// The key flags, shared by every role that checks keys (`ingest`, `serve`, `up`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Write keys, app_id:key, comma-separated. Publishable: each ships in its app's Mini App.
    #[arg(long = "write-keys", env = "ZCDP_WRITE_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub write_keys: Vec<String>,
    /// Secret keys, app_id:key, comma-separated: the shop's servers and tools. Keep them secret.
    #[arg(long = "secret-keys", env = "ZCDP_SECRET_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub secret_keys: Vec<String>,
    /// Admin keys, app_id:key, comma-separated: a secret key's rights plus erasure and the report.
    #[arg(long = "admin-keys", env = "ZCDP_ADMIN_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub admin_keys: Vec<String>,
    /// Deprecated: the old name of --secret-keys (keys given here are secret keys).
    #[arg(long = "read-keys", env = "ZCDP_READ_KEYS", value_delimiter = ',', hide_env_values = true, hide = true)]
    pub read_keys: Vec<String>,
}

/// The fixed keys of `zcdp up --demo`, for app `demo`: fine on a laptop, refused by the roles
/// meant for production.
pub const DEMO_WRITE_KEY: &str = "demo-key";
pub const DEMO_SECRET_KEY: &str = "demo-secret-key";
pub const DEMO_ADMIN_KEY: &str = "demo-admin-key";
/// The read key of earlier versions (now a secret key under `--read-keys`).
const DEMO_READ_KEY: &str = "demo-read-key";

/// The shortest secret or admin key the production roles take.
pub const MIN_SECRET_KEY_LEN: usize = 20;

impl KeyArgs {
    /// The demo keys, for app `demo`.
    pub fn demo() -> KeyArgs {
        KeyArgs {
            write_keys: vec![format!("demo:{DEMO_WRITE_KEY}")],
            secret_keys: vec![format!("demo:{DEMO_SECRET_KEY}")],
            admin_keys: vec![format!("demo:{DEMO_ADMIN_KEY}")],
            read_keys: Vec::new(),
        }
    }

    /// Whether no key of any kind is given.
    pub fn is_empty(&self) -> bool {
        [&self.write_keys, &self.secret_keys, &self.admin_keys, &self.read_keys].iter().all(|v| v.iter().all(|s| s.trim().is_empty()))
    }

    /// The `(kind, flag, env, entries)` of every kind, `--read-keys` folded into secret.
    fn kinds(&self) -> [(Access, &'static str, &'static str, Vec<&str>); 3] {
        fn list(v: &[String]) -> Vec<&str> {
            v.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).collect()
        }
        let mut secret = list(&self.secret_keys);
        secret.extend(list(&self.read_keys));
        [
            (Access::Write, "--write-keys", "ZCDP_WRITE_KEYS", list(&self.write_keys)),
            (Access::Secret, "--secret-keys", "ZCDP_SECRET_KEYS", secret),
            (Access::Admin, "--admin-keys", "ZCDP_ADMIN_KEYS", list(&self.admin_keys)),
        ]
    }
}

struct Entry {
    digest: [u8; 32],
    app: String,
    access: Access,
}

/// Every key of a deployment.
pub struct Keys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.entries.iter().map(|e| format!("{}:{}:{}", e.app, e.access.name(), key_id(&e.digest))).collect();
        f.debug_struct("Keys").field("keys", &list).finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_id(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..6])
}

/// Whether two digests are equal, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// The keys given, checked for shape: `app_id:key` entries, no key given twice.
    pub fn parse(args: &KeyArgs) -> anyhow::Result<Keys> {
        let mut entries: Vec<Entry> = Vec::new();
        for (access, flag, _, specs) in args.kinds() {
            for spec in specs {
                let Some((app, key)) = spec.split_once(':') else {
                    anyhow::bail!("{flag} entry {:?} is not app_id:key", redact(spec));
                };
                let (app, key) = (app.trim(), key.trim());
                if app.is_empty() || key.is_empty() {
                    anyhow::bail!("{flag} entry for app {app:?} has an empty app id or key");
                }
                // App ids are parts of keys (`app/user/purpose`, `app/campaign/…`).
                if app.contains(['/', '\u{1f}']) || app.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    anyhow::bail!("{flag}: app id {app:?} may not contain '/', spaces or control characters");
                }
                // `*` is every app's (the seed of the campaign definitions, zmp.campaigns.v1).
                if app == "*" {
                    anyhow::bail!("{flag}: \"*\" is not an app id (it stands for every app)");
                }
                let d = digest(key);
                if let Some(other) = entries.iter().find(|e| same(&e.digest, &d)) {
                    anyhow::bail!(
                        "{flag}: a key of app {app:?} is also given as a {} key of app {:?}; every key must be its own",
                        other.access.name(),
                        other.app
                    );
                }
                entries.push(Entry { digest: d, app: app.to_string(), access });
            }
        }
        if entries.is_empty() {
            anyhow::bail!("no keys: give --write-keys, --secret-keys and --admin-keys as app_id:key (or ZCDP_WRITE_KEYS, …)");
        }
        Ok(Keys { entries })
    }

    /// The keys a role meant for production may run with: every kind in `required` given, and no
    /// key that is a demo key, a placeholder, or (for secret and admin keys) shorter than
    /// [`MIN_SECRET_KEY_LEN`]. `role` names the command in the errors.
    pub fn for_production(args: &KeyArgs, role: &str, required: &[Access]) -> anyhow::Result<Keys> {
        if !args.read_keys.iter().all(|s| s.trim().is_empty()) {
            anyhow::bail!(
                "zcdp {role} no longer takes --read-keys (ZCDP_READ_KEYS): the old read key was public (it shipped in Mini Apps). Give the shop's servers new secret keys (--secret-keys) and the Mini App its write key (docs/security.md)"
            );
        }
        for (access, flag, env, specs) in args.kinds() {
            if specs.is_empty() && required.contains(&access) {
                anyhow::bail!("zcdp {role} needs {} keys: give {flag} app_id:key,… (or {env})", access.name());
            }
            for spec in specs {
                let (app, key) = spec.split_once(':').map(|(a, k)| (a.trim(), k.trim())).unwrap_or(("?", spec));
                if let Some(why) = weak(key, access) {
                    anyhow::bail!(
                        "zcdp {role}: the {} key given for app {app:?} in {flag} {why}; make one with e.g. `openssl rand -hex 24` (docs/security.md)",
                        access.name()
                    );
                }
            }
        }
        Keys::parse(args)
    }

    /// Who a request is: its key from `Authorization: Bearer <key>` (or the `X-Write-Key` /
    /// `X-Api-Key` header), compared with every key.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| ["x-write-key", "x-api-key", "x-read-key"].iter().find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok())))?;
        self.resolve(key.trim())
    }

    /// The caller a key stands for. Every key is compared, whichever matches.
    pub fn resolve(&self, key: &str) -> Option<Caller> {
        let d = digest(key);
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if same(&e.digest, &d) {
                found = Some(e);
            }
        }
        found.map(|e| Caller { app: e.app.clone(), access: e.access, key_id: key_id(&e.digest) })
    }

    /// Whether `id` is still one of `app`'s keys of kind `access` (a sign-in made with a key
    /// that has since been removed no longer counts).
    pub fn has(&self, app: &str, access: Access, id: &str) -> bool {
        self.entries.iter().any(|e| e.app == app && e.access == access && key_id(&e.digest) == id)
    }

    /// Every app with a key, each once.
    pub fn apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = self.entries.iter().map(|e| e.app.clone()).collect();
        apps.sort();
        apps.dedup();
        apps
    }
}

/// Why a key is not fit for production, if it is not.
fn weak(key: &str, access: Access) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    if [DEMO_WRITE_KEY, DEMO_SECRET_KEY, DEMO_ADMIN_KEY, DEMO_READ_KEY].contains(&key) {
        return Some("is a demo key, which anyone can read in zcdp's source");
    }
    if lower.contains("change-me") || lower.contains("changeme") || key.starts_with('<') || lower.contains("example") {
        return Some("is a placeholder");
    }
    if access != Access::Write && key.len() < MIN_SECRET_KEY_LEN {
        return Some("is shorter than 20 characters");
    }
    None
}

/// A new random key, `zcdp_<kind>_` and 32 hex digits.
pub fn generate(access: Access) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("zcdp_{}_{}", access.name(), hex::encode(bytes))
}

/// Shows only the app part of a key spec, for error messages.
fn redact(spec: &str) -> String {
    match spec.split_once(':') {
        Some((app, _)) => format!("{app}:<redacted>"),
        None => "<redacted>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(write: &[&str], secret: &[&str], admin: &[&str]) -> KeyArgs {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        KeyArgs { write_keys: v(write), secret_keys: v(secret), admin_keys: v(admin), read_keys: Vec::new() }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {key}").parse().unwrap());
        h
    }

    #[test]
    fn each_key_resolves_to_its_app_and_kind() {
        let keys = Keys::parse(&args(&["demo:demo-key, shop:w1"], &["shop:s1"], &["shop:a1"])).unwrap();
        assert_eq!(keys.caller(&bearer("w1")).map(|c| (c.app, c.access)), Some(("shop".into(), Access::Write)));
        assert_eq!(keys.caller(&bearer("s1")).map(|c| c.access), Some(Access::Secret));
        assert_eq!(keys.caller(&bearer("a1")).map(|c| c.access), Some(Access::Admin));
        let mut h = HeaderMap::new();
        h.insert("x-write-key", "demo-key".parse().unwrap());
        assert_eq!(keys.caller(&h).map(|c| c.app), Some("demo".into()));
        assert_eq!(keys.caller(&bearer("nope")), None);
        assert_eq!(keys.caller(&HeaderMap::new()), None);
        assert!(Access::Write < Access::Secret && Access::Secret < Access::Admin);
        let id = keys.caller(&bearer("s1")).unwrap().key_id;
        assert_eq!(id.len(), 12);
        assert!(!format!("{keys:?}").contains("s1:") && !format!("{keys:?}").contains("\"s1\""), "{keys:?}");
    }

    #[test]
    fn a_key_id_counts_only_while_its_key_is_configured() {
        let before = Keys::parse(&args(&[], &["shop:s1"], &["shop:a1"])).unwrap();
        let id = before.caller(&bearer("a1")).unwrap().key_id;
        assert!(before.has("shop", Access::Admin, &id));
        assert!(!before.has("shop", Access::Secret, &id), "the admin key's id is not a secret key's");
        assert!(!before.has("other", Access::Admin, &id));
        // The leaked admin key replaced: sign-ins made with it no longer count.
        let after = Keys::parse(&args(&[], &["shop:s1"], &["shop:a2"])).unwrap();
        assert!(!after.has("shop", Access::Admin, &id));
    }

    #[test]
    fn production_refuses_the_old_read_keys() {
        let mut a = args(&["shop:w-0123456789abcdef"], &["shop:zcdp_secret_0123456789abcdef"], &[]);
        a.read_keys = vec!["shop:zcdp_read_0123456789abcdef0123".into()];
        let err = Keys::for_production(&a, "serve", &[Access::Secret]).unwrap_err().to_string();
        assert!(err.contains("--read-keys") && !err.contains("zcdp_read_0123"), "{err}");
    }

    #[test]
    fn the_old_read_keys_are_secret_keys() {
        let keys = Keys::parse(&KeyArgs { read_keys: vec!["shop:r1".into()], ..KeyArgs::default() }).unwrap();
        assert_eq!(keys.caller(&bearer("r1")).map(|c| c.access), Some(Access::Secret));
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_key() {
        let err = Keys::parse(&args(&["s3cretwithoutapp"], &[], &[])).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && err.contains("--write-keys"), "{err}");
        let err = Keys::parse(&args(&["a:k"], &["b:k"], &[])).unwrap_err().to_string();
        assert!(err.contains("every key must be its own") && !err.contains(":k"), "{err}");
        let err = Keys::parse(&KeyArgs::default()).unwrap_err().to_string();
        assert!(err.contains("ZCDP_WRITE_KEYS"), "{err}");
    }

    #[test]
    fn production_refuses_missing_demo_placeholder_and_short_keys() {
        let strong = "zcdp_secret_0123456789abcdef0123";
        let ok = args(&["shop:w-live"], &[&format!("shop:{strong}")], &["shop:zcdp_admin_0123456789abcdef0123"]);
        assert!(Keys::for_production(&ok, "ingest", &[Access::Write, Access::Secret]).is_ok());
        let err = |a: &KeyArgs| Keys::for_production(a, "ingest", &[Access::Write]).unwrap_err().to_string();
        assert!(err(&KeyArgs::default()).contains("--write-keys"));
        assert!(err(&KeyArgs::demo()).contains("demo key"));
        assert!(err(&args(&["shop:change-me-write-key"], &[], &[])).contains("placeholder"));
        assert!(err(&args(&["shop:w"], &["shop:short"], &[])).contains("shorter than 20"));
        let e = err(&args(&["shop:w"], &["shop:<secret key>"], &[]));
        assert!(e.contains("placeholder") && !e.contains("<secret key>"), "{e}");
    }

    #[test]
    fn generated_keys_are_distinct_and_fit_for_production() {
        let (a, b) = (generate(Access::Secret), generate(Access::Secret));
        assert_ne!(a, b);
        assert!(weak(&a, Access::Secret).is_none() && a.starts_with("zcdp_secret_"));
    }
}
