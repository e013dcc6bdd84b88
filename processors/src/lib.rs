//! The stateful stream runtime and the processors built on it.
//!
//! - `member`: a consumer-group member running tasks (the poll loop, rebalances, commits);
//! - `task`: one partition number across the co-partitioned inputs, in event-time order;
//! - `store`, `timers`: a task's RocksDB and its in-memory layer; durable timers;
//! - `checkpoint`: what a commit writes, and how a task restores from its changelogs;
//! - `sessions`, `interests`, `carts`, `profiles`, `campaign_results`, `activity`: the
//!   processors;
//! - `query`: the query API over the compacted outputs.

pub mod activity;
pub mod audiences;
pub mod campaign_results;
pub mod carts;
pub mod checkpoint;
pub mod config;
pub mod interests;
pub mod member;
pub mod metrics;
pub mod output;
pub mod processor;
pub mod profiles;
pub mod query;
pub mod segments;
pub mod sessions;
pub mod store;
pub mod task;
pub mod testing;
pub mod timers;

pub use config::ProcessArgs;
pub use member::{Member, TaskEvent, TaskObserver};
