//! The audience exporter: the current members of a segment, read from `zmp.audiences.v1` (the
//! latest record per segment and user), in the formats ad platforms take: Zalo ids, SHA-256 of
//! the phone as `84…` (Meta) or `+84…` (Google), or a CSV of everything — once
//! (`zcdp audiences export`), or kept current in a directory (`zcdp audiences sync`, `--export-dir`).

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

/// The latest audience record of every app, segment and user, from the whole topic.
pub fn latest(kafka: &Kafka) -> anyhow::Result<BTreeMap<String, AudienceChange>> {
    let mut out = BTreeMap::new();
    for m in kafka.read_to_end(Topic::Audiences.name(), Duration::from_secs(120))? {
        use rdkafka::Message;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let change = match m.payload() {
            None => None,
            Some(p) => Some(schemas::codec::decode::<AudienceChange>(p).with_context(|| format!("audience record {key}"))?),
        };
        apply(&mut out, &key, change);
    }
    Ok(out)
}

/// Applies one record of `zmp.audiences.v1` to the latest records, which are kept by their
/// `app/segment/user` key. A record counts only under its own key (`zcdp topics migrate-keys`
/// moves those a version before app-keyed topics keyed `segment/user`). Returns the (app,
/// segment) that changed.
pub fn apply(latest: &mut BTreeMap<String, AudienceChange>, key: &str, change: Option<AudienceChange>) -> Option<(String, String)> {
    match change {
        Some(c) if c.key() != key => None,
        Some(c) => {
            let changed = (c.app_id.clone(), c.segment.clone());
            latest.insert(c.key(), c);
            Some(changed)
        }
        None => {
            let (app, segment, _) = schemas::topics::split_audience_key(key)?;
            latest.remove(key).map(|_| (app.to_string(), segment.to_string()))
        }
    }
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

/// Writes `members` in `format` to `path`, replacing it atomically (through `<path>.partial`,
/// so a reader never sees half a file); returns what [`write`] returns.
pub fn export_to(format: Format, members: &[&AudienceChange], path: &std::path::Path) -> anyhow::Result<(usize, usize)> {
    let tmp = path.with_extension("partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    let counts = write(format, members, &mut f)?;
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(counts)
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

/// Files of every app's segments kept current in a directory: `<dir>/<app>/<segment>/members.csv` (the CSV
/// export), `zalo_ids.txt`, `meta_sha256.txt`, `google_sha256.txt`, each replaced atomically,
/// and `changes.csv`, to which every difference between successive snapshots is appended as
/// `time,add|remove,<the member's CSV row>`. The differences are taken against the files already
/// there, so a restart appends nothing twice.
pub struct ExportDir {
    dir: std::path::PathBuf,
    app: Option<String>,
    latest: BTreeMap<String, AudienceChange>,
    /// (app, segment) changed since the last flush.
    dirty: std::collections::BTreeSet<(String, String)>,
}

impl ExportDir {
    pub fn new(dir: &std::path::Path, app: Option<&str>) -> anyhow::Result<ExportDir> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the export dir {}", dir.display()))?;
        Ok(ExportDir { dir: dir.to_path_buf(), app: app.map(str::to_string), latest: BTreeMap::new(), dirty: Default::default() })
    }

    /// A record (or tombstone) of `zmp.audiences.v1`.
    pub fn apply(&mut self, key: &str, change: Option<AudienceChange>) {
        if change.as_ref().is_some_and(|c| self.app.as_deref().is_some_and(|a| a != c.app_id)) {
            return;
        }
        if let Some(changed) = apply(&mut self.latest, key, change) {
            self.dirty.insert(changed);
        }
    }

    /// Writes the segments that changed since the last flush; `now` stamps the changes.
    pub fn flush(&mut self, now: i64) -> anyhow::Result<()> {
        for (app, segment) in std::mem::take(&mut self.dirty) {
            let members = members(&self.latest, &segment, Some(&app));
            let dir = self.dir.join(&app).join(&segment);
            std::fs::create_dir_all(&dir)?;
            let render = |f: Format| -> anyhow::Result<Vec<u8>> {
                let mut buf = Vec::new();
                write(f, &members, &mut buf)?;
                Ok(buf)
            };
            let csv = render(Format::Csv)?;
            let rows = |text: &str| -> BTreeMap<String, String> {
                text.lines().skip(1).filter_map(|l| Some((l.split(',').next()?.to_string(), l.to_string()))).collect()
            };
            let before = rows(&std::fs::read_to_string(dir.join("members.csv")).unwrap_or_default());
            let after = rows(std::str::from_utf8(&csv)?);
            let stamp = chrono::DateTime::from_timestamp_millis(now).map(|t| t.to_rfc3339()).unwrap_or_default();
            let mut changes = String::new();
            for (user, row) in &after {
                if !before.contains_key(user) {
                    changes.push_str(&format!("{stamp},add,{row}\n"));
                }
            }
            for (user, row) in &before {
                if !after.contains_key(user) {
                    changes.push_str(&format!("{stamp},remove,{row}\n"));
                }
            }
            if !changes.is_empty() {
                let path = dir.join("changes.csv");
                let new_file = !path.exists();
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                if new_file {
                    f.write_all(b"time,change,user_key,zalo_id,oa_user_id,phone_sha256,phone_sha256_e164,since\n")?;
                }
                f.write_all(changes.as_bytes())?;
                f.sync_data()?;
            }
            for (name, bytes) in [
                ("zalo_ids.txt", render(Format::Zalo)?),
                ("meta_sha256.txt", render(Format::Meta)?),
                ("google_sha256.txt", render(Format::Google)?),
                ("members.csv", csv),
            ] {
                let tmp = dir.join(format!(".{name}.partial"));
                std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Follows `zmp.audiences.v1` from the beginning and flushes every `every`, until the task is
    /// dropped.
    pub async fn follow(mut self, kafka: Kafka, every: Duration) -> anyhow::Result<()> {
        use rdkafka::Message;
        let tail = kafka.tail(&[Topic::Audiences.name()], "audience-export")?;
        let consumer = &tail.consumer;
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                        match m.payload().map(schemas::codec::decode::<AudienceChange>) {
                            None => self.apply(&key, None),
                            Some(Ok(c)) => self.apply(&key, Some(c)),
                            Some(Err(e)) => tracing::warn!(error = %e, key, "audience export: undecodable record skipped"),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "audience export: consume error"),
                },
                _ = tick.tick() => {
                    let now = chrono::Utc::now().timestamp_millis();
                    if let Err(e) = self.flush(now) {
                        tracing::error!(error = format!("{e:#}"), dir = %self.dir.display(), "audience export: writing files failed; retrying");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod export_dir_tests {
    use super::*;

    fn change(user: &str, member: bool) -> AudienceChange {
        AudienceChange {
            app_id: "demo".into(),
            segment: "s".into(),
            user_key: user.into(),
            member,
            zalo_id: Some(format!("z{user}")),
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_are_replaced_and_differences_appended_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = ExportDir::new(dir.path(), None).unwrap();
        for c in [change("a", true), change("b", true)] {
            x.apply(&c.key(), Some(c));
        }
        x.flush(0).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join("demo").join("s").join(f)).unwrap();
        assert_eq!(read("zalo_ids.txt"), "za\nzb\n");
        x.apply("demo/s/a", Some(change("a", false)));
        x.flush(1000).unwrap();
        assert_eq!(read("zalo_ids.txt"), "zb\n");
        let changes = read("changes.csv");
        let ops: Vec<(&str, &str)> =
            changes.lines().skip(1).map(|l| (l.split(',').nth(1).unwrap(), l.split(',').nth(2).unwrap())).collect();
        assert_eq!(ops, vec![("add", "a"), ("add", "b"), ("remove", "a")]);
        // A restart replays the topic: nothing new is appended.
        let mut again = ExportDir::new(dir.path(), None).unwrap();
        for c in [change("a", true), change("b", true), change("a", false)] {
            again.apply(&c.key(), Some(c));
        }
        again.flush(2000).unwrap();
        assert_eq!(read("changes.csv"), changes);
    }
}
