//! Checkpoints, restore, and the changelog topics they live in.
//!
//! At every commit a task writes, in this order: its outputs and its store changes (to each
//! store's changelog), waits for Kafka to acknowledge them, then writes a checkpoint to the
//! checkpoint changelog: the input offsets the state reflects, and where each store's changelog
//! ends. Only then does it write the same checkpoint, with the changes, to RocksDB in one batch,
//! and commit the input offsets.
//!
//! So the last checkpoint in Kafka always describes a complete state: replaying each store's
//! changelog up to the checkpoint's end gives it exactly. Changelog records after that end belong
//! to a commit that never finished (the member died mid-way); restore reads their keys and the
//! next commit overwrites each with its true value (or a tombstone), so they never leak into a
//! later checkpoint's range.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use schemas::kafka::Kafka;

use super::metrics::METRICS;
use super::store::{Change, DEDUP_BATCH_PREFIX, STORE_DEDUP, TaskDb, dedup_batch_entries};
use super::topology::Topology;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Commits of this task so far, by any member.
    pub epoch: u64,
    /// A random id of the commit that wrote this checkpoint.
    pub attempt: String,
    /// Input topic → the next offset to process.
    pub inputs: BTreeMap<String, i64>,
    /// Store → the offset after its last committed changelog record.
    pub ends: BTreeMap<String, i64>,
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoint serialises")
    }
    pub fn from_bytes(b: &[u8]) -> anyhow::Result<Checkpoint> {
        serde_json::from_slice(b).context("corrupt checkpoint")
    }
}

pub fn changelog_topic(app: &str, store: &str) -> String {
    format!("zcdp.{app}.{store}.changelog")
}

pub fn checkpoint_topic(app: &str) -> String {
    format!("zcdp.{app}.checkpoints.changelog")
}

/// The key of every checkpoint record: compaction keeps only the latest.
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// A task's state, ready to run.
pub struct Restored {
    pub db: TaskDb,
    pub checkpoint: Checkpoint,
    /// Keys written by a commit that never finished: the next commit must rewrite them.
    pub compensation: Vec<Change>,
    /// What the replays read and applied.
    pub replayed: Replayed,
    pub elapsed: Duration,
    /// (low, high) watermarks of the task's input partitions when the restore ended, so the task
    /// knows from its first moment which inputs have records waiting.
    pub input_watermarks: Vec<Option<(i64, i64)>>,
}

fn reader(kafka: &Kafka) -> anyhow::Result<BaseConsumer> {
    Ok(kafka
        .client_config()
        .set("group.id", "zcdp-restore")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.min.messages", "200000")
        .set("fetch.wait.max.ms", "20")
        .create()?)
}

/// The latest checkpoint of a task in Kafka, if it ever committed.
fn latest_checkpoint(consumer: &BaseConsumer, topic: &str, task: i32) -> anyhow::Result<Option<Checkpoint>> {
    let (low, high) =
        consumer.fetch_watermarks(topic, task, Duration::from_secs(10)).with_context(|| format!("watermarks of {topic}/{task}"))?;
    if high <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, task, Offset::Offset(high - 1))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut latest = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(p) = m.payload() {
                    latest = Some(Checkpoint::from_bytes(p)?);
                }
                if m.offset() >= high - 1 {
                    return Ok(latest);
                }
            }
            Some(Err(e)) => bail!("reading {topic}/{task}: {e}"),
            None => {}
        }
    }
    bail!("could not read the checkpoint of task {task} from {topic} within 30 s")
}

/// What a replay read and applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Changelog records read.
    pub records: u64,
    /// State entries written (a dedup batch record holds many).
    pub entries: u64,
    /// Key and value bytes read.
    pub bytes: u64,
}

impl std::ops::AddAssign for Replayed {
    fn add_assign(&mut self, o: Replayed) {
        self.records += o.records;
        self.entries += o.entries;
        self.bytes += o.bytes;
    }
}

/// The state changes one changelog record makes: itself, but for a dedup batch its entries. A
/// batch's tombstone changes nothing: a batch of an unfinished commit is undone id by id (each
/// of its ids is a leftover, rewritten by the next commit), and the tombstone only lets
/// compaction drop the batch.
fn changes_of(store: &'static str, key: Vec<u8>, value: Option<&[u8]>, out: &mut Vec<Change>) -> anyhow::Result<()> {
    if store != STORE_DEDUP || !key.starts_with(DEDUP_BATCH_PREFIX) {
        out.push(Change { store, key, value: value.map(<[u8]>::to_vec) });
        return Ok(());
    }
    if let Some(v) = value {
        out.extend(dedup_batch_entries(v)?.into_iter().map(|(id, seen)| Change { store, key: id, value: Some(seen) }));
    }
    Ok(())
}

