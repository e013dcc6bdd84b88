//! `zcdp bench ingest`: the same shopper events through the gateway over loopback HTTP, and
//! straight into a bare rdkafka producer (already encoded), on the same cluster in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;

use ingest::validate::{Receipt, parse_event};
use ingest::{Gateway, IngestArgs};
use schemas::kafka::{Kafka, KafkaArgs};

use super::quantile;
use crate::server;
use crate::shoppers::Shoppers;
use crate::shutdown::Shutdown;

#[derive(clap::Args, Debug)]
pub struct IngestBenchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Events in each run.
    #[arg(long, env = "ZCDP_BENCH_EVENTS", default_value_t = 200_000)]
    events: usize,
    /// Events a request.
    #[arg(long, env = "ZCDP_BENCH_BATCH", default_value_t = 200)]
    batch: usize,
    /// Requests in flight at once. Enough to keep the gateway busy: with 16, both cores were
    /// ~12% idle while requests waited for Kafka's acknowledgements (1.73 - 1.76 busy, against
    /// 1.77 - 1.87 with 24).
    #[arg(long, env = "ZCDP_BENCH_CONCURRENCY", default_value_t = 24)]
    concurrency: usize,
    /// Producer linger for both paths.
    #[arg(long, env = "ZCDP_BENCH_LINGER", default_value = "2ms", value_parser = schemas::duration::parse_duration)]
    linger: Duration,
}

/// Runs of each path; the median counts.
const RUNS: usize = 5;

struct Row {
    path: &'static str,
    events: usize,
    secs: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// CPU seconds the whole process used during the run.
    cpu_secs: Option<f64>,
    /// CPU seconds by [`THREAD_GROUPS`].
    threads: [f64; THREAD_GROUPS.len()],
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    let kafka = Kafka::from_args_or_embedded(&args.kafka, 1)?;
    kafka.ensure_catalogue().await?;
    eprintln!(
        "bench ingest: {} events in batches of {}, {} requests in flight, cluster {}",
        args.events, args.batch, args.concurrency, kafka.bootstrap
    );

    // The traffic, generated once: HTTP bodies for the gateway, encoded records for the baseline.
    let mut shoppers = Shoppers::new(42, 20_000, 200);
    let now = Utc::now();
    let bodies: Vec<Bytes> = (0..args.events.div_ceil(args.batch))
        .map(|i| {
            let n = args.batch.min(args.events - i * args.batch);
            Bytes::from(serde_json::to_vec(&shoppers.batch(n, now)).expect("json"))
        })
        .collect();
    let ingest_args = IngestArgs { rate_limit: 0, linger: args.linger, ..IngestArgs::default() };
    // Counted here, not in `drive`: parsing 200,000 events with serde_json is no part of a run
    // and would otherwise land in its CPU column.
    let counts: Vec<usize> = bodies
        .iter()
        .map(|b| serde_json::from_slice::<serde_json::Value>(b).map(|v| v["events"].as_array().map_or(0, Vec::len)).unwrap_or(0))
        .collect();
    let gateway = Gateway::start(&kafka, &ingest_args).await?;
    let records = encode_like_the_gateway(&bodies, gateway.origin())?;
    let stages = stage_costs(&bodies)?;
    let shutdown = Shutdown::default();
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    let http = tokio::spawn(server::serve(listener, gateway.router(), server::Limits::default(), shutdown.clone()));
    let addr = addr.to_string();
    wait_ready(&addr).await?;
    // Whole HTTP requests, made before any clock starts (the bodies are not needed after this).
    let requests: Vec<Bytes> = bodies.iter().map(|body| batch_request(&addr, body)).collect();
    drop(bodies);

    let bare = Bare::new(&kafka, &records, args.linger).await?;
    // Five runs of each, alternating, so both see the same machine; the median counts.
    let mut bares = Vec::new();
    let mut fulls = Vec::new();
    for _ in 0..RUNS {
        bares.push(with_cpu(bare.run(&records)).await?);
        fulls.push(with_cpu(drive(&addr, &requests, &counts, args.concurrency, None, "gateway POST /v1/batch")).await?);
    }
    // The baseline's producer goes before the cluster does.
    drop(bare);
    let all = |rows: &[Row]| rows.iter().map(|r| format!("{:.0}", r.rate())).collect::<Vec<_>>().join(", ");
    let runs = format!("every run, events/s: bare {}; gateway {}", all(&bares), all(&fulls));
    let bare = median(bares);
    let full = median(fulls);
    let half_rate = bare.rate() / 2.0;
    let paced_requests = &requests[..requests.len().min(((half_rate * 10.0) as usize / args.batch).max(20))];
    let paced = with_cpu(drive(
        &addr,
        paced_requests,
        &counts[..paced_requests.len()],
        args.concurrency,
        Some(half_rate),
        "gateway at half the bare rate",
    ))
    .await?;

