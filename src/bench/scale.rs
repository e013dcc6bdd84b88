//! `zcdp bench scale --users N`: N users' histories (about twenty events each, the demo's mix)
//! through the processors and into a `zcdp serve` replica (a child process, so its memory is its
//! own), then one table of what grows with the users, each figure beside its baseline in the same
//! run where one exists.
//!
//! The history goes in waves of [`WAVE_USERS`] users. Each wave is written to the input topics,
//! read by a bare consume + decode loop (the baseline), then processed by the processors, whose
//! state keeps growing from wave to wave (one application id, one data dir). Waves keep every
//! wave's records within what the embedded cluster holds: it keeps the last 5 MB of each
//! partition, so a whole history of a million users cannot sit in it at once.

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use ingest::validate::{Receipt, parse_event};
use processors::runtime::metrics::METRICS;
use processors::runtime::task::INPUTS;
use processors::{Member, ProcessArgs, TaskEvent, TaskObserver};
use schemas::event::InputEvent;
use schemas::kafka::{Kafka, KafkaArgs};
use schemas::topics::Topic;

use super::{quantile, serve::drive};
use crate::shoppers::Shoppers;

#[derive(clap::Args, Debug)]
pub struct ScaleBenchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Users whose histories go through the pipeline.
    #[arg(long, env = "ZCDP_BENCH_USERS", default_value_t = 100_000)]
    users: usize,
    /// Events per user, on average.
    #[arg(long = "events-per-user", default_value_t = 20)]
    events_per_user: usize,
    /// Where the processors' and the view's RocksDB go (removed afterwards).
    #[arg(long = "data-dir", env = "ZCDP_BENCH_DATA_DIR", default_value = "./data/bench-scale")]
    data_dir: std::path::PathBuf,
    /// How long lookups, and the load of the latency measure, are driven.
    #[arg(long, default_value = "10s", value_parser = schemas::duration::parse_duration)]
    duration: Duration,
}

/// Users per wave: 5,000 users' ~100,000 events. Views, the most common, then take ~3 MB of each
/// views partition (6 partitions), within the embedded cluster's 5 MB.
const WAVE_USERS: usize = 5_000;

/// The secret key the bench reads the replica with.
const READ_KEY: &str = "bench-scale-secret-key-0123456789";

fn wave_events(wave: usize, users: usize, per_user: usize, first: usize) -> anyhow::Result<Vec<InputEvent>> {
    // A seed per wave: its shoppers' ids (`dev-<seed>-…`, Zalo ids from the seed) are its own.
    super::process::shopper_events(1 + wave as u64, users, users * per_user, first)
}

/// Each input partition's (start, end).
fn input_watermarks(kafka: &Kafka) -> anyhow::Result<Vec<(&'static str, i32, i64, i64)>> {
    let c: BaseConsumer = kafka.client_config().create()?;
    let mut out = Vec::new();
    for t in INPUTS {
        for p in 0..kafka.partitions {
            let (low, high) = c.fetch_watermarks(t.name(), p, Duration::from_secs(10))?;
            out.push((t.name(), p, low, high));
        }
    }
    Ok(out)
}

