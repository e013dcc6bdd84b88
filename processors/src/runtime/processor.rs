//! What a processor is to the runtime: it sees each input event of its task in event-time order,
//! keeps its state in a store of its own, sets timers, and emits records. The runtime owns
//! commits, changelogs, restores and offsets; a processor never sees Kafka.

use schemas::codec::Record;
use schemas::event::InputEvent;
use schemas::topics::Topic;

use super::store::{Change, TaskDb};
use super::timers::{TimerKey, Timers};

/// A record to write to an output topic.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: Topic,
    pub key: String,
    /// None: a tombstone (the key's value is gone, on a compacted topic).
    pub payload: Option<Vec<u8>>,
}

/// The task's facilities, lent to a processor for one call.
pub struct Ctx<'a> {
    pub db: &'a TaskDb,
    pub timers: &'a mut Timers,
    pub outputs: &'a mut Vec<Output>,
    /// This processor's timer kind.
    pub kind: u8,
    /// The task: the partition number of its inputs and of its outputs.
    pub task: i32,
}

impl Ctx<'_> {
    pub fn emit<R: Record>(&mut self, key: &str, record: &R) -> anyhow::Result<()> {
        let payload = schemas::codec::encode(record)?;
        self.outputs.push(Output { topic: R::TOPIC, key: key.to_string(), payload: Some(payload) });
        Ok(())
    }

    /// Deletes `key` from a compacted output topic.
    pub fn tombstone(&mut self, topic: Topic, key: &str) {
        self.outputs.push(Output { topic, key: key.to_string(), payload: None });
    }

    pub fn schedule(&mut self, deadline: i64, key: Vec<u8>) {
        self.timers.schedule(TimerKey { deadline, kind: self.kind, key });
    }

    pub fn cancel(&mut self, deadline: i64, key: &[u8]) {
        self.timers.cancel(&TimerKey { deadline, kind: self.kind, key: key.to_vec() });
    }
}

pub trait Processor: Send {
    /// The processor's store (a column family and a changelog topic of that name).
    fn store(&self) -> &'static str;
    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()>;
    /// Whether the processor is given `zmp.messages.v1` records (`InputEvent::Message`); the
    /// others see only what the Mini App sent.
    fn reads_messages(&self) -> bool {
        false
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], deadline: i64) -> anyhow::Result<()>;
    /// The timers its stored state implies, as (deadline, key): called when a task starts, on the
    /// restored store, since timers are not stored themselves. Listing a timer that turns out to
    /// have nothing to do is harmless: `on_timer` checks the state.
    fn timers(&self, _db: &TaskDb, _out: &mut Vec<(i64, Vec<u8>)>) -> anyhow::Result<()> {
        Ok(())
    }
    /// Called once per commit, before the state is written: a chance to emit what changed.
    fn before_commit(&mut self, _ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether it has work for a commit without any new input (a segment redefined): the task
    /// commits then even if nothing else changed.
    fn wants_commit(&self) -> bool {
        false
    }
    /// Called every `--emit-interval` between commits: emits the latest output of what changed
    /// since the last call (profiles, interests), so readers need not wait for the commit.
    /// Outputs depend only on the state, so one written again after a crash is the same record.
    fn emit_changed(&mut self, _ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        Ok(())
    }
    fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()>;
    fn trim(&mut self, max_cached: usize);
}

/// The store key of a user: app id, a 0x1F separator, the user key. Apps never share state.
pub fn user_key(app: &str, user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(app.len() + 1 + user.len());
    k.extend_from_slice(app.as_bytes());
    k.push(0x1f);
    k.extend_from_slice(user.as_bytes());
    k
}

/// The (app, user) of a store key made by [`user_key`].
pub fn split_user_key(key: &[u8]) -> Option<(&str, &str)> {
    let i = key.iter().position(|b| *b == 0x1f)?;
    Some((std::str::from_utf8(&key[..i]).ok()?, std::str::from_utf8(&key[i + 1..]).ok()?))
}
