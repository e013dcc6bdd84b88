//! `zcdp bench …`: throughput measured against the raw client in the same run, printed as a
//! table. Ratios, not absolute numbers, are what hold on a noisy two-core machine.

mod ingest;
mod process;
mod scale;
mod serve;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// HTTP gateway (POST /v1/batch over loopback) against a bare rdkafka producer.
    Ingest(ingest::IngestBenchArgs),
    /// Every processor of the topology (processors/src/lib.rs) with RocksDB against a bare consume + decode loop; and restore.
    Process(process::ProcessBenchArgs),
    /// Profile and recommendation lookups through the query API at a fixed rate, against the same HTTP server answering a fixed body.
    Serve(serve::ServeBenchArgs),
    /// N users' histories through the processors into a query replica: one table of what grows with the users.
    Scale(scale::ScaleBenchArgs),
}

pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Process(args) => process::run(args).await,
        BenchCommand::Serve(args) => serve::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
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

/// CPU seconds (user + system) each live thread of this process has used so far, summed by
/// thread name; empty where /proc is not there. Threads that ended are not counted.
pub fn thread_cpu_seconds() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat.get(close + 2..).unwrap_or_default().split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        *by_name.entry(stat[open + 1..close].to_string()).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    by_name
}

/// CPU seconds (user + system) this process has used so far, every thread counted; `None` where
/// /proc is not there.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some(ticks / 100.0)
}