/// Replays `[from, to)` of a changelog partition into the store, and returns the keys of records
/// at `to` and beyond (up to the end as of now): leftovers of an unfinished commit.
fn replay(
    consumer: &BaseConsumer,
    db: &TaskDb,
    store: &'static str,
    topic: &str,
    task: i32,
    from: i64,
    to: i64,
    cancel: &AtomicBool,
    remaining: &prometheus::IntGauge,
) -> anyhow::Result<(Replayed, BTreeSet<Vec<u8>>)> {
    let (low, high) =
        consumer.fetch_watermarks(topic, task, Duration::from_secs(10)).with_context(|| format!("watermarks of {topic}/{task}"))?;
    let start = from.max(low);
    let mut leftovers = BTreeSet::new();
    if start >= high {
        return Ok((Replayed::default(), leftovers));
    }
    remaining.add(to.saturating_sub(start).max(0));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, task, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let mut batch: Vec<Change> = Vec::with_capacity(10_000);
    // Records read into `batch` and not yet written.
    let mut pending = 0u64;
    let mut applied = Replayed::default();
    let mut idle_since = Instant::now();
    loop {
        if cancel.load(Ordering::Acquire) {
            bail!("restore of task {task} cancelled");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let key = m.key().unwrap_or_default().to_vec();
                if m.offset() < to {
                    applied.records += 1;
                    applied.bytes += (key.len() + m.payload().map_or(0, <[u8]>::len)) as u64;
                    let before = batch.len();
                    changes_of(store, key, m.payload(), &mut batch).with_context(|| format!("{topic}/{task} at {}", m.offset()))?;
                    applied.entries += (batch.len() - before) as u64;
                    pending += 1;
                    if batch.len() >= 10_000 {
                        db.write(&batch, None, false)?;
                        remaining.sub(pending as i64);
                        METRICS.restore_records.inc_by(pending);
                        batch.clear();
                        pending = 0;
                    }
                } else {
                    // A dedup batch of the unfinished commit: each of its ids is a leftover, so
                    // the next commit writes each id's committed value (mostly a tombstone).
                    if store == STORE_DEDUP
                        && key.starts_with(DEDUP_BATCH_PREFIX)
                        && let Some(v) = m.payload()
                    {
                        for (id, _) in dedup_batch_entries(v).with_context(|| format!("{topic}/{task} at {}", m.offset()))? {
                            leftovers.insert(id);
                        }
                    }
                    leftovers.insert(key);
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(e)) => bail!("reading {topic}/{task}: {e}"),
            None if idle_since.elapsed() > Duration::from_secs(30) => {
                bail!("{topic}/{task}: no records for 30 s while restoring (high watermark {high})")
            }
            None => {}
        }
    }
    db.write(&batch, None, false)?;
    remaining.sub(pending as i64);
    METRICS.restore_records.inc_by(pending);
    Ok((applied, leftovers))
}

/// Brings a task's local store to its latest checkpoint in Kafka. Runs on its own thread, off
/// the poll loop; the task's inputs stay paused meanwhile.
pub fn restore(
    kafka: &Kafka,
    app: &str,
    task: i32,
    dir: &Path,
    stores: &[&'static str],
    inputs: &[&str],
    cancel: &AtomicBool,
) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let consumer = reader(kafka)?;
    let remote = latest_checkpoint(&consumer, &checkpoint_topic(app), task)?;
    tracing::debug!(task, ms = started.elapsed().as_millis() as u64, "restore: checkpoint read");
    let mut db = TaskDb::open(dir, stores)?;
    let local = db.checkpoint()?.map(|b| Checkpoint::from_bytes(&b)).transpose()?;

    // Decide what the local store is worth.
    let keep_local = match (&local, &remote) {
        (Some(l), Some(r)) => l.attempt == r.attempt || l.epoch < r.epoch,
        (Some(_), None) => false, // a store from another cluster (or a wiped one): start over
        (None, _) => true,        // empty
    };
    if !keep_local {
        tracing::warn!(task, dir = %dir.display(), "local state does not match the checkpoint in Kafka; rebuilding it from the changelogs");
        drop(db);
        TaskDb::destroy(dir)?;
        db = TaskDb::open(dir, stores)?;
    }
    let local = if keep_local { local } else { None };
    let remaining = METRICS.restore_remaining.with_label_values(&[&task.to_string()]);
    remaining.set(0);

    let mut replayed = Replayed::default();
    let mut compensation = Vec::new();
    for &store in stores {
        let topic = changelog_topic(app, store);
        let from = local.as_ref().and_then(|l| l.ends.get(store).copied()).unwrap_or(0);
        let to = remote.as_ref().and_then(|r| r.ends.get(store).copied()).unwrap_or(0);
        let up_to_date = local.is_some() && local.as_ref().map(|l| &l.attempt) == remote.as_ref().map(|r| &r.attempt);
        let (n, leftovers) = replay(&consumer, &db, store, &topic, task, if up_to_date { to } else { from }, to, cancel, &remaining)?;
        replayed += n;
        tracing::debug!(
            task,
            store,
            ms = started.elapsed().as_millis() as u64,
            records = n.records,
            entries = n.entries,
            "restore: store replayed"
        );
        for key in leftovers {
            let value = db.get(store, &key)?;
            compensation.push(Change { store, key, value });
        }
    }
    let checkpoint = remote.unwrap_or_default();
    db.write(&[], Some(&checkpoint.to_bytes()), true)?;
    db.flush_all(stores)?;
    remaining.set(0);
    if !compensation.is_empty() {
        tracing::info!(task, keys = compensation.len(), "changelog records of an unfinished commit will be overwritten");
    }
    let input_watermarks = inputs.iter().map(|t| consumer.fetch_watermarks(*t, task, Duration::from_secs(10)).ok()).collect();
    Ok(Restored { db, checkpoint, compensation, replayed, elapsed: started.elapsed(), input_watermarks })
}