    shutdown.trigger();
    http.await??;
    gateway.shutdown(Duration::from_secs(10)).await;
    drop(gateway);

    println!();
    println!("Median of {RUNS} runs for the first two rows ({runs}).");
    println!("| path | events | seconds | events/s | p50 ms | p99 ms | CPU µs/event | cores busy |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in [&bare, &full, &paced] {
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let per_event = r.cpu_secs.map(|c| format!("{:.1}", c * 1e6 / r.events as f64)).unwrap_or_else(|| "-".into());
        let cores = r.cpu_secs.map(|c| format!("{:.2}", c / r.secs)).unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {per_event} | {cores} |",
            r.path,
            r.events,
            r.secs,
            r.rate(),
            ms(r.p50_ms),
            ms(r.p99_ms)
        );
    }
    println!();
    println!("CPU µs per event by thread (10 ms ticks):");
    println!("| path | {} |", THREAD_GROUPS.map(|(_, what)| what).join(" | "));
    println!("|---|{}", "---:|".repeat(THREAD_GROUPS.len()));
    for r in [&bare, &full, &paced] {
        let cells: Vec<String> = r.threads.iter().map(|s| format!("{:.2}", s * 1e6 / r.events as f64)).collect();
        println!("| {} | {} |", r.path, cells.join(" | "));
    }
    println!();
    println!("Gateway work per event on one thread, same bodies (µs): {stages}");
    println!();
    let ratio = full.rate() / bare.rate();
    println!("gateway / bare producer: {ratio:.2} (target >= 0.50: {})", if ratio >= 0.5 { "met" } else { "NOT met" });
    let p99 = paced.p99_ms.unwrap_or(f64::NAN);
    println!(
        "batch p99 at half the bare rate ({half_rate:.0} events/s): {p99:.1} ms (target < 50 ms: {})",
        if p99 < 50.0 { "met" } else { "NOT met" }
    );
    if paced.rate() < half_rate * 0.95 {
        println!(
            "  (the gateway did not reach that rate: the paced row ran at {:.0} events/s, as fast as it could, so its p99 is at full load)",
            paced.rate()
        );
    }
    Ok(())
}

/// Where a run's CPU went, by the threads that spent it.
const THREAD_GROUPS: [(&str, &str); 5] = [
    ("tokio-rt-worker", "tokio workers (HTTP server and client, gateway work)"),
    ("rdk:broker", "librdkafka broker threads"),
    ("rdk:mock", "embedded broker"),
    ("producer pollin", "delivery reports"),
    ("", "other threads"),
];

fn thread_group(name: &str) -> usize {
    THREAD_GROUPS.iter().position(|(prefix, _)| name.starts_with(prefix)).unwrap_or(THREAD_GROUPS.len() - 1)
}

/// Runs a path and notes the CPU the process spent meanwhile.
async fn with_cpu(run: impl std::future::Future<Output = anyhow::Result<Row>>) -> anyhow::Result<Row> {
    let before = super::cpu_seconds();
    let threads_before = super::thread_cpu_seconds();
    let mut row = run.await?;
    for (name, secs) in super::thread_cpu_seconds() {
        row.threads[thread_group(&name)] += secs - threads_before.get(&name).unwrap_or(&0.0);
    }
    row.cpu_secs = before.zip(super::cpu_seconds()).map(|(a, b)| b - a);
    Ok(row)
}

fn median(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    rows.swap_remove(rows.len() / 2)
}

/// A record as the gateway writes it: topic, key, payload, and the origin header on consents.
struct Encoded {
    topic: &'static str,
    key: String,
    payload: Vec<u8>,
    consent: bool,
}

