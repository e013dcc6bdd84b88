//! A consumer-group member: subscribes to the co-partitioned inputs with the range assignor (so
//! partition p of every input comes to the same member), runs the tasks it is given, and commits
//! them every `--commit-interval`, on revoke and on shutdown.
//!
//! One thread polls and processes. The rebalance callbacks stay short: an assignment only pauses
//! the new partitions and notes them; the tasks restore on their own threads while the member
//! keeps processing its other tasks, and resume when their state is complete. A revoke commits
//! the tasks (flush, checkpoint, offsets) before their partitions go to another member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Message, Offset, TopicPartitionList};

use schemas::event::DeadLetter;
use schemas::kafka::Kafka;
use schemas::time::now_ms;
use schemas::topics::Topic;

use super::checkpoint::{CHECKPOINT_KEY, Restored, changelog_topic, checkpoint_topic, ensure_changelogs, restore};
use super::metrics::METRICS;
use super::output::{MAX_RECORD_BYTES, OutputProducer};
use super::processor::split_user_key;
use super::task::{INPUTS, Lag, Position, Task, Watermarks, input_index};
use super::topology::Topology;
use crate::config::ProcessArgs;

/// Buffered records per input partition above which the partition is paused.
const BUFFER_HIGH: usize = 5_000;
const BUFFER_LOW: usize = 1_000;

/// Every input offset is committed again this often even when it has not moved, so a commit
/// that was lost without a failure report cannot leave the group's offsets behind for good.
const RECOMMIT_EVERY: Duration = Duration::from_secs(5);

/// An input partition known to hold records past the task's position, from which nothing has
/// arrived for this long, is sought again to wake librdkafka's fetcher for it.
const FETCH_STALL: Duration = Duration::from_secs(15);

/// What happened to a task on a member; tests use it to check that no task ever runs on two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    Started,
    Stopped,
}

pub type TaskObserver = Arc<dyn Fn(&str, i32, TaskEvent) + Send + Sync>;

struct Restoring {
    cancel: Arc<AtomicBool>,
    done: mpsc::Receiver<anyhow::Result<Restored>>,
    thread: Option<JoinHandle<()>>,
}

struct Engine {
    kafka: Kafka,
    args: ProcessArgs,
    name: String,
    topology: Topology,
    producer: Arc<OutputProducer>,
    tasks: BTreeMap<i32, Task>,
    restoring: HashMap<i32, Restoring>,
    /// Assignment handed over by the callback, for the loop to act on.
    new_assignment: Option<BTreeSet<i32>>,
    flow_paused: BTreeSet<(usize, i32)>,
    last_commit: Instant,
    /// When the processors last emitted what changed ([`super::task::Task::emit`]).
    last_emit: Instant,
    /// Offsets last handed to the group coordinator, per input partition.
    committed: HashMap<(Topic, i32), i64>,
    /// When `committed` was last emptied, so every offset is sent again.
    recommitted: Instant,
    /// Per (input, task): the position at which the task started waiting for records that Kafka
    /// has and that have not arrived, and since when.
    waiting_fetch: HashMap<(usize, i32), (i64, Instant)>,
    last_fetch_watch: Instant,
    fatal: Option<anyhow::Error>,
    observer: Option<TaskObserver>,
}

struct MemberContext {
    engine: Arc<Mutex<Engine>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Harmless for the state (checkpoints hold the truth); commit again next interval.
            tracing::warn!(error = %e, "offset commit failed; retrying at the next commit");
            self.engine.lock().expect("engine lock").committed.clear();
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let mut e = self.engine.lock().expect("engine lock");
            if let Err(err) = e.revoke_all(consumer) {
                tracing::error!(error = format!("{err:#}"), "commit on revoke failed");
                e.fatal.get_or_insert(err);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Nothing is read from a new partition until its task has restored.
            if let Err(err) = consumer.pause(tpl) {
                tracing::error!(error = %err, "pausing newly assigned partitions");
            }
            let tasks: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let mut e = self.engine.lock().expect("engine lock");
            tracing::info!(member = %e.name, tasks = ?tasks, "assigned");
            e.new_assignment = Some(tasks);
        }
    }
}

/// The input topic names as C strings, made once.
static INPUT_NAMES: std::sync::LazyLock<Vec<CString>> =
    std::sync::LazyLock::new(|| INPUTS.iter().map(|t| CString::new(t.name()).expect("topic names have no NUL")).collect());

