//! A task: one partition number across the co-partitioned inputs, its RocksDB, its processors
//! and timers. It takes records in event-time order across its input partitions, so an order
//! read from `zmp.orders.v1` and a cart event read from `zmp.carts.v1` meet in the order they
//! happened, whichever topic was read first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use schemas::event::InputEvent;
use schemas::topics::Topic;

use super::checkpoint::{Checkpoint, Restored};
use super::metrics::METRICS;
use super::output::MAX_RECORD_BYTES;
use super::processor::{Ctx, Output, Processor};
use super::store::{Change, Dedup, STORE_DEDUP, TaskDb, dedup_batches};
use super::timers::{TimerKey, Timers};

/// The co-partitioned inputs, in the order ties are broken: the Mini App's five topics, then the
/// messaging outcomes (for campaign results), so a message and an order at the same millisecond
/// are taken order first.
pub const INPUTS: [Topic; 6] = [Topic::Views, Topic::Carts, Topic::Orders, Topic::Identities, Topic::Engagement, Topic::Messages];

pub fn input_index(topic: &str) -> Option<usize> {
    INPUTS.iter().position(|t| t.name() == topic)
}

/// A fetched record. The event is boxed: events are large, and buffers move records around.
struct Buffered {
    offset: i64,
    event: Box<InputEvent>,
}

/// Whether an input partition has more records in Kafka than the task has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    CaughtUp,
    /// Kafka has records the task has not fetched yet: wait for them.
    Behind,
    /// Not known yet (no fetch answered since the partition was assigned).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    No,
    /// Until the records Kafka holds are fetched.
    UntilFetched,
    /// For at most the task's idle time.
    Idle,
}

pub trait Lag {
    fn position(&self, input: usize, next_fetch: i64) -> Position;
    fn caught_up(&self, input: usize, next_fetch: i64) -> bool {
        self.position(input, next_fetch) == Position::CaughtUp
    }
}

/// (low, high) watermarks of a task's input partitions, as far as they are known.
pub struct Watermarks(pub [Option<(i64, i64)>; INPUTS.len()]);

impl Lag for Watermarks {
    fn position(&self, input: usize, next_fetch: i64) -> Position {
        match self.0[input] {
            None => Position::Unknown,
            // Nothing fetched yet, reading from the beginning.
            Some((low, high)) if next_fetch < 0 => {
                if high > low.max(0) {
                    Position::Behind
                } else {
                    Position::CaughtUp
                }
            }
            Some((_, high)) if next_fetch >= high => Position::CaughtUp,
            Some(_) => Position::Behind,
        }
    }
}

pub struct Task {
    pub id: i32,
    db: TaskDb,
    processors: Vec<Box<dyn Processor>>,
    timers: Timers,
    dedup: Dedup,
    buffers: [VecDeque<Buffered>; INPUTS.len()],
    /// Next offset to process, per input (-1: unknown, take what comes).
    next: [i64; INPUTS.len()],
    /// Next offset to fetch, per input.
    fetched: [i64; INPUTS.len()],
    /// Time of the last record processed from each input.
    last_time: [i64; INPUTS.len()],
    pub stream_time: i64,
    checkpoint: Checkpoint,
    compensation: Vec<Change>,
    pub outputs: Vec<Output>,
    dirty: bool,
    /// Per input: since when it has been read to its end (or first held records back) while
    /// the task holds records; cleared when it receives.
    idle_since: [Option<Instant>; INPUTS.len()],
    /// Inputs not waited for any more: their wait ran out. Cleared when the input delivers a
    /// record and when the task has nothing buffered, so the next burst waits again.
    waived: [bool; INPUTS.len()],
    /// Since when every input has been read to its end with nothing buffered.
    drained_since: Option<Instant>,
    max_cached: usize,
    /// Watermarks read at restore, until the consumer has its own.
    initial_watermarks: [Option<(i64, i64)>; INPUTS.len()],
    counters: [prometheus::IntCounter; INPUTS.len()],
}

/// What a commit of this task writes.
pub struct Prepared {
    /// What RocksDB gets: every change, one entry a key; the leftovers of an unfinished commit
    /// first.
    pub changes: Vec<Change>,
    leftovers: usize,
    /// The commit's new dedup entries as the changelog gets them ([`dedup_batches`]): a few
    /// records a commit rather than one an input event.
    batches: Vec<Change>,
    /// Changes over [`MAX_RECORD_BYTES`], left out: their keys keep their committed values.
    pub refused: Vec<Change>,
}

