//! `zcdp bench process`: the same shopper events through a bare consume + decode loop and
//! through all the processors with RocksDB, in the same run on the same cluster; then a
//! restore of every task from its changelogs.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use ingest::validate::{Receipt, parse_event};
use processors::ProcessArgs;
use processors::runtime::checkpoint::{Replayed, restore};
use processors::runtime::task::INPUTS;
use processors::runtime::testing::progress;
use processors::{Member, TaskEvent, TaskObserver};
use schemas::kafka::{Kafka, KafkaArgs};

use crate::shoppers::Shoppers;

#[derive(clap::Args, Debug)]
pub struct ProcessBenchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Events to process.
    #[arg(long, env = "ZCDP_BENCH_EVENTS", default_value_t = 200_000)]
    events: usize,
    /// The processors' --commit-interval.
    #[arg(long = "commit-interval", env = "ZCDP_BENCH_COMMIT_INTERVAL", default_value = "1s", value_parser = schemas::duration::parse_duration)]
    commit_interval: Duration,
    /// Where the bench's RocksDB stores go (removed afterwards).
    #[arg(long = "data-dir", env = "ZCDP_BENCH_DATA_DIR", default_value = "./data/bench")]
    data_dir: std::path::PathBuf,
}

/// Realistic events with times spread like a day of a shop: 50 ms apart on average.
fn history(n: usize) -> anyhow::Result<Vec<schemas::event::InputEvent>> {
    shopper_events(11, 20_000, n, 0)
}

/// 2026-01-01T00:00:00Z: when the generated histories start (in event time).
const HISTORY_START: i64 = 1_767_225_600_000;

/// `n` events of `users` demo shoppers (`seed` picks them), 50 ms apart in event time from
/// [`HISTORY_START`] + `first` × 50 ms, read and checked as the gateway does.
pub(super) fn shopper_events(seed: u64, users: usize, n: usize, first: usize) -> anyhow::Result<Vec<schemas::event::InputEvent>> {
    let mut shoppers = Shoppers::new(seed, users, 300);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = HISTORY_START + (first + i) as i64 * 50;
        let now: DateTime<Utc> = DateTime::from_timestamp_millis(t).context("time")?;
        let json = shoppers.next_event(now);
        let receipt = Receipt { app_id: "demo", received_at: t, sent_at: None };
        match parse_event(&json.to_string(), &receipt) {
            Ok(p) => out.push(p.event()),
            Err(r) => anyhow::bail!("generated event rejected: {}", r.message),
        }
    }
    Ok(out)
}