/// The watermarks librdkafka last saw for an input partition, without a network round trip.
fn cached_watermarks(consumer: &BaseConsumer<MemberContext>, input: usize, partition: i32) -> Option<(i64, i64)> {
    let topic = &INPUT_NAMES[input];
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic string outlives the
    // call; librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(consumer.client().native_ptr(), topic.as_ptr(), partition, &mut low, &mut high)
    };
    // librdkafka may not know the low watermark (-1) while it knows the high one.
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low.max(0), high))
}

impl Engine {
    fn task_dir(&self, task: i32) -> PathBuf {
        self.args.data_dir.join(&self.args.application_id).join(format!("task-{task}"))
    }

    fn notify(&self, task: i32, ev: TaskEvent) {
        if let Some(o) = &self.observer {
            o(&self.name, task, ev);
        }
    }

    /// Commits the given running tasks: outputs and changelogs acknowledged, then checkpoints,
    /// then local state, then offsets.
    fn commit(&mut self, consumer: &BaseConsumer<MemberContext>, ids: &[i32], mode: CommitMode) -> anyhow::Result<()> {
        if let Some(e) = &self.fatal {
            bail!("not committing after an earlier failure: {e:#}");
        }
        let started = Instant::now();
        let app = self.args.application_id.clone();
        let mut prepared = Vec::new();
        for id in ids {
            let Some(task) = self.tasks.get_mut(id) else { continue };
            if !task.dirty() {
                continue;
            }
            let p = task.prepare_commit()?;
            for c in &p.refused {
                let bytes = c.value.as_ref().map_or(0, Vec::len);
                METRICS.bounded.with_label_values(&[c.store, "record_bytes"]).inc();
                tracing::warn!(store = c.store, task = id, bytes, key = %key_digest(&c.key), "a state value over the record limit was not written; the key keeps its committed value");
                let app = split_user_key(&c.key).map(|(app, _)| app.to_string());
                let reason = format!(
                    "a change of {bytes} bytes to store {} is over the {MAX_RECORD_BYTES}-byte record limit; the key keeps its committed value",
                    c.store
                );
                dead_letter(&self.producer, format!("processor:{}/{id}", c.store), app, "state_too_large", reason, c.key.clone())?;
            }
            send_outputs(&self.producer, task)?;
            for c in p.changelog() {
                self.producer.send(&changelog_topic(&app, c.store), Some(*id), &c.key, c.value.as_deref())?;
                METRICS.changelog_records.with_label_values(&[c.store]).inc();
                METRICS.changelog_bytes.with_label_values(&[c.store]).inc_by((c.key.len() + c.value.as_ref().map_or(0, Vec::len)) as u64);
            }
            prepared.push((*id, p));
        }
        if !prepared.is_empty() {
            self.write_checkpoints(prepared)?;
        }
        // Offsets of every task, dirty or not: a task restored from a checkpoint ahead of the
        // group's committed offsets must still bring them up to date.
        if self.recommitted.elapsed() >= RECOMMIT_EVERY {
            self.committed.clear();
            self.recommitted = Instant::now();
        }
        let mut tpl = TopicPartitionList::new();
        for (id, task) in self.tasks.iter().filter(|(id, _)| ids.contains(id)) {
            for (topic, offset) in task.committable() {
                if self.committed.get(&(topic, *id)) != Some(&offset) {
                    tpl.add_partition_offset(topic.name(), *id, Offset::Offset(offset))?;
                    self.committed.insert((topic, *id), offset);
                }
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, mode)
        {
            // The checkpoints hold the truth; the group's offsets only tell where to start reading.
            tracing::warn!(error = %e, "offset commit failed; retrying at the next commit");
            self.committed.clear();
        }
        METRICS.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Flushes what the prepared commits produced, writes their checkpoints to Kafka, then to
    /// the local stores.
    fn write_checkpoints(&mut self, prepared: Vec<(i32, super::task::Prepared)>) -> anyhow::Result<()> {
        let app = self.args.application_id.clone();
        self.producer.flush(Duration::from_secs(60)).context("flushing outputs and changelogs")?;
        let mut checkpoints = Vec::new();
        for (id, _) in &prepared {
            let task = &self.tasks[id];
            let ends: BTreeMap<String, i64> = self
                .topology
                .stores()
                .iter()
                .map(|s| {
                    let previous = task.checkpoint().ends.get(*s).copied().unwrap_or(0);
                    let written = self.producer.acked_end(&changelog_topic(&app, s), *id).unwrap_or(0);
                    (s.to_string(), previous.max(written))
                })
                .collect();
            let cp = task.next_checkpoint(ends);
            self.producer.send(&checkpoint_topic(&app), Some(*id), CHECKPOINT_KEY, Some(&cp.to_bytes()))?;
            checkpoints.push(cp);
        }
        self.producer.flush(Duration::from_secs(60)).context("flushing checkpoints")?;
        dead_letter_rejected(&self.producer)?;
        for ((id, p), cp) in prepared.into_iter().zip(checkpoints) {
            self.tasks.get_mut(&id).expect("prepared task").finish_commit(p, cp)?;
        }
        Ok(())
    }

    /// Commits and closes every task (a revoke takes them all with the range assignor).
    fn revoke_all(&mut self, consumer: &BaseConsumer<MemberContext>) -> anyhow::Result<()> {
        let ids: Vec<i32> = self.tasks.keys().copied().collect();
        let result = self.commit(consumer, &ids, CommitMode::Sync);
        for id in ids {
            self.tasks.remove(&id);
            self.notify(id, TaskEvent::Stopped);
        }
        self.committed.clear();
        for r in self.restoring.values() {
            r.cancel.store(true, Ordering::Release);
        }
        for (_, mut r) in self.restoring.drain() {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        self.flow_paused.clear();
        result
    }

    /// Starts restoring newly assigned tasks, each on its own thread.
    fn start_restores(&mut self, tasks: BTreeSet<i32>) {
        for id in tasks {
            if self.tasks.contains_key(&id) || self.restoring.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel();
            let cancel = Arc::new(AtomicBool::new(false));
            let (kafka, app, dir, stores, c) =
                (self.kafka.clone(), self.args.application_id.clone(), self.task_dir(id), self.topology.stores().to_vec(), cancel.clone());
            let thread = std::thread::Builder::new()
                .name(format!("restore-{id}"))
                .spawn(move || {
                    let inputs: Vec<&str> = INPUTS.iter().map(|t| t.name()).collect();
                    let _ = tx.send(restore(&kafka, &app, id, &dir, &stores, &inputs, &c));
                })
                .expect("spawn restore thread");
            self.restoring.insert(id, Restoring { cancel, done: rx, thread: Some(thread) });
        }
    }

    /// Turns finished restores into running tasks and resumes their inputs.
    fn finish_restores(&mut self, consumer: &BaseConsumer<MemberContext>) -> anyhow::Result<()> {
        let mut finished = Vec::new();
        for (id, r) in &self.restoring {
            if let Ok(res) = r.done.try_recv() {
                finished.push((*id, res));
            }
        }
        for (id, res) in finished {
            let mut r = self.restoring.remove(&id).expect("restoring");
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
            let restored = res.with_context(|| format!("restoring task {id}"))?;
            tracing::info!(
                member = %self.name,
                task = id,
                records = restored.replayed.records,
                entries = restored.replayed.entries,
                bytes = restored.replayed.bytes,
                secs = restored.elapsed.as_secs_f64(),
                "task restored"
            );
            let task = Task::new(id, restored, self.topology.processors(), self.args.state_cache)?;
            // Resume, then seek: a seek outdates what librdkafka was doing for the partition, so
            // a seek before the resume would have its offset lookup outdated by the resume and
            // retried only 500 ms later; and a resume alone does not wake librdkafka's fetcher,
            // which may sleep up to a second. The seek's offset lookup (a logical offset) or
            // leader-epoch check (an absolute one) wakes it. Records fetched before the seek are
            // dropped by librdkafka (older version), and the task skips offsets it has applied.
            let mut tpl = TopicPartitionList::new();
            for t in INPUTS {
                tpl.add_partition(t.name(), id);
            }
            consumer.resume(&tpl)?;
            for (i, t) in INPUTS.iter().enumerate() {
                let next = task.resume_offsets()[i];
                let offset = if next >= 0 { Offset::Offset(next) } else { Offset::Beginning };
                consumer.seek(t.name(), id, offset, Duration::from_secs(10)).with_context(|| format!("seeking {t}/{id}"))?;
            }
            tracing::debug!(member = %self.name, task = id, offsets = ?task.resume_offsets(), "task resumed");
            self.tasks.insert(id, task);
            self.notify(id, TaskEvent::Started);
        }
        METRICS.tasks.with_label_values(&["running"]).set(self.tasks.len() as i64);
        METRICS.tasks.with_label_values(&["restoring"]).set(self.restoring.len() as i64);
        Ok(())
    }

    /// Watermarks librdkafka has seen, or else those read when the task restored.
    fn watermarks(consumer: &BaseConsumer<MemberContext>, task: &Task) -> Watermarks {
        task.watermarks(|input| cached_watermarks(consumer, input, task.id))
    }

    /// One turn of the loop, after a poll.
    fn turn(&mut self, consumer: &BaseConsumer<MemberContext>, polled: Vec<Polled>) -> anyhow::Result<Busy> {
        if let Some(tasks) = self.new_assignment.take() {
            self.start_restores(tasks);
        }
        self.finish_restores(consumer)?;
        for p in polled {
            match p {
                Polled::Event { input, partition, offset, event } => {
                    if let Some(task) = self.tasks.get_mut(&partition) {
                        task.accept(input, offset, event);
                    }
                }
                Polled::Broken { topic, partition, offset, raw, error } => {
                    METRICS.undecodable.inc();
                    tracing::warn!(%topic, partition, offset, error, "undecodable input record sent to the dead-letter topic");
                    dead_letter(&self.producer, format!("processor:{topic}/{partition}@{offset}"), None, "undecodable", error, raw)?;
                }
            }
        }
        let mut worked = false;
        let now = now_ms();
        let emit = self.last_emit.elapsed() >= self.args.emit_interval;
        if emit {
            self.last_emit = Instant::now();
        }
        for task in self.tasks.values_mut() {
            let watermarks = Self::watermarks(consumer, task);
            let n = task.process(&watermarks, 20_000, self.args.max_task_idle, now)?;
            let fired = task.punctuate(&watermarks, self.args.timer_grace, now)?;
            worked |= n > 0 || fired > 0;
            if emit {
                task.emit()?;
            }
            send_outputs(&self.producer, task)?;
        }
        dead_letter_rejected(&self.producer)?;
        self.flow_control(consumer)?;
        self.watch_fetches(consumer);
        if self.last_commit.elapsed() >= self.args.commit_interval {
            let ids: Vec<i32> = self.tasks.keys().copied().collect();
            self.commit(consumer, &ids, CommitMode::Async)?;
            self.last_commit = Instant::now();
            self.report(consumer);
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            for (id, t) in &self.tasks {
                let watermarks = Self::watermarks(consumer, t);
                let inputs = 0..INPUTS.len();
                tracing::trace!(member = %self.name, task = id, buffered = ?inputs.clone().map(|i| t.buffered(i)).collect::<Vec<_>>(), fetch = ?inputs.map(|i| t.next_fetch(i)).collect::<Vec<_>>(), watermarks = ?watermarks.0, "task state");
            }
        }
        Ok(if worked {
            Busy::Working
        } else if self.tasks.values().any(Task::has_work) {
            Busy::Blocked
        } else {
            Busy::Idle
        })
    }

    /// Pauses inputs whose buffer is full, resumes them once drained.
    fn flow_control(&mut self, consumer: &BaseConsumer<MemberContext>) -> anyhow::Result<()> {
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (id, task) in &self.tasks {
            for (i, t) in INPUTS.iter().enumerate() {
                let n = task.buffered(i);
                let paused = self.flow_paused.contains(&(i, *id));
                if !paused && n >= BUFFER_HIGH {
                    pause.add_partition(t.name(), *id);
                    self.flow_paused.insert((i, *id));
                } else if paused && n <= BUFFER_LOW {
                    resume.add_partition(t.name(), *id);
                    self.flow_paused.remove(&(i, *id));
                }
            }
        }
        if pause.count() > 0 {
            consumer.pause(&pause)?;
        }
        if resume.count() > 0 {
            consumer.resume(&resume)?;
        }
        Ok(())
    }

    /// Seeks again an input partition that Kafka has records of past the task's position when
    /// none has arrived for [`FETCH_STALL`]: the task waits for them to keep event-time order,
    /// so a fetcher that stopped for that partition would stall the task.
    fn watch_fetches(&mut self, consumer: &BaseConsumer<MemberContext>) {
        if self.last_fetch_watch.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_fetch_watch = Instant::now();
        let mut waiting = HashMap::new();
        let mut reseek = Vec::new();
        for (id, task) in &self.tasks {
            let watermarks = Self::watermarks(consumer, task);
            for i in 0..INPUTS.len() {
                let next = task.next_fetch(i);
                if task.buffered(i) > 0 || self.flow_paused.contains(&(i, *id)) || watermarks.position(i, next) != Position::Behind {
                    continue;
                }
                let since = match self.waiting_fetch.get(&(i, *id)) {
                    Some((at, since)) if *at == next => *since,
                    _ => Instant::now(),
                };
                if since.elapsed() >= FETCH_STALL {
                    reseek.push((i, *id, next, watermarks.0[i]));
                    waiting.insert((i, *id), (next, Instant::now()));
                } else {
                    waiting.insert((i, *id), (next, since));
                }
            }
        }
        self.waiting_fetch = waiting;
        for (i, id, next, high) in reseek {
            let topic = INPUTS[i].name();
            tracing::warn!(member = %self.name, %topic, partition = id, next, watermarks = ?high, "no records from a partition that has some for {FETCH_STALL:?}; seeking it again");
            METRICS.fetch_reseeks.with_label_values(&[topic]).inc();
            let offset = if next >= 0 { Offset::Offset(next) } else { Offset::Beginning };
            if let Err(e) = consumer.seek(topic, id, offset, Duration::from_secs(5)) {
                tracing::warn!(%topic, partition = id, error = %e, "seeking a stalled partition failed; trying again later");
            }
        }
    }

    fn report(&self, consumer: &BaseConsumer<MemberContext>) {
        for (id, task) in &self.tasks {
            let watermarks = Self::watermarks(consumer, task);
            for (i, t) in INPUTS.iter().enumerate() {
                if let Some((_, h)) = watermarks.0[i] {
                    let next = task.next_fetch(i).max(0);
                    METRICS.lag.with_label_values(&[t.name(), &id.to_string()]).set((h - next).max(0));
                }
            }
            METRICS.timers_pending.with_label_values(&[&id.to_string()]).set(task.pending_timers() as i64);
            for s in self.topology.stores() {
                METRICS.store_keys.with_label_values(&[*s, id.to_string().as_str()]).set(task.db().estimate_keys(s) as i64);
            }
        }
    }
}

/// Writes a record to `zmp.deadletter.v1`, counted by reason.
fn dead_letter(
    producer: &OutputProducer,
    source: String,
    app_id: Option<String>,
    code: &str,
    reason: String,
    raw: Vec<u8>,
) -> anyhow::Result<()> {
    METRICS.dead_letters.with_label_values(&[code]).inc();
    let letter = DeadLetter {
        received_at: now_ms(),
        source,
        app_id,
        event_id: None,
        event_type: None,
        index: None,
        reason_code: code.into(),
        reason,
        raw,
    };
    producer.send(Topic::DeadLetter.name(), None, b"processor", Some(&schemas::codec::encode(&letter)?))
}

/// Dead-letters, with their keys, the records Kafka refused for good. A changelog record among
/// them means the store's changelog lacks a change its local store has: said loudly, since a
/// restore would not bring it back (the per-user bounds and [`MAX_RECORD_BYTES`] keep records
/// far below any broker's limit; a broker configured below that is the cause).
fn dead_letter_rejected(producer: &OutputProducer) -> anyhow::Result<()> {
    for r in producer.take_rejected() {
        if r.topic.ends_with(".changelog") {
            tracing::error!(topic = %r.topic, partition = r.partition, key = %key_digest(&r.key), error = %r.error, "Kafka refused a changelog record for good; a restore will not have this change (check the topic's max.message.bytes)");
        } else {
            tracing::warn!(topic = %r.topic, partition = r.partition, key = %key_digest(&r.key), error = %r.error, "Kafka refused a record for good; sent to the dead-letter topic");
        }
        let reason = format!("Kafka refused the record for {}/{}: {}", r.topic, r.partition, r.error);
        dead_letter(producer, format!("processor:{}/{}", r.topic, r.partition), None, "refused_by_kafka", reason, r.key)?;
    }
    Ok(())
}

/// A short digest of a key for logs: keys hold user ids.
fn key_digest(key: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key)[..6])
}

fn send_outputs(producer: &OutputProducer, task: &mut Task) -> anyhow::Result<()> {
    for o in task.outputs.drain(..) {
        if let Some(p) = o.payload.as_ref().filter(|p| p.len() > MAX_RECORD_BYTES) {
            tracing::warn!(topic = o.topic.name(), task = task.id, bytes = p.len(), key = %key_digest(o.key.as_bytes()), "an output record over the record limit was sent to the dead-letter topic");
            let reason = format!("a record of {} bytes for {} is over the {MAX_RECORD_BYTES}-byte record limit", p.len(), o.topic.name());
            dead_letter(
                producer,
                format!("processor:{}/{}", o.topic.name(), task.id),
                None,
                "output_too_large",
                reason,
                o.key.into_bytes(),
            )?;
            continue;
        }
        // The catalogue says where a record goes: user-keyed outputs by their key's hash (the
        // same partition as the task's, co-partitioned); keys such as `segment/user` or
        // `app/campaign/partition` to the task's own partition (the user's, or the one counted).
        let partition = o.topic.spec().key.to_writers_partition().then_some(task.id);
        producer.send(o.topic.name(), partition, o.key.as_bytes(), o.payload.as_deref())?;
        METRICS.outputs.with_label_values(&[o.topic.name()]).inc();
    }
    Ok(())
}

/// How busy the last turn of the loop was, to choose how long the next poll may wait.
#[derive(Clone, Copy)]
enum Busy {
    Working,
    Blocked,
    Idle,
}

enum Polled {
    Event { input: usize, partition: i32, offset: i64, event: Box<schemas::event::InputEvent> },
    Broken { topic: String, partition: i32, offset: i64, raw: Vec<u8>, error: String },
}

/// A fetched input record, copied out of the consumer so it can be decoded on another thread.
struct Raw {
    input: usize,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

impl Raw {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Raw> {
        Some(Raw {
            input: input_index(m.topic())?,
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload().unwrap_or_default().to_vec(),
        })
    }