impl Prepared {
    /// What the changelogs get: the leftovers as they are, the new changes but the dedup
    /// entries, and those in batches.
    pub fn changelog(&self) -> impl Iterator<Item = &Change> {
        let (leftovers, new) = self.changes.split_at(self.leftovers);
        leftovers.iter().chain(new.iter().filter(|c| c.store != STORE_DEDUP)).chain(self.batches.iter())
    }
}

impl Task {
    pub fn new(id: i32, restored: Restored, processors: Vec<Box<dyn Processor>>, max_cached: usize) -> anyhow::Result<Task> {
        // Timers are not stored: each processor lists those its restored state implies.
        let mut timers = Timers::default();
        let mut listed = Vec::new();
        for (kind, p) in processors.iter().enumerate() {
            listed.clear();
            p.timers(&restored.db, &mut listed)?;
            for (deadline, key) in listed.drain(..) {
                timers.schedule(TimerKey { deadline, kind: kind as u8, key });
            }
        }
        let mut next = [-1; INPUTS.len()];
        for (i, t) in INPUTS.iter().enumerate() {
            if let Some(o) = restored.checkpoint.inputs.get(t.name()) {
                next[i] = *o;
            }
        }
        let dirty = !restored.compensation.is_empty();
        // Every input's, `zmp.messages.v1` included: one left unknown would keep the task from
        // counting itself caught up until the consumer had fetched from it.
        let initial_watermarks: [Option<(i64, i64)>; INPUTS.len()] =
            std::array::from_fn(|i| restored.input_watermarks.get(i).copied().flatten());
        Ok(Task {
            id,
            db: restored.db,
            processors,
            timers,
            dedup: Dedup::default(),
            buffers: Default::default(),
            next,
            fetched: next,
            last_time: [i64::MIN; INPUTS.len()],
            stream_time: i64::MIN,
            checkpoint: restored.checkpoint,
            compensation: restored.compensation,
            outputs: Vec::new(),
            dirty,
            idle_since: [None; INPUTS.len()],
            waived: [false; INPUTS.len()],
            drained_since: None,
            max_cached,
            initial_watermarks,
            counters: INPUTS.map(|t| METRICS.records.with_label_values(&[t.name()])),
        })
    }

    /// The watermarks of the task's inputs: `cached(input)`, what the consumer has seen, or else
    /// what the restore read. librdkafka keeps what it last saw of a partition this member owned
    /// before, which may be older than what the restore read: watermarks only grow, so the larger
    /// is right.
    pub fn watermarks(&self, cached: impl Fn(usize) -> Option<(i64, i64)>) -> Watermarks {
        Watermarks(std::array::from_fn(|i| match (cached(i), self.initial_watermarks[i]) {
            (Some((l1, h1)), Some((l2, h2))) => Some((l1.max(l2), h1.max(h2))),
            (a, b) => a.or(b),
        }))
    }

    /// The offsets the task resumes from: where its checkpoint says its state ends.
    pub fn resume_offsets(&self) -> [i64; INPUTS.len()] {
        self.next
    }

    pub fn buffered(&self, input: usize) -> usize {
        self.buffers[input].len()
    }

