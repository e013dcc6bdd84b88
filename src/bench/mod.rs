//! `zcdp bench …`: throughput measured against the raw client in the same run, printed as a
//! table. Ratios, not absolute numbers, are what hold on a noisy two-core machine.

mod ingest;
mod process;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// HTTP gateway (POST /v1/batch over loopback) against a bare rdkafka producer.
    Ingest(ingest::IngestBenchArgs),
    /// All three processors with RocksDB against a bare consume + decode loop; and restore.
    Process(process::ProcessBenchArgs),
}

pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Process(args) => process::run(args).await,
    }
}

/// The value at quantile `q` (0..=1) of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