/// Every event encoded exactly as the gateway would, headers included (so the gateway's consent
/// view skips the baseline's records as it skips its own).
fn encode_like_the_gateway(bodies: &[Bytes], origin: &str) -> anyhow::Result<(Vec<Encoded>, String)> {
    let receipt = Receipt { app_id: "demo", received_at: schemas::time::now_ms(), sent_at: None };
    let mut out = Vec::new();
    for body in bodies {
        let v: serde_json::Value = serde_json::from_slice(body)?;
        for e in v["events"].as_array().context("events")? {
            let parsed = parse_event(&e.to_string(), &receipt).map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.message))?;
            let consent = parsed.consent.is_some();
            out.push(Encoded { topic: parsed.topic.name(), key: parsed.key, payload: parsed.payload, consent });
        }
    }
    Ok((out, origin.to_string()))
}

/// What the gateway's own work costs per event, on one thread over every body: reading,
/// checking and encoding the events (one pass), then framing each record with its times; and,
/// for scale, checking the same text as JSON alone. The rest of a request (HTTP, the producer,
/// the broker) is what the bare producer row has too, or hyper's.
fn stage_costs(bodies: &[Bytes]) -> anyhow::Result<String> {
    let mut events = 0usize;
    let (mut read, mut frame, mut syntax) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut buf = Vec::with_capacity(1024);
    for body in bodies {
        let text = std::str::from_utf8(body)?;
        let t = Instant::now();
        let mut r = ingest::json::Reader::new(text);
        r.skip()?;
        r.finish()?;
        syntax += t.elapsed();
        let t = Instant::now();
        let batch = ingest::validate::read_batch(text, "demo").map_err(|e| anyhow::anyhow!(e))?;
        read += t.elapsed();
        events += batch.count;
        let t = Instant::now();
        for c in &batch.events.checked {
            if let ingest::validate::Checked::Accepted(_, e) = c {
                e.frame(&batch.events.buf, &e.times(None, 1), schemas::event::Trust::Unverified, &mut buf);
            }
        }
        frame += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
    let bytes: usize = bodies.iter().map(Bytes::len).sum();
    Ok(format!(
        "read, checked and encoded {:.2}, framed {:.2}; total {:.2} (the JSON syntax alone: {:.2}; {} bytes of JSON an event)",
        per(read),
        per(frame),
        per(read + frame),
        per(syntax),
        bytes / events.max(1)
    ))
}

/// Counts deliveries; the baseline waits until all are in.
struct Count(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize);

impl rdkafka::ClientContext for Count {}

impl rdkafka::producer::ProducerContext for Count {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let slot = if r.is_ok() { &self.0 } else { &self.1 };
        slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The raw client at its fastest: a threaded producer and a counter, no futures. Made once and
/// warmed up (metadata, connections, the idempotent producer id), as the gateway's producer is
/// by the time it is measured: a cold producer's first records wait for all that, and made the
/// baseline swing between runs.
struct Bare {
    producer: rdkafka::producer::ThreadedProducer<Count>,
}

impl Bare {
    async fn new(kafka: &Kafka, (records, origin): &(Vec<Encoded>, String), linger: Duration) -> anyhow::Result<Bare> {
        use std::sync::atomic::AtomicUsize;
        let producer = kafka
            .producer_config()
            .set("linger.ms", linger.as_millis().to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("compression.type", "lz4")
            .create_with_context(Count(AtomicUsize::new(0), AtomicUsize::new(0)))?;
        let bare = Bare { producer };
        // One record of each topic the run writes to.
        let mut firsts: Vec<Encoded> = Vec::new();
        for r in records {
            if !firsts.iter().any(|f| f.topic == r.topic) {
                firsts.push(Encoded { topic: r.topic, key: r.key.clone(), payload: r.payload.clone(), consent: r.consent });
            }
        }
        bare.run(&(firsts, origin.clone())).await?;
        Ok(bare)
    }

    async fn run(&self, (records, origin): &(Vec<Encoded>, String)) -> anyhow::Result<Row> {
        use rdkafka::producer::{BaseRecord, Producer};
        use std::sync::atomic::Ordering;
        let ctx = self.producer.context();
        let done = || ctx.0.load(Ordering::Relaxed) + ctx.1.load(Ordering::Relaxed);
        let (before, failed_before) = (done(), ctx.1.load(Ordering::Relaxed));
        let start = Instant::now();
        for r in records {
            let mut record = BaseRecord::to(r.topic).key(r.key.as_bytes()).payload(&r.payload);
            if r.consent {
                record = record.headers(ingest::consent::origin_headers(origin));
            }
            self.producer.send(record).map_err(|(e, _)| e)?;
        }
        while done() - before < records.len() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(ctx.1.load(Ordering::Relaxed) == failed_before, "the bare producer failed to deliver records");
        Ok(Row {
            path: "bare rdkafka producer (same records)",
            events: records.len(),
            secs,
            p50_ms: None,
            p99_ms: None,
            cpu_secs: None,
            threads: Default::default(),
        })
    }
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "gateway not ready after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /v1/batch` of `body` to `addr`, as the bytes a client writes.
fn batch_request(addr: &str, body: &[u8]) -> Bytes {
    let mut r = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer demo-key\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    Bytes::from(r)
}

/// One keep-alive HTTP/1.1 connection of the load generator: it writes a request made before
/// the run and reads the answer, and does nothing else, so that the CPU a run measures is the
/// gateway's. (reqwest, which the bench used before, took about 8 % of the worker threads' time,
/// on the same two cores as the gateway.)
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }

    /// Sends `request` (a whole HTTP/1.1 request) and returns the status and the answer's body.
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        self.stream.write_all(request).await?;
        self.buf.clear();
        let (status, head, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut answer = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = answer.parse(&self.buf)? {
                let status = answer.code.context("an answer without a status")?;
                let length = answer
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .context("an answer without Content-Length")?;
                let len: usize = std::str::from_utf8(length.value)?.trim().parse().context("Content-Length is not a number")?;
                break (status, head, len);
            }
            anyhow::ensure!(self.stream.read_buf(&mut self.buf).await? > 0, "the gateway closed the connection");
        };
        while self.buf.len() < head + len {
            anyhow::ensure!(self.stream.read_buf(&mut self.buf).await? > 0, "the gateway closed the connection mid-answer");
        }
        anyhow::ensure!(self.buf.len() == head + len, "bytes after the answer that nothing asked for");
        Ok((status, &self.buf[head..]))
    }
}

/// Sends every request, `concurrency` at a time on as many keep-alive connections; with `rate`,
/// starts them on a schedule (events/s) instead of as fast as possible.
async fn drive(
    addr: &str,
    requests: &[Bytes],
    events_per_body: &[usize],
    concurrency: usize,
    rate: Option<f64>,
    path: &'static str,
) -> anyhow::Result<Row> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Conn::open(addr).await?);
    }
    let requests: Arc<Vec<Bytes>> = Arc::new(requests.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total_events: usize = events_per_body.iter().sum();
    let start = Instant::now();
    let offsets: Arc<Vec<f64>> = Arc::new(
        events_per_body
            .iter()
            .scan(0usize, |acc, n| {
                let at = *acc;
                *acc += n;
                Some(rate.map_or(0.0, |r| at as f64 / r))
            })
            .collect(),
    );
    let workers = conns.into_iter().map(|mut conn| {
        let (next, requests, offsets) = (next.clone(), requests.clone(), offsets.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut rejected = std::collections::BTreeMap::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(request) = requests.get(i) else { break };
                let due = start + Duration::from_secs_f64(offsets[i]);
                tokio::time::sleep_until(due.into()).await;
                let t = Instant::now();
                let (status, answer) = conn.send(request).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!((200..300).contains(&status), "gateway answered {status}: {}", String::from_utf8_lossy(answer));
                if !answer.ends_with(br#""rejected":[]}"#) {
                    let v: serde_json::Value = serde_json::from_slice(answer)?;
                    for r in v["rejected"].as_array().into_iter().flatten() {
                        *rejected.entry(r["code"].as_str().unwrap_or("?").to_string()).or_insert(0usize) += 1;
                    }
                }
            }
            anyhow::Ok((latencies, rejected))
        })
    });
    let mut latencies = Vec::new();
    let mut rejected = std::collections::BTreeMap::new();
    for w in join_all(workers).await {
        let (l, r) = w??;
        latencies.extend(l);
        for (code, n) in r {
            *rejected.entry(code).or_insert(0) += n;
        }
    }
    if !rejected.is_empty() {
        eprintln!("{path}: events the gateway rejected: {rejected:?}");
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Row {
        path,
        events: total_events,
        secs,
        p50_ms: Some(quantile(&latencies, 0.5)),
        p99_ms: Some(quantile(&latencies, 0.99)),
        cpu_secs: None,
        threads: Default::default(),
    })
}