    pub fn has_work(&self) -> bool {
        self.buffers.iter().any(|b| !b.is_empty())
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    pub fn db(&self) -> &TaskDb {
        &self.db
    }

    /// Takes a fetched record. Records the checkpoint already covers are dropped: their effects
    /// are in the state.
    pub fn accept(&mut self, input: usize, offset: i64, event: Box<InputEvent>) {
        if offset < self.next[input] || offset < self.fetched[input] {
            return;
        }
        self.fetched[input] = offset + 1;
        self.waived[input] = false;
        self.idle_since[input] = None;
        self.buffers[input].push_back(Buffered { offset, event });
    }

    /// The next offset to fetch for an input, if known.
    pub fn next_fetch(&self, input: usize) -> i64 {
        self.fetched[input]
    }

    /// Whether the head record, at `head_time`, must wait for input `i`, which might still hold
    /// an earlier record.
    fn wait_for(&self, i: usize, lag: &dyn Lag, head_time: i64) -> Wait {
        if !self.buffers[i].is_empty() || self.last_time[i] >= head_time || self.waived[i] {
            return Wait::No;
        }
        match lag.position(i, self.fetched[i]) {
            Position::Behind => Wait::UntilFetched,
            // Not known yet, or read to its end while records produced together with the head may
            // still be on their way: it is given `max_idle` to show them.
            Position::Unknown | Position::CaughtUp => Wait::Idle,
        }
    }

    /// Records are safe to take up to this time: no input that might still hold an earlier record
    /// is being waited for. `None`: no bound (every input is drained and caught up).
    fn bound(&self, lag: &dyn Lag) -> Option<i64> {
        let mut bound: Option<i64> = None;
        for i in 0..INPUTS.len() {
            let b = match (self.buffers[i].front(), lag.position(i, self.fetched[i])) {
                (Some(r), _) => Some(r.event.time()),
                (None, Position::CaughtUp) => None,
                (None, Position::Unknown) if self.waived[i] => None,
                (None, _) => Some(self.last_time[i]),
            };
            if let Some(b) = b {
                bound = Some(bound.map_or(b, |x: i64| x.min(b)));
            }
        }
        bound
    }

    /// Processes buffered records in event-time order, up to `budget`. Stops, rather than run
    /// ahead, while an input that holds records not fetched yet may hold earlier ones; while an
    /// input that is read to its end (or not known yet) may still receive earlier ones, waits for
    /// at most `max_idle` (Kafka Streams' `max.task.idle.ms`).
    pub fn process(&mut self, lag: &dyn Lag, budget: usize, max_idle: Duration, now_ms: i64) -> anyhow::Result<usize> {
        let mut done = 0;
        if !self.has_work() {
            self.waived = [false; INPUTS.len()];
            self.idle_since = [None; INPUTS.len()];
            return Ok(0);
        }
        // An input's idle time counts from when it was read to its end with records held here:
        // inputs whose writers stop together are given up on together, not one after another.
        let now = Instant::now();
        for i in 0..INPUTS.len() {
            if self.idle_since[i].is_none() && lag.position(i, self.fetched[i]) == Position::CaughtUp {
                self.idle_since[i] = Some(now);
            }
        }
        while done < budget {
            // The input whose head happened first.
            let Some(input) =
                (0..INPUTS.len()).filter(|i| !self.buffers[*i].is_empty()).min_by_key(|i| (self.buffers[*i][0].event.time(), *i))
            else {
                break;
            };
            let head_time = self.buffers[input][0].event.time();
            let waits: [Wait; INPUTS.len()] = std::array::from_fn(|i| self.wait_for(i, lag, head_time));
            if waits.contains(&Wait::UntilFetched) {
                break;
            }
            // Each input waited for gets its own `max_idle`; once that passes, the task goes on
            // without it until it receives again or the task has drained.
            let mut hold = false;
            for (i, w) in waits.iter().enumerate() {
                if *w == Wait::Idle {
                    let since = *self.idle_since[i].get_or_insert(now);
                    if since.elapsed() < max_idle {
                        hold = true;
                    } else {
                        self.waived[i] = true;
                        METRICS.idle_expired.with_label_values(&[INPUTS[i].name()]).inc();
                    }
                }
            }
            if hold {
                break;
            }
            // Timers due before this record fire first.
            if let Some(bound) = self.bound(lag) {
                self.fire_timers(bound.min(head_time), false)?;
            }
            let r = self.buffers[input].pop_front().expect("non-empty");
            self.apply(input, r, now_ms)?;
            done += 1;
        }
        Ok(done)
    }

    fn apply(&mut self, input: usize, r: Buffered, now_ms: i64) -> anyhow::Result<()> {
        let t = r.event.time();
        self.next[input] = r.offset + 1;
        self.last_time[input] = self.last_time[input].max(t);
        self.stream_time = self.stream_time.max(t);
        self.dirty = true;
        self.counters[input].inc();
        let mut id_key = Vec::with_capacity(r.event.app_id().len() + 1 + r.event.event_id().len());
        id_key.extend_from_slice(r.event.app_id().as_bytes());
        id_key.push(0x1f);
        id_key.extend_from_slice(r.event.event_id().as_bytes());
        if self.dedup.seen(&self.db, &id_key, now_ms)? {
            METRICS.duplicates.inc();
            return Ok(());
        }
        let message = matches!(*r.event, InputEvent::Message(_));
        for (kind, p) in self.processors.iter_mut().enumerate() {
            if message && !p.reads_messages() {
                continue;
            }
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: kind as u8, task: self.id };
            p.process(&mut ctx, &r.event)?;
        }
        Ok(())
    }

