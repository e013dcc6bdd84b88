//! `zcdp simulate`: posts shopper traffic to a gateway over HTTP at a steady rate, the way Mini
//! Apps would. Batches refused with 429 or 503 are sent again after `Retry-After`, as a real SDK
//! should, so nothing the simulator generates is lost.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use crate::shoppers::{Shoppers, Tally};
use crate::shutdown::Shutdown;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The gateway's base URL.
    #[arg(long, env = "ZCDP_SIMULATE_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Events a second.
    #[arg(long, env = "ZCDP_SIMULATE_RATE", default_value_t = 50)]
    pub rate: u32,
    /// The write key to send with.
    #[arg(long = "write-key", env = "ZCDP_SIMULATE_WRITE_KEY", default_value = "demo-key")]
    pub write_key: String,
    /// Distinct shoppers.
    #[arg(long, env = "ZCDP_SIMULATE_USERS", default_value_t = 500)]
    pub users: usize,
    /// Stop after this many events (default: run until Ctrl-C).
    #[arg(long, env = "ZCDP_SIMULATE_EVENTS")]
    pub events: Option<u64>,
    /// Seed of the generator: the same seed makes the same traffic.
    #[arg(long, env = "ZCDP_SIMULATE_SEED", default_value_t = 1)]
    pub seed: u64,
    /// A Zalo simulator (`zcdp zalo-sim`): shoppers then follow the OA in "Zalo" — the simulator
    /// records the follower and posts the signed follow webhook to the gateway — instead of the
    /// Mini App posting `oa_followed` itself.
    #[arg(long = "zalo-sim", env = "ZCDP_SIMULATE_ZALO_SIM")]
    pub zalo_sim: Option<String>,
}

pub async fn run(args: &SimulateArgs, shutdown: Shutdown) -> anyhow::Result<Tally> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/v1/batch", args.target.trim_end_matches('/'));
    let mut shoppers = Shoppers::new(args.seed, args.users, (args.rate as usize / 2).clamp(5, 500));
    let tick = Duration::from_millis(200);
    let per_tick = f64::from(args.rate.max(1)) * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut sent: u64 = 0;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = std::time::Instant::now();
    // With a Zalo simulator: what it received, read every few seconds, so that some shoppers
    // come back and order after a message.
    let mut inbox = args.zalo_sim.as_ref().map(|sim| Inbox { url: format!("{}/sim/received", sim.trim_end_matches('/')), seen: 0 });
    let mut last_inbox = std::time::Instant::now();
    while !shutdown.is_triggered() && args.events.is_none_or(|max| sent < max) {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => break,
        }
        owed += per_tick;
        let mut n = owed.floor() as u64;
        if let Some(max) = args.events {
            n = n.min(max - sent);
        }
        if n == 0 {
            continue;
        }
        owed -= n as f64;
        if let Some(inbox) = inbox.as_mut().filter(|_| last_inbox.elapsed() > Duration::from_secs(3)) {
            last_inbox = std::time::Instant::now();
            inbox.read(&client, &mut shoppers).await;
        }
        let mut body = shoppers.batch(n as usize, Utc::now());
        if let Some(sim) = &args.zalo_sim {
            follow_at_zalo(&client, sim, &mut body).await;
        }
        if body["events"].as_array().is_none_or(|e| !e.is_empty()) {
            post_until_stored(&client, &url, &args.write_key, &body, &shutdown).await?;
        }
        sent += n;
        if last_report.elapsed() > Duration::from_secs(30) {
            let t = &shoppers.tally;
            tracing::info!(
                events = t.events,
                visits = t.visits,
                carts = t.carts,
                orders = t.orders,
                abandoned = t.abandoned,
                returned_after_a_message = t.returned,
                "simulated traffic"
            );
            last_report = std::time::Instant::now();
        }
    }
    Ok(shoppers.tally)
}

/// Share of shoppers who come back and order after a message reached them.
const RETURN_AFTER_MESSAGE: f64 = 0.35;

struct Inbox {
    url: String,
    seen: u64,
}

impl Inbox {
    /// New messages delivered at the Zalo simulator; each may bring its shopper back.
    async fn read(&mut self, client: &reqwest::Client, shoppers: &mut Shoppers) {
        let got: serde_json::Value = match client.get(format!("{}?since={}", self.url, self.seen)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "the Zalo simulator's inbox is not reachable");
                return;
            }
        };
        let Some(total) = got["total"].as_u64() else { return };
        for m in got["received"].as_array().into_iter().flatten() {
            // Order updates are not a reason to shop again.
            if m["error"] == 0 && m["kind"] != "transaction" {
                shoppers.message_received(m["to"].as_str().unwrap_or_default(), RETURN_AFTER_MESSAGE);
            }
        }
        self.seen = total;
    }
}

/// Takes the `oa_followed` events out of the batch and plays them at the Zalo simulator, which
/// tells the gateway through its webhook, as Zalo would.
async fn follow_at_zalo(client: &reqwest::Client, sim: &str, body: &mut serde_json::Value) {
    let Some(events) = body["events"].as_array_mut() else { return };
    let mut follows = Vec::new();
    events.retain(|e| {
        let follow = e["type"] == "oa_followed" && e["user"]["oa_user_id"].is_string();
        if follow {
            follows.push(serde_json::json!({"event_name": "follow", "user_id": e["user"]["oa_user_id"],
                "user_id_by_app": e["user"]["zalo_id"]}));
        }
        !follow
    });
    let url = format!("{}/sim/oa_events", sim.trim_end_matches('/'));
    for f in follows {
        if let Err(e) = client.post(&url).json(&f).send().await {
            tracing::warn!(error = %e, "the Zalo simulator did not take a follow");
        }
    }
}

/// Posts one batch until the gateway stores it (or shutdown). Rejections inside a 200 are the
/// generator's bug, so they are logged loudly.
async fn post_until_stored(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    loop {
        let resp = client.post(url).bearer_auth(key).json(body).send().await;
        let wait = match resp {
            Ok(r) if r.status().is_success() => {
                let answer: serde_json::Value = r.json().await.context("reading the gateway's answer")?;
                if let Some(rej) = answer["rejected"].as_array().filter(|a| !a.is_empty()) {
                    tracing::warn!(rejected = rej.len(), first = %rej[0], "gateway rejected simulated events");
                }
                return Ok(());
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tracing::info!(status = r.status().as_u16(), retry_after = after, "gateway asked to wait");
                Duration::from_secs(after)
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                anyhow::bail!("gateway answered {status}: {text}");
            }
            Err(e) => {
                tracing::warn!(error = %e, "gateway unreachable; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}
