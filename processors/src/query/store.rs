//! The view's per-user records on disk: every profile, interests and segment membership the query
//! view follows, in one RocksDB with a bounded block cache, so a replica's memory does not grow
//! with its users. Values are the records as Kafka holds them (Avro), decoded on each lookup.
//!
//! Keys, in the one column family:
//! - `p` + topic key (`app/user`): the latest profile;
//! - `i` + topic key (`app/user`): the latest interests;
//! - `a` + topic key (`app/segment/user`): a segment member (byte order = user order within a
//!   segment, which paging relies on);
//! - `s` + `app/user`: the user's messages sent in the last 40 days (`zmp.messages.v1`), for the
//!   campaign preview's quotas and caps: 9 bytes each, the time (big-endian ms) and a flag byte
//!   (bit 0 promotional, bits 1–2 the channel: 0 consultation, 1 transaction, 2 promotion or
//!   template, 3 ZNS);
//! - `mcluster`, `msaved`: the cluster the records came from, and when the view last had read
//!   the topics to their end (the resume's age check: a tombstone written since then is younger).
//!
//! Every record is written together with its partition's next offset, in one batch. Without a
//! write-ahead log RocksDB loses the unflushed tail at a crash, but what it keeps is a prefix of
//! the writes (one column family), so the offsets kept always match the records kept.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rocksdb::{BlockBasedOptions, Cache, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

pub const PROFILE: u8 = b'p';
pub const INTERESTS: u8 = b'i';
pub const AUDIENCE: u8 = b'a';
pub const SENDS: u8 = b's';
const OFFSET: u8 = b'o';
const CLUSTER: &[u8] = b"mcluster";
const SAVED: &[u8] = b"msaved";

pub struct ViewDb {
    /// Dropped by hand, before a temporary directory is removed.
    db: std::mem::ManuallyDrop<DB>,
    path: PathBuf,
    /// Removed when the view is dropped (a view without `--view-dir`).
    temporary: bool,
}

fn db_key(kind: u8, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(kind);
    k.extend_from_slice(key.as_bytes());
    k
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![OFFSET];
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl ViewDb {
    /// Opens (creating if needed) the view's database at `path`, or in a new temporary directory
    /// removed on drop; `cache_mb` bounds the block cache.
    pub fn open(path: Option<&Path>, cache_mb: usize) -> anyhow::Result<ViewDb> {
        let (path, temporary) = match path {
            Some(p) => (p.to_path_buf(), false),
            None => (temporary_dir()?, true),
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(16 << 20);
        opts.set_max_write_buffer_number(2);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(cache_mb << 20));
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, &path).with_context(|| format!("opening the query view's RocksDB at {}", path.display()))?;
        Ok(ViewDb { db: std::mem::ManuallyDrop::new(db), path, temporary })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, kind: u8, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.db.get(db_key(kind, key))?)
    }

    /// Writes (or with `None` deletes) a record and its partition's next offset, together.
    pub fn put(&self, kind: u8, key: &str, value: Option<&[u8]>, read: Option<(&str, i32, i64)>) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        match value {
            Some(v) => batch.put(db_key(kind, key), v),
            None => batch.delete(db_key(kind, key)),
        }
        if let Some((topic, partition, offset)) = read {
            batch.put(offset_key(topic, partition), (offset + 1).to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Notes a record read that changes nothing kept here (another topic's, or refused).
    pub fn read(&self, topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(offset_key(topic, partition), (offset + 1).to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Each key (without its kind byte) and value of a kind whose key starts with `prefix`, in
    /// key order, from just after `after` (a full key) when given, while `f` returns true.
    pub fn scan(&self, kind: u8, prefix: &str, after: Option<&str>, mut f: impl FnMut(&str, &[u8]) -> bool) -> anyhow::Result<()> {
        let start = db_key(kind, after.unwrap_or(prefix));
        let want = db_key(kind, prefix);
        for item in self.db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&want) {
                break;
            }
            if after.is_some() && *k == *start {
                continue;
            }
            let key = std::str::from_utf8(&k[1..]).context("a view key that is not UTF-8")?;
            if !f(key, &v) {
                break;
            }
        }
        Ok(())
    }

    /// The next offset to read per (topic, partition), as kept with the records.
    pub fn offsets(&self) -> anyhow::Result<Vec<(String, i32, i64)>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator([OFFSET]) {
            let (k, v) = item?;
            if k.first() != Some(&OFFSET) {
                break;
            }
            let Some(nul) = k.iter().position(|b| *b == 0) else { continue };
            let (Ok(p), Ok(o)) = (k[nul + 1..].try_into().map(i32::from_be_bytes), (*v).try_into().map(i64::from_be_bytes)) else {
                continue;
            };
            out.push((String::from_utf8_lossy(&k[1..nul]).into_owned(), p, o));
        }
        Ok(out)
    }

    /// Notes that the view has now read the topics to their end. Without the write-ahead log, like
    /// the records: after a crash the time kept is never newer than the records kept.
    pub fn mark_caught_up(&self) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(SAVED, schemas::time::now_ms().to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// The cluster the records came from and when the view last had read the topics to their end.
    pub fn origin(&self) -> anyhow::Result<(Option<String>, Option<i64>)> {
        let cluster = self.db.get(CLUSTER)?.map(|c| String::from_utf8_lossy(&c).into_owned());
        let saved = self.db.get(SAVED)?.and_then(|v| v.try_into().ok().map(i64::from_be_bytes));
        Ok((cluster, saved))
    }

    /// Forgets everything (records of another cluster, or too old to trust) and notes the
    /// cluster the next records come from; on disk before it returns, so a crash cannot bring
    /// back the old records under the new cluster's name.
    pub fn clear(&self, cluster: Option<&str>) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8; 9][..]);
        if let Some(c) = cluster {
            batch.put(CLUSTER, c);
        }
        self.db.write(batch)?;
        self.db.flush()?;
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }
}

