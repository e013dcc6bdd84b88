//! `zcdp bench serve`: profile and recommendation lookups through the query API at a fixed
//! request rate (open loop: each request leaves at its scheduled time, whether or not earlier
//! ones have answered), against the same HTTP server answering a fixed body of the same size: the
//! raw HTTP cost on this machine, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::routing::get;

use processors::query::{QueryApi, QueryArgs};
use schemas::derived::{Profile, Score, UserInterests};
use schemas::kafka::{Kafka, KafkaArgs};

use super::quantile;
use crate::server;
use crate::shutdown::Shutdown;

#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Users with a profile and interests in the view.
    #[arg(long, env = "ZCDP_BENCH_USERS", default_value_t = 20_000)]
    users: usize,
    /// Requests a second, per path.
    #[arg(long, env = "ZCDP_BENCH_RATE", default_value_t = 1000)]
    rate: u32,
    /// How long each path is driven.
    #[arg(long, env = "ZCDP_BENCH_DURATION", default_value = "10s", value_parser = schemas::duration::parse_duration)]
    duration: Duration,
}

/// The secret key the bench reads with.
const READ_KEY: &str = "bench-secret-key";

fn profile(i: usize, t: i64) -> (Profile, UserInterests) {
    let user = format!("user-{i}");
    let day = schemas::time::vn_day(t);
    let p = Profile {
        app_id: "bench".into(),
        user_key: user.clone(),
        zalo_id: Some(user.clone()),
        as_of: t,
        first_seen: t - 86_400_000 * (i as i64 % 40),
        last_seen: t,
        sessions: 1 + i as i64 % 9,
        active_days: 1 + i as i64 % 20,
        recent_active_days: (day - (i as i64 % 5)..=day).collect(),
        product_views: 12,
        cart_adds: 2,
        orders: i as i64 % 4,
        revenue: 120_000 * (i as i64 % 4),
        lifecycle: "active".into(),
        funnel_stage: "purchase".into(),
        next_purchase_basis: "too_little_history".into(),
        ..Default::default()
    };
    let products = (0..10).map(|k| Score { id: format!("p-{}", (i * 7 + k * 13) % 500), score: 10.0 - k as f64 }).collect();
    let categories = (0..5).map(|k| Score { id: format!("c-{}", (i + k) % 30), score: 5.0 - k as f64 }).collect();
    let interests = UserInterests {
        app_id: "bench".into(),
        user_key: user,
        as_of: t,
        half_life_ms: 7 * 86_400_000,
        products,
        categories,
        terms: vec![],
    };
    (p, interests)
}

