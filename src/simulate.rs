//! `zcdp simulate`: posts shopper traffic to a gateway over HTTP at a steady rate, the way Mini
//! Apps would. Batches refused with 429 or 503 are sent again after `Retry-After`, as a real SDK
//! should, so nothing the simulator generates is lost.
//!
//! Each event goes the way the trust model of docs/security.md says it must: what shoppers see
//! and do from the Mini App (write key); a Zalo user's consent and identify under that user's
//! session, opened with the access token the Zalo simulator issues them, and their phone by
//! Zalo's phone exchange; follows through the Zalo simulator's webhook; orders, as the shop's
//! backend reports them, with the secret key (`--secret-key`). Without a Zalo simulator or a
//! secret key, what only they could say is left out (and counted).

use std::collections::HashMap;
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
    /// The shop's secret key: orders are then posted as the shop's backend reports them (and,
    /// without a Zalo simulator, consents and identities on the shoppers' behalf).
    #[arg(long = "secret-key", env = "ZCDP_SIMULATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
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
    let mut sessions = Sessions::default();
    let mut skipped: u64 = 0;
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
        let split = Split::of(&mut body, args.secret_key.is_some(), args.zalo_sim.is_some());
        skipped += split.dropped;
        if body["events"].as_array().is_none_or(|e| !e.is_empty()) {
            post_until_stored(&client, &url, &args.write_key, None, &body, &shutdown).await?;
        }
        if let Some(secret) = &args.secret_key
            && !split.server.is_empty()
        {
            let b = serde_json::json!({"sent_at": body["sent_at"], "events": split.server});
            post_until_stored(&client, &url, secret, None, &b, &shutdown).await?;
        }
        if let Some(sim) = &args.zalo_sim {
            for (zalo_id, events) in split.by_user {
                let session = match sessions.session(&client, &args.target, &args.write_key, sim, &shoppers, &zalo_id).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "no session for a simulated shopper; their identity events are left out");
                        skipped += events.len() as u64;
                        continue;
                    }
                };
                let mut phone = false;
                let events: Vec<serde_json::Value> = events
                    .into_iter()
                    .map(|mut e| {
                        // The phone is Zalo's to say: exchanged below, never typed into an event.
                        if let Some(p) = e["properties"].as_object_mut() {
                            phone |= p.remove("phone").is_some();
                        }
                        e
                    })
                    .collect();
                let b = serde_json::json!({"sent_at": body["sent_at"], "events": events});
                post_until_stored(&client, &url, &args.write_key, Some(&session.token), &b, &shutdown).await?;
                if phone {
                    sessions.exchange_phone(&client, &args.target, &args.write_key, &session).await;
                }
            }
        }
        sent += n;
        if last_report.elapsed() > Duration::from_secs(30) {
            let t = &shoppers.tally;
            tracing::info!(
                skipped_for_want_of_a_session_or_secret_key = skipped,
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

/// A batch's events, by who may say them: the Mini App's stay in the body; the rest are taken
/// out for the shop's server (orders, and without a Zalo simulator, identities), for each Zalo
/// user's session (their consent and identify), or dropped when nobody here may say them.
struct Split {
    server: Vec<serde_json::Value>,
    /// In the order the users first appear; each user's events in their order.
    by_user: Vec<(String, Vec<serde_json::Value>)>,
    dropped: u64,
}

impl Split {
    fn of(body: &mut serde_json::Value, secret_key: bool, zalo_sim: bool) -> Split {
        let mut split = Split { server: Vec::new(), by_user: Vec::new(), dropped: 0 };
        let Some(events) = body["events"].as_array_mut() else { return split };
        let mut keep = Vec::with_capacity(events.len());
        for e in events.drain(..) {
            let kind = e["type"].as_str().unwrap_or_default();
            let zalo_id = e["user"]["zalo_id"].as_str().map(str::to_string);
            let identity = matches!(kind, "identify" | "consent_changed") && zalo_id.is_some();
            if kind.starts_with("order_") && secret_key {
                split.server.push(e);
            } else if identity && zalo_sim {
                let user = zalo_id.expect("identity events name the user");
                match split.by_user.iter_mut().find(|(u, _)| *u == user) {
                    Some((_, list)) => list.push(e),
                    None => split.by_user.push((user, vec![e])),
                }
            } else if (identity || kind == "oa_followed" || kind == "identify" && e["properties"]["phone"].is_string()) && secret_key {
                split.server.push(e);
            } else if identity || kind == "oa_followed" || e["properties"]["phone"].is_string() {
                split.dropped += 1;
            } else {
                keep.push(e);
            }
        }
        *events = keep;
        split
    }
}

/// A shopper's Mini App session, as zmp-sdk would hold it: the Zalo tokens the simulator
/// issued them, and the gateway's session.
#[derive(Clone)]
struct Session {
    token: String,
    access_token: String,
    phone_token: Option<String>,
    expires_at: chrono::DateTime<Utc>,
}

#[derive(Default)]
struct Sessions(HashMap<String, Session>);

impl Sessions {
    /// The shopper's session, opened (the shopper made a Zalo user at the simulator, then
    /// `POST /v1/session` with their access token) the first time and when it nears its end.
    async fn session(
        &mut self,
        client: &reqwest::Client,
        target: &str,
        write_key: &str,
        sim: &str,
        shoppers: &Shoppers,
        zalo_id: &str,
    ) -> anyhow::Result<Session> {
        if let Some(s) = self.0.get(zalo_id).filter(|s| s.expires_at - Utc::now() > chrono::Duration::minutes(5)) {
            return Ok(s.clone());
        }
        let (access_token, phone_token) = match self.0.get(zalo_id) {
            Some(s) => (s.access_token.clone(), s.phone_token.clone()),
            None => {
                let (phone, name) = shoppers.zalo_facts(zalo_id);
                let u: serde_json::Value = client
                    .post(format!("{}/sim/users", sim.trim_end_matches('/')))
                    .json(&serde_json::json!({"zalo_id": zalo_id, "phone": phone, "name": name}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let access = u["access_token"].as_str().context("the simulator issued no access token")?.to_string();
                (access, u["phone_token"].as_str().map(str::to_string))
            }
        };
        let r = with_retries(|| {
            client
                .post(format!("{}/v1/session", target.trim_end_matches('/')))
                .bearer_auth(write_key)
                .json(&serde_json::json!({"access_token": access_token}))
        })
        .await?;
        anyhow::ensure!(r.status().is_success(), "POST /v1/session answered {}", r.status());
        let v: serde_json::Value = r.json().await?;
        let s = Session {
            token: v["session"].as_str().context("no session in the answer")?.to_string(),
            access_token,
            phone_token,
            expires_at: v["expires_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc())
                .context("no expiry")?,
        };
        self.0.insert(zalo_id.to_string(), s.clone());
        Ok(s)
    }

    /// The shopper shares their phone (zmp-sdk getPhoneNumber): the gateway exchanges the phone
    /// token at Zalo, under their session.
    async fn exchange_phone(&self, client: &reqwest::Client, target: &str, write_key: &str, s: &Session) {
        let Some(code) = &s.phone_token else { return };
        let r = with_retries(|| {
            client
                .post(format!("{}/v1/users/phone", target.trim_end_matches('/')))
                .bearer_auth(write_key)
                .header("x-zcdp-session", &s.token)
                .json(&serde_json::json!({"access_token": s.access_token, "code": code}))
        })
        .await;
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "the phone exchange of a simulated shopper was refused"),
            Err(e) => tracing::warn!(error = %e, "the phone exchange of a simulated shopper failed"),
        }
    }
}

/// Sends a request again after `Retry-After` while the gateway answers 429 or 503 (at most a
/// minute in all), as an SDK does.
async fn with_retries(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = request().send().await?;
        if !matches!(r.status().as_u16(), 429 | 503) || std::time::Instant::now() > deadline {
            return Ok(r);
        }
        let after =
            r.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(after.min(10))).await;
    }
}

/// Posts one batch until the gateway stores it (or shutdown), under `session` when given.
/// Rejections inside a 200 are the generator's bug, so they are logged loudly.
async fn post_until_stored(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: &serde_json::Value,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    loop {
        let mut req = client.post(url).bearer_auth(key).json(body);
        if let Some(s) = session {
            req = req.header("x-zcdp-session", s);
        }
        let resp = req.send().await;
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