    fn decode(self) -> Polled {
        match schemas::codec::decode_input(INPUTS[self.input], &self.payload) {
            Ok(event) => Polled::Event { input: self.input, partition: self.partition, offset: self.offset, event: Box::new(event) },
            Err(e) => Polled::Broken {
                topic: INPUTS[self.input].name().to_string(),
                partition: self.partition,
                offset: self.offset,
                raw: self.payload,
                error: e.to_string(),
            },
        }
    }
}

/// Decodes a poll's records in order. Avro decoding is a large part of a record's cost, so a big
/// batch is split with a second thread while this one decodes the other half.
fn decode_all(mut raws: Vec<Raw>) -> Vec<Polled> {
    const PARALLEL_FROM: usize = 256;
    if raws.len() < PARALLEL_FROM {
        return raws.into_iter().map(Raw::decode).collect();
    }
    let second = raws.split_off(raws.len() / 2);
    std::thread::scope(|s| {
        let helper = s.spawn(move || second.into_iter().map(Raw::decode).collect::<Vec<_>>());
        let mut out: Vec<Polled> = raws.into_iter().map(Raw::decode).collect();
        match helper.join() {
            Ok(rest) => out.extend(rest),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        out
    })
}

/// A running member; stop it with [`Member::stop`].
pub struct Member {
    stop: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    pub name: String,
}

impl Member {
    /// Checks the topics, creates the changelogs, joins the group and starts running the
    /// topology's processors on the tasks it is given.
    pub async fn start(kafka: &Kafka, args: &ProcessArgs, topology: Topology, observer: Option<TaskObserver>) -> anyhow::Result<Member> {
        let inputs: Vec<&str> = INPUTS.iter().map(|t| t.name()).collect();
        let counts = kafka.partition_counts(&inputs).await?;
        let mut distinct: Vec<i32> = Vec::new();
        for (name, c) in inputs.iter().zip(&counts) {
            match c {
                None => bail!("input topic {name} does not exist; create the catalogue with `zcdp topics create`"),
                Some(n) if !distinct.contains(n) => distinct.push(*n),
                Some(_) => {}
            }
        }
        if distinct.len() != 1 {
            let list: Vec<String> = inputs.iter().zip(&counts).map(|(n, c)| format!("{n}={}", c.unwrap_or(0))).collect();
            bail!(
                "the input topics have different partition counts ({}); they must be co-partitioned (same count, keyed by user) for a task to see all of a user's events. Recreate them, or add partitions so all counts match",
                list.join(", ")
            );
        }
        let partitions = distinct[0];
        ensure_changelogs(kafka, &args.application_id, &topology, partitions).await?;

        let name = args.instance_id.clone().unwrap_or_else(|| format!("member-{}", &uuid::Uuid::new_v4().to_string()[..8]));
        let producer = Arc::new(OutputProducer::new(kafka)?);
        let engine = Arc::new(Mutex::new(Engine {
            kafka: kafka.clone(),
            args: args.clone(),
            name: name.clone(),
            topology,
            producer,
            tasks: BTreeMap::new(),
            restoring: HashMap::new(),
            new_assignment: None,
            flow_paused: BTreeSet::new(),
            last_commit: Instant::now(),
            last_emit: Instant::now(),
            committed: HashMap::new(),
            recommitted: Instant::now(),
            waiting_fetch: HashMap::new(),
            last_fetch_watch: Instant::now(),
            fatal: None,
            observer,
        }));
        let mut cfg = kafka.client_config();
        cfg.set("group.id", format!("zcdp-{}", args.application_id))
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", args.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (args.session_timeout.as_millis() / 10).max(100).to_string())
            .set("max.poll.interval.ms", "300000")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            .set("queued.min.messages", "100000")
            // A task waiting for an input that is behind should not wait on the broker's long poll.
            .set("fetch.wait.max.ms", "10")
            // librdkafka stops fetching a partition for this long when its local queue is full;
            // the default (1 s) starves a task waiting for that input.
            .set("fetch.queue.backoff.ms", "10")
            .set("enable.partition.eof", "false");
        if let Some(id) = &args.instance_id {
            cfg.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<MemberContext> =
            cfg.create_with_context(MemberContext { engine: engine.clone() }).context("creating the processor consumer")?;
        consumer.subscribe(&inputs)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let (s, e) = (stop.clone(), ended.clone());
        let thread = std::thread::Builder::new()
            .name(format!("processor-{name}"))
            .spawn(move || {
                // Set even if the thread panics.
                struct Ended(Arc<AtomicBool>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Release);
                    }
                }
                let _ended = Ended(e);
                let result = run(consumer, engine, s);
                if let Err(err) = &result {
                    tracing::error!(error = format!("{err:#}"), "processor member stopped");
                }
                result
            })
            .expect("spawn processor thread");
        Ok(Member { stop, ended, thread: Some(thread), name })
    }

    /// Commits everything, leaves the group and waits for the member to finish.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("processor thread panicked")))).unwrap_or(Ok(()))
    }