/// Seconds to read and decode the `n` input records written after `from`, with a plain consumer.
fn bare_consume_decode(kafka: &Kafka, from: &[(&'static str, i32, i64)], n: usize) -> anyhow::Result<f64> {
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in from {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    super::process::bare_consume_decode_from(kafka, &tpl, n)
}

fn processed() -> u64 {
    INPUTS.iter().map(|t| METRICS.records.with_label_values(&[t.name()]).get()).sum()
}

fn changelog_totals() -> (u64, u64) {
    let stores = ["sessions", "interests", "carts", "profiles", "campaign-results", "activity", "dedup"];
    let sum = |m: &prometheus::IntCounterVec| stores.iter().map(|s| m.with_label_values(&[s]).get()).sum::<u64>();
    (sum(&METRICS.changelog_records), sum(&METRICS.changelog_bytes))
}

/// Starts the processors and waits until every task runs.
async fn start_member(kafka: &Kafka, args: &ProcessArgs) -> anyhow::Result<Member> {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let observer: TaskObserver = {
        let started = started.clone();
        Arc::new(move |_: &str, _: i32, ev: TaskEvent| {
            if ev == TaskEvent::Started {
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let member = Member::start(kafka, args, processors::topology(args)?, Some(observer)).await?;
    let all = kafka.partitions as usize;
    schemas::testing::eventually(Duration::from_secs(120), "every task running", || {
        let started = started.clone();
        async move { (started.load(std::sync::atomic::Ordering::Relaxed) >= all).then_some(()) }
    })
    .await;
    Ok(member)
}

/// A `zcdp serve` child process on the same cluster.
struct Replica {
    child: std::process::Child,
    base: String,
    /// Times its consumer found its position gone (the embedded cluster pruned records it had
    /// not read yet) and skipped ahead: records lost to the view.
    skipped_ahead: Arc<std::sync::atomic::AtomicUsize>,
}

impl Replica {
    fn start(kafka: &Kafka, view_dir: &std::path::Path) -> anyhow::Result<Replica> {
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe)
            .args(["serve", "--log", "warn", "--http", "127.0.0.1:0", "--brokers", &kafka.bootstrap])
            .args(["--partitions", &kafka.partitions.to_string(), "--secret-keys", &format!("demo:{READ_KEY}")])
            .args(["--session-secret", &uuid::Uuid::new_v4().simple().to_string().repeat(2)])
            .arg("--view-dir")
            .arg(view_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting zcdp serve")?;
        let out = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(out).lines();
        let base = loop {
            let line = lines.next().context("zcdp serve ended before it listened")??;
            if let Some(rest) = line.strip_prefix("zcdp: query API on ") {
                break rest.split_whitespace().next().context("address")?.to_string();
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let skipped_ahead = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let err = child.stderr.take().context("stderr")?;
        let count = skipped_ahead.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("Offset out of range") {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Ok(Replica { child, base, skipped_ahead })
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
            * 1024
    }

    async fn metric(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let text = client.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).unwrap_or(0.0))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// Every record the view follows that was ever written (offsets count the pruned ones too).
fn view_topics_written(kafka: &Kafka) -> anyhow::Result<i64> {
    let c: BaseConsumer = kafka.client_config().create()?;
    let mut total = 0;
    for t in [Topic::Profiles, Topic::Interests, Topic::Audiences, Topic::CampaignResults, Topic::Activity] {
        for p in 0..kafka.partitions {
            let (_, high) = c.fetch_watermarks(t.name(), p, Duration::from_secs(10))?;
            total += high;
        }
    }
    Ok(total)
}

/// Up to `n` user keys of profiles still in the topic.
fn some_user_keys(kafka: &Kafka, n: usize) -> anyhow::Result<Vec<String>> {
    let c: BaseConsumer = kafka.client_config().set("group.id", format!("bench-keys-{}", uuid::Uuid::new_v4())).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..kafka.partitions {
        tpl.add_partition_offset(Topic::Profiles.name(), p, Offset::OffsetTail((n / kafka.partitions as usize + 1) as i64))?;
    }
    c.assign(&tpl)?;
    let mut keys = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while keys.len() < n && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            if let Some((_, user)) = m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(schemas::topics::split_app_user_key) {
                keys.insert(user.to_string());
            }
        } else if !keys.is_empty() {
            break;
        }
    }
    Ok(keys.into_iter().collect())
}

pub async fn run(args: ScaleBenchArgs) -> anyhow::Result<()> {
    let kafka = Kafka::from_args_or_embedded(&args.kafka, 1)?;
    kafka.ensure_catalogue().await?;
    let _ = std::fs::remove_dir_all(&args.data_dir);
    let process_args = ProcessArgs {
        application_id: format!("bench-scale-{}", uuid::Uuid::new_v4().simple()),
        data_dir: args.data_dir.join("processors"),
        ..ProcessArgs::default()
    };
    let replica = Replica::start(&kafka, &args.data_dir.join("view"))?;
    let http = reqwest::Client::new();
    schemas::testing::eventually(Duration::from_secs(60), "the replica ready", || async {
        http.get(format!("{}/readyz", replica.base)).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let rss_empty = replica.rss_bytes();

    // The waves.
    let waves = args.users.div_ceil(WAVE_USERS);
    let (mut events, mut bare_secs, mut processed_secs) = (0usize, 0.0, 0.0);
    let mut per_wave = Vec::new();
    let member = start_member(&kafka, &process_args).await?;
    for wave in 0..waves {
        let users = WAVE_USERS.min(args.users - wave * WAVE_USERS);
        let batch = wave_events(wave, users, args.events_per_user, events)?;
        let n = batch.len();
        let from: Vec<(&str, i32, i64)> = input_watermarks(&kafka)?.into_iter().map(|(t, p, _, high)| (t, p, high)).collect();
        // The processors, running, take the wave as it is written: from the first write to the
        // last record processed (the writer's CPU counts against them).
        let before = processed();
        let started = Instant::now();
        schemas::testing::produce(&kafka, &batch).await?;
        drop(batch);
        let mut last = (before, Instant::now());
        while processed() - before < n as u64 {
            anyhow::ensure!(!member.finished(), "the processors stopped");
            if processed() != last.0 {
                last = (processed(), Instant::now());
            }
            anyhow::ensure!(
                last.1.elapsed() < Duration::from_secs(60),
                "the processors processed {} of wave {}'s {n} records, then nothing for a minute (a slow broker?)",
                processed() - before,
                wave + 1
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        for ((t, p, start, _), (_, _, wave_start)) in input_watermarks(&kafka)?.into_iter().zip(&from) {
            anyhow::ensure!(
                start <= *wave_start,
                "{t}/{p} no longer holds the start of wave {wave}: the cluster dropped records before they were read (the embedded cluster keeps the last 5 MB of a partition)"
            );
        }
        // The baseline, the processors idle: the same records, read and decoded.
        let bare = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            move || bare_consume_decode(&kafka, &from, n)
        })
        .await??;
        events += n;
        bare_secs += bare;
        processed_secs += secs;
        per_wave.push((n as f64 / bare, n as f64 / secs));
        if wave == 0 || (wave + 1) % 10 == 0 || wave + 1 == waves {
            eprintln!(
                "bench scale: wave {}/{waves}: {} users so far; bare {:.0}, processors {:.0} events/s",
                wave + 1,
                (wave * WAVE_USERS + users),
                n as f64 / bare,
                n as f64 / secs,
            );
        }
    }
    let (changelog_records, changelog_bytes) = changelog_totals();

    // The replica has read every record the processors wrote (or says how many it missed).
    let written = view_topics_written(&kafka)?;
    let view_read = {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let read = replica.metric(&http, "zcdp_query_view_records_read_total").await? as i64;
            if read >= written || Instant::now() > deadline {
                break read;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let rss_full = replica.rss_bytes();
    let view_disk = dir_bytes(&args.data_dir.join("view"));

    // Live: half the processors' rate at the full size (the last wave's), stamped now; probes
    // measure event → profile and cart lateness.
    let rate = per_wave.last().map(|w| w.1).unwrap_or(1000.0) / 2.0;
    let live = live_phase(&kafka, &process_args, &replica, rate, args.duration, args.events_per_user).await?;
    tokio::task::spawn_blocking(move || member.stop()).await??;
    let rocksdb_bytes = dir_bytes(&process_args.data_dir);
    // Lookups at 1,000 a second, and engagement refreshes meanwhile (the replica refreshes every
    // 2 s), with the processors stopped: a replica has its own machine in a deployment.
    let keys = some_user_keys(&kafka, 5000)?;
    anyhow::ensure!(!keys.is_empty(), "no profile in the topic to look up");
    let (refresh_sum0, refresh_n0) = (
        replica.metric(&http, "zcdp_query_engagement_refresh_seconds_sum").await?,
        replica.metric(&http, "zcdp_query_engagement_refresh_seconds_count").await?,
    );
    let lookups = (args.duration.as_secs_f64() * 1000.0) as usize;
    let urls: Vec<String> = (0..lookups).map(|i| format!("{}/v1/users/{}/profile", replica.base, keys[(i * 7919) % keys.len()])).collect();
    let profile_lat = drive(urls, 1000, READ_KEY).await?;
    let urls: Vec<String> =
        (0..lookups).map(|i| format!("{}/v1/users/{}/recommendations?limit=10", replica.base, keys[(i * 7919) % keys.len()])).collect();
    let recs_lat = drive(urls, 1000, READ_KEY).await?;
    let refresh_ms = {
        let sum = replica.metric(&http, "zcdp_query_engagement_refresh_seconds_sum").await? - refresh_sum0;
        let n = replica.metric(&http, "zcdp_query_engagement_refresh_seconds_count").await? - refresh_n0;
        if n > 0.0 { sum / n * 1000.0 } else { f64::NAN }
    };

    let replica_skipped = replica.skipped_ahead.load(std::sync::atomic::Ordering::Relaxed);
    drop(replica);
    let restored = if kafka.is_embedded() { None } else { Some(restore_all(&kafka, &process_args).await?) };
    let _ = std::fs::remove_dir_all(&args.data_dir);

    let n = events as f64;
    let (bare_rate, proc_rate) = (n / bare_secs, n / processed_secs);
    let users = args.users as f64;
    println!();
    println!(
        "{} users, {events} events ({:.1} a user) in {waves} waves of up to {WAVE_USERS} users, on {} ({} partitions).",
        args.users,
        n / users,
        if kafka.is_embedded() { "the embedded cluster".to_string() } else { kafka.bootstrap.clone() },
        kafka.partitions
    );
    println!("| figure | value | baseline in this run |");
    println!("|---|---:|---|");
    println!(
        "| processors, events/s (all waves) | {proc_rate:.0} | bare consume + decode {bare_rate:.0}: ratio {:.2} |",
        proc_rate / bare_rate
    );
    let (first, last) = (per_wave.first().copied().unwrap_or_default(), per_wave.last().copied().unwrap_or_default());
    println!("| processors, first wave → last wave, events/s | {:.0} → {:.0} | bare {:.0} → {:.0} |", first.1, last.1, first.0, last.0);
    println!("| changelog records per input event | {:.3} | — |", changelog_records as f64 / n);
    println!("| changelog bytes per input event | {:.0} | — |", changelog_bytes as f64 / n);
    println!("| RocksDB bytes per user (processors' state on disk) | {:.0} | — |", rocksdb_bytes as f64 / users);
    if let Some((secs, entries, bytes)) = restored {
        println!(
            "| restore of the whole state | {secs:.1} s | {entries} entries, {:.0} MB: {:.0} entries/s, {:.1} MB/s |",
            bytes as f64 / 1e6,
            entries as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    } else {
        println!(
            "| restore of the whole state | not measured | the embedded cluster keeps the last 5 MB of a partition: run with --brokers |"
        );
    }
    println!(
        "| query view RSS per user | {:.0} B | RSS {:.0} MB with every user, {:.0} MB empty; on disk {:.0} B a user |",
        (rss_full.saturating_sub(rss_empty)) as f64 / users,
        rss_full as f64 / 1e6,
        rss_empty as f64 / 1e6,
        view_disk as f64 / users
    );
    println!(
        "| query view records read / written; times it fell behind the cluster's window and skipped records | {view_read} / {written}; {} | — |",
        replica_skipped
    );
    println!(
        "| GET /v1/users/{{id}}/profile at 1,000/s (processors stopped), p50 / p99 ms | {:.2} / {:.2} | — |",
        quantile(&profile_lat, 0.5),
        quantile(&profile_lat, 0.99)
    );
    println!(
        "| GET /v1/users/{{id}}/recommendations at 1,000/s (processors stopped), p50 / p99 ms | {:.2} / {:.2} | — |",
        quantile(&recs_lat, 0.5),
        quantile(&recs_lat, 0.99)
    );
    println!("| engagement refresh, ms (every app, from the tallies) | {refresh_ms:.3} | — |");
    println!(
        "| event → profile in the query API at {:.0} events/s (half the processors' rate), p50 / p99 ms | {:.0} / {:.0} | {} probes |",
        rate,
        quantile(&live.fresh, 0.5),
        quantile(&live.fresh, 0.99),
        live.fresh.len()
    );
    println!(
        "| cart trigger after its deadline, p50 / p99 ms | {:.0} / {:.0} | {} carts |",
        quantile(&live.late, 0.5),
        quantile(&live.late, 0.99),
        live.late.len()
    );
    println!();
    println!(
        "processors / bare consume + decode: {:.2}; event → profile p99 {:.0} ms (target < 500: {}); lookups p99 {:.2} ms (target < 5: {})",
        proc_rate / bare_rate,
        quantile(&live.fresh, 0.99),
        if quantile(&live.fresh, 0.99) < 500.0 { "met" } else { "NOT met" },
        quantile(&profile_lat, 0.99),
        if quantile(&profile_lat, 0.99) < 5.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

struct Live {
    /// Event → profile visible, ms.
    fresh: Vec<f64>,
    /// Cart trigger seen − its deadline, ms.
    late: Vec<f64>,
}

/// Live traffic at `rate` events/s for `duration`, to the running processors; every 100 ms a probe
/// user orders (and its time to show in the replica's profile is measured) and a cart is added
/// whose abandonment deadline falls a second later (and the trigger's lateness is measured).
async fn live_phase(
    kafka: &Kafka,
    args: &ProcessArgs,
    replica: &Replica,
    rate: f64,
    duration: Duration,
    per_user: usize,
) -> anyhow::Result<Live> {
    // The traffic, stamped with the times it will be sent at.
    let count = (rate * duration.as_secs_f64()) as usize;
    let start = chrono::Utc::now().timestamp_millis() + 2_000 + (count / 200) as i64;
    let traffic: Vec<(i64, InputEvent)> = {
        let mut shoppers = Shoppers::new(90_001, (count / per_user.max(1)).max(1), 300);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let t = start + (i as f64 * 1000.0 / rate) as i64;
            let json = shoppers.next_event(DateTime::from_timestamp_millis(t).context("time")?);
            let receipt = Receipt { app_id: "demo", received_at: t, sent_at: None };
            out.push((t, parse_event(&json.to_string(), &receipt).map_err(|r| anyhow::anyhow!(r.message))?.event()));
        }
        out
    };
    let producer: FutureProducer = kafka.producer_config().set("linger.ms", "5").create()?;
    let send = |e: &InputEvent| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        schemas::codec::encode_input_into(e, &mut buf)?;
        let record = FutureRecord::to(e.topic().name()).key(e.user().key.as_bytes()).payload(&buf);
        producer.send_result(record).map(drop).map_err(|(e, _)| anyhow::anyhow!(e))
    };
    let triggers = kafka.tail(&[Topic::CartTriggers.name()], "bench-scale")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let cart_timeout = args.cart_timeout.as_millis() as i64;
    let http = reqwest::Client::new();
    let mut fresh = Vec::new();
    let mut waiting: Vec<(String, Instant)> = Vec::new();
    let mut deadlines = std::collections::HashMap::new();
    let mut late = Vec::new();
    let mut next = 0;
    let mut probe = 0;
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis((start - Utc::now().timestamp_millis()).max(0) as u64))
        .await;
    let end = start + duration.as_millis() as i64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        let now = Utc::now().timestamp_millis();
        while next < traffic.len() && traffic[next].0 <= now {
            send(&traffic[next].1)?;
            next += 1;
        }
        if now < end && now >= start + probe * 100 {
            let user = format!("probe-{run}-{probe}");
            let at = |t: i64| DateTime::from_timestamp_millis(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            let order = serde_json::json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "order_placed", "event_time": at(now),
                "user": {"zalo_id": user}, "properties": {"order_id": format!("o-{user}"), "total": 50000,
                "items": [{"product_id": "p1", "category": "coffee", "quantity": 1, "price": 50000}]}});
            let cart_user = format!("cart-{user}");
            let added = now - cart_timeout + 1000;
            let cart = serde_json::json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "cart_item_added", "event_time": at(added),
                "user": {"zalo_id": cart_user}, "properties": {"cart_id": format!("c-{user}"), "product_id": "p1", "category": "coffee",
                "quantity": 1, "price": 50000}});
            for (json, t) in [(order, now), (cart, added)] {
                let receipt = Receipt { app_id: "demo", received_at: now.max(t), sent_at: None };
                send(&parse_event(&json.to_string(), &receipt).map_err(|r| anyhow::anyhow!(r.message))?.event())?;
            }
            waiting.push((user, Instant::now()));
            deadlines.insert(cart_user, added + cart_timeout);
            probe += 1;
        }
        // Probes: one lookup each per tick.
        let mut still = Vec::new();
        for (user, sent) in waiting.drain(..) {
            let r = http.get(format!("{}/v1/users/{user}/profile", replica.base)).bearer_auth(READ_KEY).send().await?;
            let shown = r.status().is_success() && r.json::<serde_json::Value>().await?["orders"].as_i64().unwrap_or(0) >= 1;
            if shown {
                fresh.push(sent.elapsed().as_secs_f64() * 1000.0);
            } else if sent.elapsed() < Duration::from_secs(30) {
                still.push((user, sent));
            }
        }
        waiting = still;
        while let Some(m) = triggers.next(Duration::ZERO).await {
            if let Some(Ok(t)) = m.payload().map(schemas::codec::decode::<schemas::derived::CartTrigger>)
                && let Some(deadline) = t.user.zalo_id.as_deref().and_then(|z| deadlines.remove(z))
            {
                late.push((Utc::now().timestamp_millis() - deadline) as f64);
            }
        }
        if next >= traffic.len() && now >= end && waiting.is_empty() && (deadlines.is_empty() || now > end + 30_000) {
            break;
        }
    }
    fresh.sort_by(f64::total_cmp);
    late.sort_by(f64::total_cmp);
    Ok(Live { fresh, late })
}

/// Restores every task from its changelogs from scratch, one thread per task: seconds, state
/// entries, bytes.
async fn restore_all(kafka: &Kafka, args: &ProcessArgs) -> anyhow::Result<(f64, u64, u64)> {
    use processors::runtime::checkpoint::{Replayed, restore};
    let topology = processors::topology(args)?;
    let dir = args.data_dir.with_file_name("restore");
    let started = Instant::now();
    let handles: Vec<_> = (0..kafka.partitions)
        .map(|task| {
            let (kafka, app, dir, stores) =
                (kafka.clone(), args.application_id.clone(), dir.join(format!("task-{task}")), topology.stores().to_vec());
            std::thread::spawn(move || {
                let inputs: Vec<&str> = INPUTS.iter().map(|t| t.name()).collect();
                restore(&kafka, &app, task, &dir, &stores, &inputs, &std::sync::atomic::AtomicBool::new(false)).map(|r| r.replayed)
            })
        })
        .collect();
    let mut all = Replayed::default();
    for h in handles {
        all += h.join().map_err(|_| anyhow::anyhow!("restore thread panicked"))??;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((started.elapsed().as_secs_f64(), all.entries, all.bytes))
}
