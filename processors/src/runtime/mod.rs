//! The stateful stream runtime: it runs the processors a [`Topology`] builds over the
//! co-partitioned inputs, with exact state across crashes and rebalances. It names no
//! processor; the crate root builds the topology.
//!
//! - `processor`: the API a processor sees — the [`Processor`] trait and its [`Ctx`];
//! - `topology`: the processors every task runs, and so the stores a task has;
//! - `member`: a consumer-group member — the poll loop, rebalances, restores, commits;
//! - `task`: one partition number across the inputs, taken in event-time order;
//! - `store`: a task's RocksDB (a column family per store) and the in-memory layer in front;
//! - `timers`: timers kept in memory, derived from the stores on restore;
//! - `checkpoint`: what a commit writes, how a task restores from its changelogs, and the
//!   changelog topics themselves (`ensure_changelogs`);
//! - `output`: the producer of outputs, changelogs and checkpoints;
//! - `metrics`: the runtime's `zcdp_process_*` metrics;
//! - `testing`: helpers for tests of the runtime and of the binary.

pub mod checkpoint;
pub mod member;
pub mod metrics;
pub mod output;
pub mod processor;
pub mod store;
pub mod task;
pub mod testing;
pub mod timers;
pub mod topology;

pub use checkpoint::ensure_changelogs;
pub use member::{Member, TaskEvent, TaskObserver};
pub use processor::{Ctx, Output, Processor};
pub use topology::Topology;
