//! What the application hands the runtime: the processors every task runs, built afresh for
//! each task, and so the stores a task has (one per processor, then the runtime's own). The
//! runtime never names a processor; it runs what the topology builds (Kafka Streams' topology,
//! Arroyo's registry).

use std::sync::Arc;

use super::processor::Processor;
use super::store::STORE_DEDUP;

type Build = dyn Fn() -> Vec<Box<dyn Processor>> + Send + Sync;

#[derive(Clone)]
pub struct Topology {
    build: Arc<Build>,
    stores: Vec<&'static str>,
}

impl Topology {
    /// `build` makes one task's processors, in timer-kind order (a processor's index is the
    /// kind of the timers it sets, so the order must not change between versions that share
    /// state). Each processor's store must be its own.
    pub fn new(build: impl Fn() -> Vec<Box<dyn Processor>> + Send + Sync + 'static) -> anyhow::Result<Topology> {
        let mut stores: Vec<&'static str> = build().iter().map(|p| p.store()).collect();
        stores.push(STORE_DEDUP);
        for (i, s) in stores.iter().enumerate() {
            if stores[..i].contains(s) {
                anyhow::bail!("two stores of the topology are named {s:?}; each processor needs its own");
            }
        }
        Ok(Topology { build: Arc::new(build), stores })
    }

    /// A new set of processors, for one task.
    pub fn processors(&self) -> Vec<Box<dyn Processor>> {
        (self.build)()
    }

    /// The processors' names, in order: each is its store's.
    pub fn processor_names(&self) -> &[&'static str] {
        &self.stores[..self.stores.len() - 1]
    }

    /// Every store of a task: the processors', then the runtime's.
    pub fn stores(&self) -> &[&'static str] {
        &self.stores
    }
}