    /// Whether the member's thread has ended (by error).
    pub fn finished(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// A flag that turns true when the member's thread ends.
    pub fn ended_flag(&self) -> Arc<AtomicBool> {
        self.ended.clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(consumer: BaseConsumer<MemberContext>, engine: Arc<Mutex<Engine>>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut busy = Busy::Idle;
    let result = loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let mut raws = Vec::new();
        let first = consumer.poll(match busy {
            Busy::Working => Duration::ZERO,
            // Records are buffered but wait for an input that is behind: its fetch is due soon.
            Busy::Blocked => Duration::from_millis(1),
            Busy::Idle => Duration::from_millis(50),
        });
        if let Some(r) = first {
            match r {
                Ok(m) => raws.extend(Raw::of(&m)),
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
            while raws.len() < 20_000 {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(m)) => raws.extend(Raw::of(&m)),
                    Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                    None => break,
                }
            }
        }
        let polled = decode_all(raws);
        let mut e = engine.lock().expect("engine lock");
        if let Some(err) = e.fatal.take() {
            break Err(err);
        }
        match e.turn(&consumer, polled) {
            Ok(b) => busy = b,
            Err(err) => break Err(err),
        }
    };
    let mut e = engine.lock().expect("engine lock");
    let committed = if result.is_ok() { e.revoke_all(&consumer) } else { Ok(()) };
    drop(e);
    consumer.unsubscribe();
    drop(consumer);
    result.and(committed)
}
