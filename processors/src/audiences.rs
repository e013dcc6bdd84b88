//! Audience exports: the current members of a segment, read from `zmp.audiences.v1` (the latest
//! record per segment and user), in the formats ad platforms take: Zalo ids, SHA-256 of the
//! phone as `84…` (Meta) or `+84…` (Google), or a CSV of everything.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;

use schemas::derived::AudienceChange;
use schemas::kafka::Kafka;
use schemas::topics::Topic;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Zalo user id a line (members without one are left out).
    Zalo,
    /// One hex SHA-256 of the phone as 84… a line (Meta custom audiences).
    Meta,
    /// One hex SHA-256 of the phone as +84… a line (Google Customer Match).
    Google,
    /// user_key, zalo_id, oa_user_id, both phone hashes and the time the user entered.
    Csv,
}

/// The latest audience record of every segment and user, from the whole topic.
pub fn latest(kafka: &Kafka) -> anyhow::Result<BTreeMap<String, AudienceChange>> {
    let mut out = BTreeMap::new();
    for m in kafka.read_to_end(Topic::Audiences.name(), Duration::from_secs(120))? {
        use rdkafka::Message;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        match m.payload() {
            None => {
                out.remove(&key);
            }
            Some(p) => {
                let c = schemas::codec::decode::<AudienceChange>(p).with_context(|| format!("audience record {key}"))?;
                out.insert(key, c);
            }
        }
    }
    Ok(out)
}

/// The members of `segment` (of `app`, or of every app), by user key.
pub fn members<'a>(latest: &'a BTreeMap<String, AudienceChange>, segment: &str, app: Option<&str>) -> Vec<&'a AudienceChange> {
    latest.values().filter(|c| c.member && c.segment == segment && app.is_none_or(|a| c.app_id == a)).collect()
}

/// Writes `members` in `format`; returns (lines written, members left out for want of the id).
pub fn write(format: Format, members: &[&AudienceChange], out: &mut dyn Write) -> anyhow::Result<(usize, usize)> {
    let mut written = 0;
    if format == Format::Csv {
        writeln!(out, "user_key,zalo_id,oa_user_id,phone_sha256,phone_sha256_e164,since")?;
    }
    for m in members {
        let line = match format {
            Format::Zalo => m.zalo_id.clone(),
            Format::Meta => m.phone_sha256.clone(),
            Format::Google => m.phone_sha256_e164.clone(),
            Format::Csv => {
                let f = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
                let since = chrono::DateTime::from_timestamp_millis(m.at).map(|t| t.to_rfc3339()).unwrap_or_default();
                Some(format!(
                    "{},{},{},{},{},{since}",
                    csv_field(&m.user_key),
                    f(&m.zalo_id),
                    f(&m.oa_user_id),
                    f(&m.phone_sha256),
                    f(&m.phone_sha256_e164)
                ))
            }
        };
        if let Some(line) = line {
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    Ok((written, members.len() - written))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(user: &str, member: bool, zalo: Option<&str>, phone: Option<&str>) -> AudienceChange {
        AudienceChange {
            app_id: "demo".into(),
            segment: "s".into(),
            user_key: user.into(),
            member,
            at: 1_767_200_400_000,
            zalo_id: zalo.map(Into::into),
            phone_sha256: phone.map(|p| format!("h({p})")),
            phone_sha256_e164: phone.map(|p| format!("h(+{p})")),
            ..Default::default()
        }
    }

    #[test]
    fn each_format_writes_the_members_it_has_ids_for() {
        let mut latest = BTreeMap::new();
        for c in [change("a", true, Some("za"), Some("849")), change("b", true, None, Some("848")), change("c", false, Some("zc"), None)] {
            latest.insert(c.key(), c);
        }
        let m = members(&latest, "s", Some("demo"));
        assert_eq!(m.len(), 2, "c left the segment");
        let run = |f| {
            let mut buf = Vec::new();
            let counts = write(f, &m, &mut buf).unwrap();
            (String::from_utf8(buf).unwrap(), counts)
        };
        assert_eq!(run(Format::Zalo), ("za\n".to_string(), (1, 1)));
        assert_eq!(run(Format::Meta), ("h(849)\nh(848)\n".to_string(), (2, 0)));
        assert_eq!(run(Format::Google).0, "h(+849)\nh(+848)\n");
        let (csv, _) = run(Format::Csv);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.lines().nth(2).unwrap().starts_with("b,,,h(848),h(+848),2025-12-31T17:00:00+00:00"), "{csv}");
        assert!(members(&latest, "s", Some("other")).is_empty());
    }
}