/// Creates the changelog topic of every store of the topology and the checkpoint topic, one
/// partition per task, and checks that existing ones have that many.
pub async fn ensure_changelogs(kafka: &Kafka, app: &str, topology: &Topology, partitions: i32) -> anyhow::Result<()> {
    let stores = topology.stores();
    for s in stores {
        let topic = changelog_topic(app, s);
        let retention = (*s == STORE_DEDUP).then_some(3 * 24 * 3600 * 1000);
        kafka.ensure_changelog(&topic, partitions, retention).await?;
    }
    kafka.ensure_changelog(&checkpoint_topic(app), partitions, None).await?;
    let mut names: Vec<String> = stores.iter().map(|s| changelog_topic(app, s)).collect();
    names.push(checkpoint_topic(app));
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for (name, c) in name_refs.iter().zip(kafka.partition_counts(&name_refs).await?) {
        if c != Some(partitions) {
            bail!(
                "changelog {name} has {} partitions but the inputs have {partitions}; one partition per task is required",
                c.unwrap_or(0)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::store::dedup_batches;

    fn entry(id: &str, seen: i64) -> Change {
        Change { store: STORE_DEDUP, key: id.as_bytes().to_vec(), value: Some(seen.to_be_bytes().to_vec()) }
    }

    /// A commit's event ids go to the changelog as a few batch records, and a replay gives back
    /// one entry an id; a batch's tombstone changes nothing (the ids of an unfinished commit are
    /// undone one by one: see `restore`).
    #[test]
    fn dedup_batches_replay_to_their_entries() {
        let committed: Vec<Change> = (0..3).map(|i| entry(&format!("demo\u{1f}e{i}"), 100 + i)).collect();
        let batches = dedup_batches(&committed);
        assert_eq!(batches.len(), 1);
        let mut out = Vec::new();
        changes_of(STORE_DEDUP, batches[0].key.clone(), batches[0].value.as_deref(), &mut out).unwrap();
        changes_of(STORE_DEDUP, batches[0].key.clone(), None, &mut out).unwrap();
        assert_eq!(out, committed);
        // Records of other stores, and per-id dedup records of an older version, are themselves.
        let mut out = Vec::new();
        changes_of("profiles", b"k".to_vec(), Some(b"v"), &mut out).unwrap();
        changes_of(STORE_DEDUP, b"demo\x1fold".to_vec(), Some(&7i64.to_be_bytes()), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], entry("demo\u{1f}old", 7));
    }

    /// Batches stay under their byte limit, whatever a commit holds.
    #[test]
    fn a_large_commit_makes_several_batches_under_the_limit() {
        let many: Vec<Change> = (0..20_000).map(|i| entry(&format!("demo\u{1f}{}", uuid::Uuid::from_u128(i)), i as i64)).collect();
        let batches = dedup_batches(&many);
        assert!(batches.len() >= 4, "{}", batches.len());
        let mut back = Vec::new();
        for b in &batches {
            assert!(b.value.as_ref().unwrap().len() <= crate::runtime::store::DEDUP_BATCH_MAX_BYTES);
            back.extend(crate::runtime::store::dedup_batch_entries(b.value.as_ref().unwrap()).unwrap());
        }
        assert_eq!(back.len(), many.len());
        assert_eq!(back[19_999].0, many[19_999].key);
    }
}
