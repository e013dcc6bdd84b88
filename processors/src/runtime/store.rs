//! A task's local state: one RocksDB with a column family per store, and the in-memory layer in
//! front of it.
//!
//! Nothing a record changes is written to RocksDB when the record is processed. Changes collect
//! in memory (decoded, so a hot user costs no (de)serialisation) and go to disk at commit, in one
//! WriteBatch with the input offsets and changelog positions they correspond to. The local store
//! therefore always equals the state at a commit: a crash can only lose an uncommitted epoch,
//! which is reprocessed from the committed offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use schemas::time::now_ms;

/// Per-record maps: keys come from clients, so the hasher is seeded; foldhash is several times
/// faster than SipHash on short keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Column family of the task's checkpoint (input offsets, changelog positions, epoch).
pub const CF_META: &str = "_meta";
/// Column family of seen event ids.
pub const STORE_DEDUP: &str = "dedup";

/// How long an event id is remembered (processing time).
pub const DEDUP_TTL_MS: i64 = 24 * 3600 * 1000;

/// One change to a store, as written to RocksDB and to the store's changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub store: &'static str,
    pub key: Vec<u8>,
    /// None deletes the key (a tombstone in the changelog).
    pub value: Option<Vec<u8>>,
}

pub struct TaskDb {
    db: DB,
    path: PathBuf,
}

impl TaskDb {
    /// Opens (creating if needed) the task's database with a column family per store.
    pub fn open(path: &Path, stores: &[&'static str]) -> anyhow::Result<TaskDb> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let mut cfs = vec![ColumnFamilyDescriptor::new(CF_META, Options::default())];
        for &store in stores {
            let mut cf = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            cf.set_block_based_table_factory(&table);
            if store == STORE_DEDUP {
                // Ids older than twice the TTL go at compaction; lookups check the age anyway.
                cf.set_compaction_filter("dedup-ttl", |_level: u32, _key: &[u8], value: &[u8]| {
                    match value.try_into().map(i64::from_be_bytes) {
                        Ok(seen) if now_ms() - seen > 2 * DEDUP_TTL_MS => rocksdb::CompactionDecision::Remove,
                        _ => rocksdb::CompactionDecision::Keep,
                    }
                });
            }
            cfs.push(ColumnFamilyDescriptor::new(store, cf));
        }
        // Column families of stores this version no longer has (an older version's timers, say)
        // must still be opened for RocksDB to open the database; they are left alone.
        for old in DB::list_cf(&opts, path).unwrap_or_default() {
            if old != "default" && old != CF_META && !stores.contains(&old.as_str()) {
                cfs.push(ColumnFamilyDescriptor::new(old, Options::default()));
            }
        }
        let db = DB::open_cf_descriptors(&opts, path, cfs).with_context(|| format!("opening RocksDB at {}", path.display()))?;
        Ok(TaskDb { db, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, store: &str) -> anyhow::Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(store).with_context(|| format!("no column family {store}"))
    }

    pub fn get(&self, store: &str, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(store)?, key)?)
    }

