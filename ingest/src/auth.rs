//! Write keys: which Mini App a request speaks for. A key is a shared secret; it is never logged.

use std::collections::HashMap;

use axum::http::HeaderMap;

#[derive(Debug, Clone, Default)]
pub struct WriteKeys {
    by_key: HashMap<String, String>,
}

impl WriteKeys {
    /// Parses `app_id:key,app_id:key`.
    pub fn parse(specs: &[String]) -> anyhow::Result<WriteKeys> {
        let mut by_key = HashMap::new();
        for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let Some((app, key)) = spec.split_once(':') else {
                anyhow::bail!("--write-keys entry {:?} is not app_id:key", redact(spec));
            };
            let (app, key) = (app.trim(), key.trim());
            if app.is_empty() || key.is_empty() {
                anyhow::bail!("--write-keys entry for app {app:?} has an empty app id or key");
            }
            if let Some(other) = by_key.insert(key.to_string(), app.to_string()) {
                anyhow::bail!("the same write key is given to apps {other:?} and {app:?}");
            }
        }
        if by_key.is_empty() {
            anyhow::bail!("no write keys: give --write-keys app_id:key (or ZCDP_WRITE_KEYS)");
        }
        Ok(WriteKeys { by_key })
    }

    /// The app a request's key belongs to: `Authorization: Bearer <key>` or `X-Write-Key`.
    pub fn app_for(&self, headers: &HeaderMap) -> Option<&str> {
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| headers.get("x-write-key").and_then(|v| v.to_str().ok()))?;
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

    #[test]
    fn bearer_and_header_keys_resolve_to_their_app() {
        let keys = WriteKeys::parse(&["demo:demo-key, shop:s3cret".into()]).unwrap();
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
        let err = WriteKeys::parse(&["s3cretwithoutapp".into()]).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(WriteKeys::parse(&["a:k,b:k".into()]).is_err());
        assert!(WriteKeys::parse(&[]).is_err());
    }
}
