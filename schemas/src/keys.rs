//! API keys: which Mini App a request speaks for. Write keys let the gateway take events; read
//! keys let the query API answer. A key is a shared secret: it is never logged or echoed.

use std::collections::HashMap;

use axum::http::HeaderMap;

/// Keys of one kind (write or read), each belonging to one app.
#[derive(Debug, Clone)]
pub struct AppKeys {
    by_key: HashMap<String, String>,
    /// The other header a key may come in, besides `Authorization: Bearer`.
    header: &'static str,
}

impl AppKeys {
    /// Parses `app_id:key,app_id:key` given with `flag` (or the environment variable `env`);
    /// a key may also come in the `header` header.
    pub fn parse(specs: &[String], flag: &str, env: &str, header: &'static str) -> anyhow::Result<AppKeys> {
        let mut by_key = HashMap::new();
        for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let Some((app, key)) = spec.split_once(':') else {
                anyhow::bail!("{flag} entry {:?} is not app_id:key", redact(spec));
            };
            let (app, key) = (app.trim(), key.trim());
            if app.is_empty() || key.is_empty() {
                anyhow::bail!("{flag} entry for app {app:?} has an empty app id or key");
            }
            if let Some(other) = by_key.insert(key.to_string(), app.to_string()) {
                anyhow::bail!("{flag}: the same key is given to apps {other:?} and {app:?}");
            }
        }
        if by_key.is_empty() {
            anyhow::bail!("no keys: give {flag} app_id:key (or {env})");
        }
        Ok(AppKeys { by_key, header })
    }

    /// The app a request's key belongs to: `Authorization: Bearer <key>` or the kind's header.
    pub fn app_for(&self, headers: &HeaderMap) -> Option<&str> {
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| headers.get(self.header).and_then(|v| v.to_str().ok()))?;
        self.by_key.get(key.trim()).map(String::as_str)
    }

    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.by_key.values().map(String::as_str)
    }
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

    fn write_keys(specs: &[&str]) -> anyhow::Result<AppKeys> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        AppKeys::parse(&specs, "--write-keys", "ZCDP_WRITE_KEYS", "x-write-key")
    }

    #[test]
    fn bearer_and_header_keys_resolve_to_their_app() {
        let keys = write_keys(&["demo:demo-key, shop:s3cret"]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(keys.app_for(&h), Some("shop"));
        let mut h = HeaderMap::new();
        h.insert("x-write-key", "demo-key".parse().unwrap());
        assert_eq!(keys.app_for(&h), Some("demo"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(keys.app_for(&h), None);
        assert_eq!(keys.app_for(&HeaderMap::new()), None);
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_key() {
        let err = write_keys(&["s3cretwithoutapp"]).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && err.contains("--write-keys"), "{err}");
        assert!(write_keys(&["a:k,b:k"]).is_err());
        let err = write_keys(&[]).unwrap_err().to_string();
        assert!(err.contains("ZCDP_WRITE_KEYS"), "{err}");
    }
}