pub async fn run(args: ProcessBenchArgs) -> anyhow::Result<()> {
    let kafka = Kafka::from_args_or_embedded(&args.kafka, 1)?;
    kafka.ensure_catalogue().await?;
    let events = history(args.events)?;
    eprintln!("bench process: writing {} events to {} partitions on {}", events.len(), kafka.partitions, kafka.bootstrap);
    schemas::testing::produce(&kafka, &events).await?;
    let n = events.len();
    drop(events);

    // Rounds of the three measurements, alternating, so all see the same machine; medians count.
    let mut rounds = Vec::new();
    for round in 0..RUNS {
        rounds.push(one_round(&kafka, &args, n, round).await?);
    }
    let _ = std::fs::remove_dir_all(&args.data_dir);
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let all = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(|r| format!("{:.0}", f(r))).collect::<Vec<_>>().join(", ");
    let bare_rate = median(&|r| n as f64 / r.bare_secs);
    let processed_rate = median(&|r| n as f64 / r.processed_secs);
    let restore_rate = median(&|r| r.restored.entries as f64 / r.restore_secs);
    let restore_mb = median(&|r| r.restored.bytes as f64 / 1e6 / r.restore_secs);
    let restore_secs = median(&|r| r.restore_secs);
    let restored = rounds[0].restored;
    println!();
    println!(
        "Medians of {RUNS} rounds (every round: bare {} records/s; processors {} records/s; restore {} state entries/s).",
        all(&|r| n as f64 / r.bare_secs),
        all(&|r| n as f64 / r.processed_secs),
        all(&|r| r.restored.entries as f64 / r.restore_secs)
    );
    println!("| path | records (restore: state entries) | a second |");
    println!("|---|---:|---:|");
    println!("| bare consume + Avro decode (rdkafka BaseConsumer) | {n} | {bare_rate:.0} |");
    println!(
        "| processors: sessions + interests + carts + profiles + campaign results + activity, RocksDB, changelogs, commit every 1 s | {n} | {processed_rate:.0} |"
    );
    println!("| restore of {} tasks from their changelogs: state entries | {} | {restore_rate:.0} |", kafka.partitions, restored.entries);
    println!();
    let per_event: Vec<String> = rounds[0].per_store.iter().map(|(s, c)| format!("{s} {:.2}", *c as f64 / n as f64)).collect();
    println!("changelog records per input event: {}", per_event.join(", "));
    println!("inputs given up on after --max-task-idle without a record, per round: {}", all(&|r| r.idle_expired as f64));
    println!(
        "share of the processing time spent committing (the member's thread waits), per round: {}",
        rounds.iter().map(|r| format!("{:.0} %", 100.0 * r.committing / r.processed_secs)).collect::<Vec<_>>().join(", ")
    );
    let ratio = processed_rate / bare_rate;
    println!("processors / bare consume + decode: {ratio:.2} (target >= 0.80: {})", if ratio >= 0.8 { "met" } else { "NOT met" });
    println!(
        "restore: the state of {} tasks back in {restore_secs:.2} s: {} state entries from {} changelog records and {:.1} MB, {restore_rate:.0} entries/s, {restore_mb:.1} MB/s (target >= 200000 entries/s, counted as changelog records/s before dedup batches: {})",
        kafka.partitions,
        restored.entries,
        restored.records,
        restored.bytes as f64 / 1e6,
        if restore_rate >= 200_000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Rounds of each measurement; the median counts.
const RUNS: usize = 3;

struct Round {
    bare_secs: f64,
    processed_secs: f64,
    restored: Replayed,
    restore_secs: f64,
    per_store: Vec<(&'static str, i64)>,
    idle_expired: u64,
    /// Seconds the member's thread spent in commits while processing.
    committing: f64,
}

/// The bare loop, the processors (a fresh application id, so fresh state and changelogs), and
/// the restore of what they wrote.
async fn one_round(kafka: &Kafka, args: &ProcessBenchArgs, n: usize, round: usize) -> anyhow::Result<Round> {
    let bare = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || bare_consume_decode(&kafka, n)
    })
    .await??;

    // The processors, with the default commit interval: from the moment the first task runs
    // until every record is processed.
    let app = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let data_dir = args.data_dir.join(format!("round-{round}"));
    let process_args = ProcessArgs {
        application_id: app.clone(),
        data_dir: data_dir.clone(),
        commit_interval: args.commit_interval,
        ..ProcessArgs::default()
    };
    let commit_secs = || processors::runtime::metrics::METRICS.commit_seconds.get_sample_sum();
    let commit_before = commit_secs();
    let started: Arc<Mutex<(usize, Option<Instant>)>> = Arc::default();
    let observer: TaskObserver = {
        let started = started.clone();
        Arc::new(move |_: &str, _: i32, ev: TaskEvent| {
            let mut s = started.lock().expect("lock");
            if ev == TaskEvent::Started {
                s.0 += 1;
                s.1.get_or_insert_with(Instant::now);
            }
        })
    };
    let topology = processors::topology(&process_args)?;
    let member = Member::start(&kafka, &process_args, topology.clone(), Some(observer)).await?;
    let processed =
        || -> u64 { INPUTS.iter().map(|t| processors::runtime::metrics::METRICS.records.with_label_values(&[t.name()]).get()).sum() };
    let expired = || -> Vec<u64> {
        INPUTS.iter().map(|t| processors::runtime::metrics::METRICS.idle_expired.with_label_values(&[t.name()]).get()).collect()
    };
    // The counters are the process's: count from where the earlier rounds left them.
    let (processed_before, expired_before) = (processed(), expired());
    let mut last = (processed_before, Instant::now());
    while processed() - processed_before < n as u64 {
        anyhow::ensure!(!member.finished(), "the processors stopped");
        if processed() != last.0 {
            last = (processed(), Instant::now());
        }
        anyhow::ensure!(
            last.1.elapsed() < Duration::from_secs(60),
            "the processors processed {} of {n} records, then nothing for a minute: the broker is too slow or unreachable",
            processed() - processed_before
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished = Instant::now();
    let committing = commit_secs() - commit_before;
    let idle_expired: u64 = expired().iter().zip(&expired_before).map(|(a, b)| a - b).sum();
    let began = started.lock().expect("lock").1.context("tasks never all started")?;
    let processed_secs = finished.duration_since(began).as_secs_f64();
    // Everything processed is committed (flushed, checkpointed) before the restore.
    tokio::task::spawn_blocking(move || member.stop()).await??;
    anyhow::ensure!(progress(&kafka, &format!("zcdp-{app}")).await.0 >= n as i64, "not every record was committed");

    // What the state costs in changelog records, store by store.
    let per_store: Vec<(&str, i64)> = {
        let (kafka, app, stores) = (kafka.clone(), app.clone(), topology.stores().to_vec());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(&'static str, i64)>> {
            let c: BaseConsumer = kafka.client_config().create()?;
            let mut out = Vec::new();
            for store in stores {
                let topic = processors::runtime::checkpoint::changelog_topic(&app, store);
                let mut total = 0;
                for p in 0..kafka.partitions {
                    let (low, high) = c.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
                    total += high - low;
                }
                out.push((store, total));
            }
            Ok(out)
        })
        .await??
    };

    // Restore every task from scratch, one thread per task, as a member taking them over would.
    let restore_dir = data_dir.join("restore");
    let restore_started = Instant::now();
    let handles: Vec<_> = (0..kafka.partitions)
        .map(|task| {
            let (kafka, app, dir, stores) =
                (kafka.clone(), app.clone(), restore_dir.join(format!("task-{task}")), topology.stores().to_vec());
            std::thread::spawn(move || {
                let inputs: Vec<&str> = INPUTS.iter().map(|t| t.name()).collect();
                restore(&kafka, &app, task, &dir, &stores, &inputs, &AtomicBool::new(false)).map(|r| r.replayed)
            })
        })
        .collect();
    let mut restored = Replayed::default();
    for h in handles {
        restored += h.join().map_err(|_| anyhow::anyhow!("restore thread panicked"))??;
    }
    let restore_secs = restore_started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&data_dir);

    Ok(Round { bare_secs: bare, processed_secs, restored, restore_secs, per_store, idle_expired, committing })
}

/// Seconds to read and decode `n` input records with a plain consumer, from the beginning of
/// every input partition.
fn bare_consume_decode(kafka: &Kafka, n: usize) -> anyhow::Result<f64> {
    let mut tpl = TopicPartitionList::new();
    for t in INPUTS {
        for p in 0..kafka.partitions {
            tpl.add_partition_offset(t.name(), p, Offset::Beginning)?;
        }
    }
    bare_consume_decode_from(kafka, &tpl, n)
}

/// Seconds to read and decode `n` input records with a plain consumer from the positions of
/// `tpl` (the baseline both `bench process` and `bench scale` compare the processors with).
pub(super) fn bare_consume_decode_from(kafka: &Kafka, tpl: &TopicPartitionList, n: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("bench-bare-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.min.messages", "100000")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.assign(tpl)?;
    let mut seen = 0usize;
    let mut start = None;
    let mut last = Instant::now();
    while seen < n {
        anyhow::ensure!(
            last.elapsed() < Duration::from_secs(60),
            "the bare consumer read {seen} of {n} records, then nothing for a minute: the broker is too slow, unreachable, or no longer holds them"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            last = Instant::now();
            start.get_or_insert_with(Instant::now);
            let topic = INPUTS.iter().find(|t| t.name() == m.topic()).context("input topic")?;
            let e = schemas::codec::decode_input(*topic, m.payload().unwrap_or_default())?;
            std::hint::black_box(&e);
            seen += 1;
        }
    }
    Ok(start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0))
}