    /// Fires timers with a deadline before `before` (event time).
    fn fire_timers(&mut self, before: i64, by_wall_clock: bool) -> anyhow::Result<usize> {
        let mut n = 0;
        while let Some(key) = self.timers.pop_due(before.saturating_sub(1)) {
            let Some(p) = self.processors.get_mut(key.kind as usize) else { continue };
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: key.kind, task: self.id };
            p.on_timer(&mut ctx, &key.key, key.deadline)?;
            self.dirty = true;
            n += 1;
        }
        if n > 0 {
            METRICS.timers_fired.with_label_values(&[if by_wall_clock { "wall_clock" } else { "stream_time" }]).inc_by(n as u64);
        }
        Ok(n)
    }

    /// Fires timers whose deadline has passed in event time, and — when the task has had nothing
    /// to read for `grace` — those the wall clock has passed by more than `grace`, so a user who
    /// goes quiet still gets their timer without a later event to move time.
    pub fn punctuate(&mut self, lag: &dyn Lag, grace: Duration, now_ms: i64) -> anyhow::Result<usize> {
        let mut n = 0;
        if let Some(bound) = self.bound(lag) {
            n += self.fire_timers(bound, false)?;
        } else if self.stream_time > i64::MIN {
            n += self.fire_timers(self.stream_time, false)?;
        }
        // The wall clock counts only once the task has had nothing to read for the grace: while
        // records keep coming (a replay, a backfill), a moment of being caught up between two
        // fetches must not fire old timers ahead of the records that follow.
        let drained = (0..INPUTS.len()).all(|i| self.buffers[i].is_empty() && lag.caught_up(i, self.fetched[i]));
        if !drained {
            self.drained_since = None;
            return Ok(n);
        }
        let since = *self.drained_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= grace && self.timers.earliest().is_some_and(|d| d + grace.as_millis() as i64 <= now_ms) {
            n += self.fire_timers(now_ms - grace.as_millis() as i64 + 1, true)?;
        }
        Ok(n)
    }

    /// Whether the task changed since its last commit (or a processor has work for one).
    pub fn dirty(&self) -> bool {
        self.dirty || self.processors.iter().any(|p| p.wants_commit())
    }

    /// The processors emit the latest outputs of what changed since they last did
    /// ([`Processor::emit_changed`]), between commits.
    pub fn emit(&mut self) -> anyhow::Result<()> {
        for (kind, p) in self.processors.iter_mut().enumerate() {
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: kind as u8, task: self.id };
            p.emit_changed(&mut ctx)?;
        }
        Ok(())
    }

    /// Collects what the commit writes; the processors emit their commit-time outputs now.
    pub fn prepare_commit(&mut self) -> anyhow::Result<Prepared> {
        for (kind, p) in self.processors.iter_mut().enumerate() {
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: kind as u8, task: self.id };
            p.before_commit(&mut ctx)?;
        }
        // Leftovers of an unfinished commit first: anything newer overwrites them.
        let mut changes = std::mem::take(&mut self.compensation);
        // Leftovers came from the changelog: whatever their size, they are already in it.
        let leftovers = changes.len();
        for p in self.processors.iter_mut() {
            p.take_dirty(&mut changes)?;
        }
        self.dedup.take_dirty(&mut changes);
        // The last line of the per-user bounds: a value Kafka could not take is not written,
        // here or to the changelog, so both keep the key's committed value (and the cache forgets
        // the new one at `finish_commit`). The member dead-letters the key.
        let new = changes.split_off(leftovers);
        let (refused, new): (Vec<Change>, Vec<Change>) =
            new.into_iter().partition(|c| c.value.as_ref().is_some_and(|v| v.len() > MAX_RECORD_BYTES));
        changes.extend(new);
        let fresh: Vec<&Change> = changes[leftovers..].iter().filter(|c| c.store == STORE_DEDUP).collect();
        let batches = dedup_batches(fresh);
        Ok(Prepared { changes, leftovers, batches, refused })
    }

    /// The checkpoint of the commit in progress: the current input positions, and the given
    /// changelog ends.
    pub fn next_checkpoint(&self, ends: std::collections::BTreeMap<String, i64>) -> Checkpoint {
        let mut inputs = self.checkpoint.inputs.clone();
        for (i, t) in INPUTS.iter().enumerate() {
            if self.next[i] >= 0 {
                inputs.insert(t.name().to_string(), self.next[i]);
            }
        }
        Checkpoint { epoch: self.checkpoint.epoch + 1, attempt: uuid::Uuid::new_v4().to_string(), inputs, ends }
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Writes the committed changes and checkpoint to RocksDB, atomically.
    pub fn finish_commit(&mut self, prepared: Prepared, checkpoint: Checkpoint) -> anyhow::Result<()> {
        self.db.write(&prepared.changes, Some(&checkpoint.to_bytes()), true)?;
        self.checkpoint = checkpoint;
        self.dirty = false;
        for p in self.processors.iter_mut() {
            // A refused value is still in the cache: forget what is cached, to read it back.
            let refused = prepared.refused.iter().any(|c| c.store == p.store());
            p.trim(if refused { 0 } else { self.max_cached });
        }
        Ok(())
    }

    /// Input offsets to commit to Kafka.
    pub fn committable(&self) -> Vec<(Topic, i64)> {
        INPUTS.iter().enumerate().filter(|(i, _)| self.next[*i] >= 0).map(|(i, t)| (*t, self.next[i])).collect()
    }

    pub fn processors(&self) -> impl Iterator<Item = &dyn Processor> {
        self.processors.iter().map(|p| p.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::store::STORE_DEDUP;
    use std::time::Duration;

    /// 2026-01-01T00:00:00Z.
    const T: i64 = 1_767_225_600_000;

    /// A processor whose restored state implies one timer, due at `T`; firing it emits a record.
    struct Reminder;

    impl Processor for Reminder {
        fn store(&self) -> &'static str {
            "reminders"
        }
        fn process(&mut self, _: &mut Ctx<'_>, _: &InputEvent) -> anyhow::Result<()> {
            Ok(())
        }
        fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], _: i64) -> anyhow::Result<()> {
            ctx.tombstone(Topic::CartTriggers, std::str::from_utf8(key)?);
            Ok(())
        }
        fn timers(&self, _: &TaskDb, out: &mut Vec<(i64, Vec<u8>)>) -> anyhow::Result<()> {
            out.push((T, b"u".to_vec()));
            Ok(())
        }
        fn take_dirty(&mut self, _: &mut Vec<Change>) -> anyhow::Result<()> {
            Ok(())
        }
        fn trim(&mut self, _: usize) {}
    }

    /// What a restore of an empty checkpoint gives, with the input watermarks it read.
    fn fresh(db: TaskDb, input_watermarks: Vec<Option<(i64, i64)>>) -> Restored {
        Restored {
            db,
            checkpoint: Checkpoint::default(),
            compensation: Vec::new(),
            replayed: Default::default(),
            elapsed: Duration::ZERO,
            input_watermarks,
        }
    }

    /// A task just restored, its inputs all empty when the restore read them.
    fn restored(dir: &std::path::Path) -> Task {
        let db = TaskDb::open(dir, &["reminders", STORE_DEDUP]).unwrap();
        let restored = fresh(db, vec![Some((0, 0)); INPUTS.len()]);
        Task::new(0, restored, vec![Box::new(Reminder)], 100).unwrap()
    }

    /// Before the consumer has fetched anything, what the restore read tells the task that
    /// every input — `zmp.messages.v1`, the sixth, included — holds nothing more: a timer the
    /// wall clock has passed fires at once. (With only five inputs' watermarks kept, the sixth
    /// stayed unknown and the timer waited for a fetch from `zmp.messages.v1`.)
    #[test]
    fn a_restored_task_knows_all_its_inputs_and_fires_due_timers() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = restored(dir.path());
        let consumer_knows_nothing = task.watermarks(|_| None);
        let fired = task.punctuate(&consumer_knows_nothing, Duration::ZERO, T + 1_000).unwrap();
        assert_eq!((fired, task.outputs.len()), (1, 1), "the due timer fired");
        for (i, t) in INPUTS.iter().enumerate() {
            assert_eq!(consumer_knows_nothing.position(i, task.next_fetch(i)), Position::CaughtUp, "{t}");
        }
    }

    /// Watermarks only grow, so the newer of the two counts: the consumer's, when records
    /// arrived after the restore; the restore's, when librdkafka still remembers an older view
    /// of a partition this member owned before.
    #[test]
    fn watermarks_take_the_newer_of_the_consumer_and_the_restore() {
        let dir = tempfile::tempdir().unwrap();
        let task = restored(dir.path());
        let w = task.watermarks(|i| (i == 5).then_some((0, 3)));
        assert_eq!(w.0[5], Some((0, 3)));
        assert_eq!(w.position(5, task.next_fetch(5)), Position::Behind, "records arrived after the restore");
        assert_eq!(w.0[0], Some((0, 0)));

        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &["reminders", STORE_DEDUP]).unwrap();
        let mut seen = vec![Some((0, 0)); INPUTS.len()];
        seen[1] = Some((2, 9));
        let restored = fresh(db, seen);
        let task = Task::new(0, restored, vec![Box::new(Reminder)], 100).unwrap();
        let w = task.watermarks(|i| (i == 1).then_some((0, 4)));
        assert_eq!(w.0[1], Some((2, 9)), "an older cached view of the partition does not hide what the restore saw");
        assert_eq!(w.position(1, task.next_fetch(1)), Position::Behind);
    }

    /// A processor that, once, changes one key to a value over the record limit and one to a
    /// small value; it records what `trim` was asked to keep.
    struct Grower {
        trimmed_to: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Processor for Grower {
        fn store(&self) -> &'static str {
            "grower"
        }
        fn process(&mut self, _: &mut Ctx<'_>, _: &InputEvent) -> anyhow::Result<()> {
            Ok(())
        }
        fn on_timer(&mut self, _: &mut Ctx<'_>, _: &[u8], _: i64) -> anyhow::Result<()> {
            Ok(())
        }
        fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
            out.push(Change { store: "grower", key: b"big".to_vec(), value: Some(vec![7; MAX_RECORD_BYTES + 1]) });
            out.push(Change { store: "grower", key: b"small".to_vec(), value: Some(vec![1; 10]) });
            Ok(())
        }
        fn trim(&mut self, max_cached: usize) {
            self.trimmed_to.lock().unwrap().push(max_cached);
        }
    }

    /// The last line of the per-user bounds (issue 19): a value over what Kafka takes is left
    /// out of the commit, in RocksDB as in the changelog, so its key keeps its committed value;
    /// the other changes of the commit go through, and the processor's cache is emptied so the
    /// key is read back as committed.
    #[test]
    fn a_value_over_the_record_limit_is_refused_and_the_rest_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &["grower", STORE_DEDUP]).unwrap();
        db.write(&[Change { store: "grower", key: b"big".to_vec(), value: Some(b"committed".to_vec()) }], None, true).unwrap();
        let restored = fresh(db, vec![Some((0, 0)); INPUTS.len()]);
        let trimmed_to = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut task = Task::new(0, restored, vec![Box::new(Grower { trimmed_to: trimmed_to.clone() })], 100).unwrap();
        let prepared = task.prepare_commit().unwrap();
        assert_eq!(prepared.refused.iter().map(|c| c.key.as_slice()).collect::<Vec<_>>(), [b"big".as_slice()]);
        assert!(prepared.changes.iter().all(|c| c.value.as_ref().is_none_or(|v| v.len() <= MAX_RECORD_BYTES)));
        let cp = task.next_checkpoint(Default::default());
        task.finish_commit(prepared, cp).unwrap();
        assert_eq!(task.db().get("grower", b"big").unwrap().as_deref(), Some(b"committed".as_slice()));
        assert_eq!(task.db().get("grower", b"small").unwrap().as_deref(), Some([1u8; 10].as_slice()));
        assert_eq!(*trimmed_to.lock().unwrap(), [0], "the cache is emptied to read the key back");
    }
}