pub async fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    let kafka = Kafka::from_args_or_embedded(&args.kafka, 1)?;
    kafka.ensure_catalogue().await?;
    let now = chrono::Utc::now().timestamp_millis();
    eprintln!("bench serve: writing {} profiles and interests to {}", args.users, kafka.bootstrap);
    let sample_body = {
        let (p, i) = profile(0, now);
        let body = serde_json::to_vec(&p)?;
        write_view(&kafka, args.users, now).await?;
        drop(i);
        body
    };

    let keys =
        schemas::keys::Keys::parse(&schemas::keys::KeyArgs { secret_keys: vec![format!("bench:{READ_KEY}")], ..Default::default() })?;
    let sessions = schemas::session::Sessions::new(ingest::DEMO_SESSION_SECRET, Duration::from_secs(3600));
    let query = QueryApi::start(&kafka, &QueryArgs::default(), keys, sessions, None)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !query.view().caught_up() || query.view().profile("bench", &format!("user-{}", args.users - 1)).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the query view did not catch up within 2 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An engagement refresh (every app's snapshot from its tally) against computing the app's
    // engagement from every profile and interests record, as the view did before.
    let timed = |f: &dyn Fn()| {
        let mut ms: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[2]
    };
    let refresh_ms = timed(&|| query.view().refresh());
    let recompute_ms = timed(&|| drop(query.view().engagement_from_every_record("bench")));
    {
        // Equal but for trending, whose scores are summed in another order (their last bits,
        // and so the order of ties, may differ; a unit test holds them close).
        let strip = |e: &processors::query::summaries::Engagement| {
            let mut e = e.clone();
            e.top_products.clear();
            e.top_categories.clear();
            e
        };
        let (kept, every) = (query.view().engagement("bench"), query.view().engagement_from_every_record("bench"));
        anyhow::ensure!(strip(&kept) == strip(&every), "the tally's engagement differs from the one computed from every record");
    }

    // The same server with one more route: a fixed body as large as a profile.
    let fixed = bytes::Bytes::from(sample_body);
    let routes = query.routes().route(
        "/fixed",
        get(move || {
            let b = fixed.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b) }
        }),
    );
    let shutdown = Shutdown::default();
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    let http = tokio::spawn(server::serve(listener, routes, server::Limits::default(), shutdown.clone()));
    let base = format!("http://{addr}");

    let n = (f64::from(args.rate) * args.duration.as_secs_f64()) as usize;
    let users = args.users;
    let paths: [(&str, Box<dyn Fn(usize) -> String>); 3] = [
        ("fixed body of a profile's size (HTTP baseline)", Box::new(|_| "/fixed".to_string())),
        ("GET /v1/users/{id}/profile", Box::new(move |i| format!("/v1/users/user-{}/profile", (i * 7919) % users))),
        (
            "GET /v1/users/{id}/recommendations?limit=10",
            Box::new(move |i| format!("/v1/users/user-{}/recommendations?limit=10", (i * 7919) % users)),
        ),
    ];
    let mut rows = Vec::new();
    for (name, path) in &paths {
        let urls: Vec<String> = (0..n).map(|i| format!("{base}{}", path(i))).collect();
        rows.push((*name, drive(urls, args.rate, READ_KEY).await?));
    }
    shutdown.trigger();
    http.await??;
    query.shutdown().await;
    drop(query);

    println!();
    println!("{} requests a path at {} requests/s ({} users in the view).", n, args.rate, args.users);
    println!("| path | requests | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, lat) in &rows {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            lat.len(),
            quantile(lat, 0.5),
            quantile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!();
    println!(
        "engagement refresh (from the view's tallies): {refresh_ms:.3} ms; computed from every one of the {users} profiles and interests (the baseline): {recompute_ms:.1} ms"
    );
    for (name, lat) in rows.iter().skip(1) {
        let p99 = quantile(lat, 0.99);
        println!("{name}: p99 {p99:.2} ms at {} requests/s (target < 5 ms: {})", args.rate, if p99 < 5.0 { "met" } else { "NOT met" });
    }
    Ok(())
}

/// Writes every bench user's profile and interests to the compacted topics.
async fn write_view(kafka: &Kafka, users: usize, now: i64) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka.producer_config().set("linger.ms", "5").create()?;
    let mut pending = Vec::with_capacity(2 * users);
    for i in 0..users {
        let (p, interests) = profile(i, now);
        for (topic, payload) in [
            (schemas::topics::Topic::Profiles, schemas::codec::encode(&p)?),
            (schemas::topics::Topic::Interests, schemas::codec::encode(&interests)?),
        ] {
            // As the processors write them: keyed `app/user`, on the user's partition.
            let key = schemas::topics::app_user_key(&p.app_id, &p.user_key);
            let partition = schemas::kafka::key_partition(p.user_key.as_bytes(), kafka.partitions);
            let producer = producer.clone();
            pending.push(async move {
                let record = FutureRecord::to(topic.name()).partition(partition).key(&key).payload(&payload);
                producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)
            });
        }
    }
    for r in futures::future::join_all(pending).await {
        r.context("writing the bench view")?;
    }
    Ok(())
}

/// Sends one GET per URL at `rate` a second, each at its own time; returns sorted latencies (ms).
pub(super) async fn drive(urls: Vec<String>, rate: u32, key: &str) -> anyhow::Result<Vec<f64>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    // Warm the connection pool so the first requests do not pay for connecting.
    for u in urls.iter().take(32) {
        client.get(u).bearer_auth(key).send().await?.bytes().await?;
    }
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let urls = Arc::new(urls);
    let tasks: Vec<_> = (0..urls.len())
        .map(|i| {
            let (client, urls, key) = (client.clone(), urls.clone(), key.to_string());
            let due = start + gap * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                // Measured from when the request was due: a late start counts as waiting.
                let r = client.get(&urls[i]).bearer_auth(&key).send().await?;
                anyhow::ensure!(r.status().is_success(), "{} answered {}", urls[i], r.status());
                r.bytes().await?;
                anyhow::Ok(due.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await??);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}