impl Drop for ViewDb {
    fn drop(&mut self) {
        if !self.temporary {
            let _ = self.db.flush();
        }
        // SAFETY: `db` is not used again: this is the end of the value.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.db) };
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `<temp>/zcdp-view-<pid>-<n>`, new; directories of earlier processes that are gone are removed.
fn temporary_dir() -> anyhow::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = std::env::temp_dir();
    let pid = std::process::id();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("zcdp-view-")) else { continue };
            let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if owner != pid && !Path::new(&format!("/proc/{owner}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(base.join(format!("zcdp-view-{pid}-{n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_offsets_survive_a_reopen_and_scans_page_in_user_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = ViewDb::open(Some(dir.path()), 8).unwrap();
            for u in ["u3", "u1", "u2", "u10"] {
                db.put(AUDIENCE, &format!("shop/vip/{u}"), Some(u.as_bytes()), Some(("zmp.audiences.v1", 2, 40))).unwrap();
            }
            db.put(AUDIENCE, "shop/vipx/u9", Some(b"other segment"), None).unwrap();
            db.put(PROFILE, "shop/u1", Some(b"p"), Some(("zmp.profiles.v1", 0, 7))).unwrap();
            db.put(PROFILE, "shop/u1", None, Some(("zmp.profiles.v1", 0, 8))).unwrap();
        }
        {
            let db = ViewDb::open(Some(dir.path()), 8).unwrap();
            db.clear(Some("c0")).unwrap();
            assert!(db.offsets().unwrap().is_empty());
            db.put(AUDIENCE, "shop/vipx/u9", Some(b"other segment"), None).unwrap();
            for u in ["u3", "u1", "u2", "u10"] {
                db.put(AUDIENCE, &format!("shop/vip/{u}"), Some(u.as_bytes()), Some(("zmp.audiences.v1", 2, 40))).unwrap();
            }
            db.put(PROFILE, "shop/u1", Some(b"p"), Some(("zmp.profiles.v1", 0, 7))).unwrap();
            db.put(PROFILE, "shop/u1", None, Some(("zmp.profiles.v1", 0, 8))).unwrap();
        }
        let db = ViewDb::open(Some(dir.path()), 8).unwrap();
        let mut seen = Vec::new();
        db.scan(AUDIENCE, "shop/vip/", None, |k, _| {
            seen.push(k.to_string());
            true
        })
        .unwrap();
        assert_eq!(seen, ["shop/vip/u1", "shop/vip/u10", "shop/vip/u2", "shop/vip/u3"]);
        let mut page = Vec::new();
        db.scan(AUDIENCE, "shop/vip/", Some("shop/vip/u10"), |k, _| {
            page.push(k.to_string());
            page.len() < 1
        })
        .unwrap();
        assert_eq!(page, ["shop/vip/u2"]);
        assert_eq!(db.get(PROFILE, "shop/u1").unwrap(), None);
        let mut offsets = db.offsets().unwrap();
        offsets.sort();
        assert_eq!(offsets, [("zmp.audiences.v1".to_string(), 2, 41), ("zmp.profiles.v1".to_string(), 0, 9)]);
        assert_eq!(db.origin().unwrap().0.as_deref(), Some("c0"));
        db.clear(Some("c1")).unwrap();
        assert_eq!(db.origin().unwrap().0.as_deref(), Some("c1"));
        assert!(db.offsets().unwrap().is_empty());
        assert_eq!(db.get(AUDIENCE, "shop/vip/u1").unwrap(), None);
    }

    #[test]
    fn a_temporary_view_leaves_nothing_behind() {
        let db = ViewDb::open(None, 8).unwrap();
        let path = db.path().to_path_buf();
        db.put(PROFILE, "a/b", Some(b"x"), None).unwrap();
        assert!(path.exists());
        drop(db);
        assert!(!path.exists());
    }
}