    /// Every key and value of a store, in key order.
    pub fn scan(&self, store: &str) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(store)?, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Applies changes (and optionally the checkpoint) atomically.
    pub fn write(&self, changes: &[Change], checkpoint: Option<&[u8]>, wal: bool) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        // In key order per store: the memtable's skip list inserts ascending keys far faster
        // than random ones. For a key changed twice, the later change must still win, so the
        // sort is stable.
        let mut order: Vec<&Change> = changes.iter().collect();
        order.sort_by(|a, b| (a.store, &a.key).cmp(&(b.store, &b.key)));
        for c in order {
            let cf = self.cf(c.store)?;
            match &c.value {
                Some(v) => batch.put_cf(cf, &c.key, v),
                None => batch.delete_cf(cf, &c.key),
            }
        }
        if let Some(cp) = checkpoint {
            batch.put_cf(self.cf(CF_META)?, b"checkpoint", cp);
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(!wal);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    pub fn checkpoint(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.get(CF_META, b"checkpoint")
    }

    /// Makes writes done without the WAL durable.
    pub fn flush_all(&self, stores: &[&'static str]) -> anyhow::Result<()> {
        for s in stores {
            self.db.flush_cf(self.cf(s)?)?;
        }
        self.db.flush_cf(self.cf(CF_META)?)?;
        Ok(())
    }

    pub fn estimate_keys(&self, store: &str) -> u64 {
        self.cf(store).ok().and_then(|cf| self.db.property_int_value_cf(cf, "rocksdb.estimate-num-keys").ok().flatten()).unwrap_or(0)
    }

    /// Deletes the database files (the task will restore from its changelogs).
    pub fn destroy(path: &Path) -> anyhow::Result<()> {
        if path.exists() {
            std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Decoded values of one store for the keys the task has touched, with what changed since the
/// last commit.
pub struct KvCache<V> {
    store: &'static str,
    entries: FastMap<Vec<u8>, Slot<V>>,
}

struct Slot<V> {
    value: Option<V>,
    /// Changed since the last commit.
    dirty: bool,
    /// Changed since the processor last wrote its output for the key ([`KvCache::emit_changed`]).
    unemitted: bool,
}

impl<V: Serialize + DeserializeOwned> KvCache<V> {
    pub fn new(store: &'static str) -> KvCache<V> {
        KvCache { store, entries: FastMap::default() }
    }

    pub fn store(&self) -> &'static str {
        self.store
    }

    fn decode(&self, bytes: &[u8]) -> anyhow::Result<V> {
        postcard::from_bytes(bytes)
            .with_context(|| format!("corrupt value in store {} (delete the task's data dir to restore it from the changelog)", self.store))
    }

    fn load(&mut self, db: &TaskDb, key: &[u8]) -> anyhow::Result<&mut Slot<V>> {
        if !self.entries.contains_key(key) {
            let value = match db.get(self.store, key)? {
                Some(bytes) => Some(self.decode(&bytes)?),
                None => None,
            };
            self.entries.insert(key.to_vec(), Slot { value, dirty: false, unemitted: false });
        }
        Ok(self.entries.get_mut(key).expect("just inserted"))
    }

    /// Every committed key and value of the store, read from RocksDB (not from the cache).
    pub fn committed(&self, db: &TaskDb) -> anyhow::Result<Vec<(Vec<u8>, V)>> {
        db.scan(self.store)?.into_iter().map(|(k, v)| Ok((k, self.decode(&v)?))).collect()
    }

    /// The value for `key`, to change; marks it dirty (and not emitted).
    pub fn entry(&mut self, db: &TaskDb, key: &[u8]) -> anyhow::Result<&mut Option<V>> {
        let slot = self.load(db, key)?;
        slot.dirty = true;
        slot.unemitted = true;
        Ok(&mut slot.value)
    }

    /// Calls `f` with every key changed since the last call (and its value, None if deleted),
    /// and marks them emitted. Every such key is dirty too, so nothing changed is missed before
    /// a commit that calls it first.
    pub fn emit_changed(&mut self, mut f: impl FnMut(&[u8], Option<&V>) -> anyhow::Result<()>) -> anyhow::Result<()> {
        for (key, slot) in self.entries.iter_mut().filter(|(_, s)| s.unemitted) {
            f(key, slot.value.as_ref())?;
            slot.unemitted = false;
        }
        Ok(())
    }

    pub fn get(&mut self, db: &TaskDb, key: &[u8]) -> anyhow::Result<Option<&V>> {
        Ok(self.load(db, key)?.value.as_ref())
    }

    /// Keys changed since the last commit.
    pub fn dirty_keys(&self) -> impl Iterator<Item = (&Vec<u8>, Option<&V>)> {
        self.entries.iter().filter(|(_, s)| s.dirty).map(|(k, s)| (k, s.value.as_ref()))
    }

    /// Serialises what changed since the last commit, and marks it clean.
    pub fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
        for (key, slot) in self.entries.iter_mut().filter(|(_, s)| s.dirty) {
            let value = match &slot.value {
                Some(v) => Some(postcard::to_allocvec(v)?),
                None => None,
            };
            out.push(Change { store: self.store, key: key.clone(), value });
            slot.dirty = false;
        }
        Ok(())
    }

    /// Forgets clean entries once the cache holds more than `max`; they reload from RocksDB.
    pub fn trim(&mut self, max: usize) {
        if self.entries.len() > max {
            self.entries.retain(|_, s| s.dirty);
        }
    }
}

/// Event ids seen in the last 24 hours: a client's retry of an event is counted once.
#[derive(Default)]
pub struct Dedup {
    fresh: FastMap<Vec<u8>, i64>,
}

impl Dedup {
    /// True when the id was seen within the TTL; otherwise remembers it and returns false.
    /// `now` is the wall clock in epoch ms (read once per batch of records by the caller).
    pub fn seen(&mut self, db: &TaskDb, key: &[u8], now: i64) -> anyhow::Result<bool> {
        if self.fresh.contains_key(key) {
            return Ok(true);
        }
        if let Some(v) = db.get(STORE_DEDUP, key)?
            && let Ok(b) = <[u8; 8]>::try_from(v.as_slice())
            && now - i64::from_be_bytes(b) < DEDUP_TTL_MS
        {
            return Ok(true);
        }
        self.fresh.insert(key.to_vec(), now);
        Ok(false)
    }

    pub fn take_dirty(&mut self, out: &mut Vec<Change>) {
        for (key, seen) in self.fresh.drain() {
            out.push(Change { store: STORE_DEDUP, key, value: Some(seen.to_be_bytes().to_vec()) });
        }
    }
}

/// The key prefix of a dedup changelog batch: the event ids a commit saw go to the changelog
/// together, a few records a commit, not one record an event (RocksDB still keeps one entry an
/// id). Ids begin with their app id, which holds no control character, so no id has this prefix.
pub const DEDUP_BATCH_PREFIX: &[u8] = b"\0batch/";

/// The largest dedup batch value (well under the record limit).
pub const DEDUP_BATCH_MAX_BYTES: usize = 256 * 1024;

/// The changelog records of a commit's dedup entries: batches keyed by a fresh random id, each
/// value the entries one after another: key length (u16, big-endian), key, seen-at (8 bytes).
/// An entry that does not fit that shape (none does today) goes as its own record.
pub fn dedup_batches<'a>(entries: impl IntoIterator<Item = &'a Change>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let flush = |value: &mut Vec<u8>, out: &mut Vec<Change>| {
        if !value.is_empty() {
            let mut key = DEDUP_BATCH_PREFIX.to_vec();
            key.extend_from_slice(uuid::Uuid::new_v4().simple().to_string().as_bytes());
            out.push(Change { store: STORE_DEDUP, key, value: Some(std::mem::take(value)) });
        }
    };
    for e in entries {
        let (Some(seen), Ok(len)) = (e.value.as_deref().filter(|v| v.len() == 8), u16::try_from(e.key.len())) else {
            out.push(e.clone());
            continue;
        };
        if value.len() + 2 + e.key.len() + seen.len() > DEDUP_BATCH_MAX_BYTES {
            flush(&mut value, &mut out);
        }
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(&e.key);
        value.extend_from_slice(seen);
    }
    flush(&mut value, &mut out);
    out
}

/// The entries of a [`dedup_batches`] value, as (key, seen-at bytes).
pub fn dedup_batch_entries(value: &[u8]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 2, "a dedup batch cut short");
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        anyhow::ensure!(rest.len() >= 2 + len + 8, "a dedup batch cut short");
        out.push((rest[2..2 + len].to_vec(), rest[2 + len..2 + len + 8].to_vec()));
        rest = &rest[2 + len + 8..];
    }
    Ok(out)
}
