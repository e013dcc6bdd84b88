//! The ingest gateway: Mini Apps POST events with a write key; the gateway checks them, corrects
//! their time, and writes each to its topic, answering only once Kafka has them.
//!
//! # Layout
//!
//! A request goes down this list: an endpoint admits it, the reader checks and encodes its
//! events, `accept` writes them, `writer` waits for Kafka.
//!
//! - `http`: the Mini App's endpoints (`/v1/batch`, `/v1/events`) and the probes;
//! - `zalo_hooks`: what Zalo posts (`/webhooks/zalo`) and the phone exchange (`/v1/users/phone`);
//! - `session`: `POST /v1/session`, a Mini App user proven by Zalo's Graph API;
//! - `schema_api`: the Confluent-compatible schema reads (`/schemas/…`, `/subjects/…`);
//! - `api`: what the endpoints share: the error answer, and admitting a request (key, size, Kafka);
//! - `json`: the JSON reader; `validate`: the HTTP contract as pure functions — each event read,
//!   checked and written as Avro in one pass;
//! - `accept`: who vouches for a request's events and what a client may therefore say, then the
//!   events to their topics (duplicates, consent, dead letters), and the wait until Kafka has
//!   them; called by `http` and `zalo_hooks` alike;
//! - `consent`: who agreed to what, read from `zmp.identities.v1`;
//! - `writer`: the Kafka producer and the bounded wait for acknowledgements;
//! - `ratelimit`: each app's token bucket; `metrics`: the gateway's `zcdp_ingest_*` metrics.
//!
//! [`Gateway`] holds them together: `router()` assembles the three route sets, `shutdown` stops
//! the background work and flushes the producer.

pub mod accept;
pub mod api;
pub mod consent;
pub mod http;
pub mod json;
pub mod metrics;
pub mod ratelimit;
pub mod redact;
pub mod schema_api;
pub mod session;
pub mod validate;
pub mod writer;
pub mod zalo_hooks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::task::JoinHandle;

use schemas::duration::parse_duration;
use schemas::kafka::Kafka;
use schemas::topics::Topic;

use crate::consent::ConsentView;
use crate::ratelimit::RateLimiter;
use crate::writer::EventWriter;
use schemas::keys::{KeyArgs, Keys};
use schemas::session::{SessionArgs, Sessions};

/// The gateway's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// The apps' keys (write, secret, admin).
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The session secret and lifetime.
    #[command(flatten)]
    pub session: SessionArgs,
    /// Events a second each app may send (token bucket); 0 for no limit.
    #[arg(long = "rate-limit", env = "ZCDP_RATE_LIMIT", default_value_t = 5000)]
    pub rate_limit: u32,
    /// Events an app may send at once above its rate.
    #[arg(long = "rate-burst", env = "ZCDP_RATE_BURST", default_value_t = 20000)]
    pub rate_burst: u32,
    /// Calls a second each app may make that cost a request to Zalo's Graph API (sessions,
    /// phone exchanges); each user may make 10 a minute besides.
    #[arg(long = "graph-rate-limit", env = "ZCDP_GRAPH_RATE_LIMIT", default_value_t = 50)]
    pub graph_rate_limit: u32,
    /// Such calls an app may make at once above that rate.
    #[arg(long = "graph-rate-burst", env = "ZCDP_GRAPH_RATE_BURST", default_value_t = 200)]
    pub graph_rate_burst: u32,
    /// How long a request waits for Kafka's acknowledgement before answering 503.
    #[arg(long = "ack-timeout", env = "ZCDP_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// How long the producer waits to fill a batch (librdkafka linger.ms).
    #[arg(long = "linger", env = "ZCDP_LINGER", default_value = "2ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// The Zalo app: verifies webhooks (`POST /webhooks/zalo`) and exchanges phone tokens
    /// (`POST /v1/users/phone`). The sink takes the same flags.
    #[command(flatten)]
    pub zalo: schemas::zalo::ZaloArgs,
}

impl Default for IngestArgs {
    fn default() -> Self {
        IngestArgs {
            keys: KeyArgs::demo(),
            session: SessionArgs { session_secret: Some(DEMO_SESSION_SECRET.into()), ..SessionArgs::default() },
            rate_limit: 5000,
            rate_burst: 20000,
            graph_rate_limit: 50,
            graph_rate_burst: 200,
            ack_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(2),
            zalo: schemas::zalo::ZaloArgs::default(),
        }
    }
}

/// Sessions and phone exchanges a user may ask of Zalo's Graph API, a minute.
pub const USER_GRAPH_CALLS_PER_MINUTE: u32 = 10;

/// The session secret of `zcdp up --demo` and of tests: public, so refused in production.
pub const DEMO_SESSION_SECRET: &str = schemas::session::DEMO_SECRET;

pub struct Gateway {
    keys: Keys,
    sessions: Sessions,
    limiter: RateLimiter,
    rate: u32,
    /// Calls that cost a request to Zalo's Graph API (sessions, phone exchanges): per app...
    graph_limiter: RateLimiter,
    /// ...and per app and user.
    user_limiter: RateLimiter,
    /// Zalo webhooks taken, so a replay is dropped.
    webhooks_seen: zalo_hooks::SeenWebhooks,
    /// Access tokens Zalo refused lately.
    refused_tokens: session::RefusedTokens,
    writer: Arc<EventWriter>,
    consent: Arc<ConsentView>,
    /// The consent view and the liveness probe; taken (and awaited) by [`Gateway::shutdown`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The --zalo-* flags: the Zalo app of any zcdp app without one of its own.
    zalo: schemas::zalo::ZaloArgs,
    /// Every zcdp app's own Zalo app ([`schemas::zalo::ZaloArgs::apps`]).
    zalo_apps: Vec<schemas::zalo::ZaloArgs>,
    http: reqwest::Client,
}

impl Gateway {
    /// Connects to Kafka and starts the consent view and the liveness probe.
    pub async fn start(kafka: &Kafka, args: &IngestArgs) -> anyhow::Result<Arc<Gateway>> {
        let keys = Keys::parse(&args.keys)?;
        let Some(secret) = args.session.session_secret.as_deref() else {
            anyhow::bail!("no session secret: give --session-secret (or ZCDP_SESSION_SECRET)");
        };
        let sessions = Sessions::new(secret, args.session.session_ttl);
        let writer = EventWriter::new(kafka, args.linger, args.ack_timeout)?;
        if !writer.probe().await {
            tracing::warn!(bootstrap = %kafka.bootstrap, "Kafka does not answer yet; the gateway answers 503 until it does");
        }
        // Consents are kept in zmp.consents.v1 (this version's): without it every consent would
        // wait for Kafka in vain, and a broker that creates topics itself would make it expire.
        if let Ok(counts) = kafka.partition_counts(&[Topic::Consents.name()]).await
            && counts[0].is_none()
        {
            anyhow::bail!(
                "topic {} does not exist: run `zcdp topics create` (it adds the topics this version needs and leaves the others alone)",
                Topic::Consents.name()
            );
        }
        let consent = Arc::new(ConsentView::default());
        let mut tasks = Vec::new();
        {
            let consent = consent.clone();
            let kafka = kafka.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = consent.follow(kafka).await {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "consent view stopped; identify events with traits or phone will be refused unless consent is in the same batch"
                    );
                }
            }));
        }
        {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    writer.probe().await;
                    metrics::METRICS.producer_queue.set(i64::from(writer.in_flight()));
                }
            }));
        }
        Ok(Arc::new(Gateway {
            keys,
            sessions,
            limiter: RateLimiter::new(args.rate_limit, args.rate_burst),
            rate: args.rate_limit,
            graph_limiter: RateLimiter::new(args.graph_rate_limit, args.graph_rate_burst),
            user_limiter: RateLimiter::per_minute(USER_GRAPH_CALLS_PER_MINUTE, USER_GRAPH_CALLS_PER_MINUTE),
            webhooks_seen: Default::default(),
            refused_tokens: Default::default(),
            writer,
            consent,
            tasks: Mutex::new(tasks),
            zalo: args.zalo.clone(),
            zalo_apps: args.zalo.apps()?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        }))
    }

    /// The Zalo app a zcdp app's sessions and phone exchanges go to: with `--zalo-apps-file`
    /// its own, and none for an app the file does not name (never another app's); else the
    /// flags' one, whichever app asks.
    fn zalo_of(&self, app: &str) -> Option<&schemas::zalo::ZaloArgs> {
        if self.zalo.apps_file.is_some() { self.zalo_apps.iter().find(|z| z.cdp_app == app) } else { Some(&self.zalo) }
    }

    /// Every endpoint of the gateway.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .merge(http::routes())
            .merge(zalo_hooks::routes())
            .merge(session::routes())
            .merge(schema_api::router())
            // A little over the batch limit so the handler, not the framework, answers 413 with a
            // reason for bodies just above it.
            .layer(DefaultBodyLimit::max(http::MAX_BATCH_BYTES + 64 * 1024))
            .with_state(self.clone())
    }

    pub fn apps(&self) -> Vec<String> {
        self.keys.apps()
    }

    /// The origin header value this gateway puts on the consent records it writes.
    pub fn origin(&self) -> &str {
        &self.consent.origin
    }

    /// Whether Kafka answers and the consent view has caught up.
    pub fn ready(&self) -> bool {
        self.writer.reachable() && self.consent.caught_up()
    }

    /// Stops the background work and waits until it has stopped (so its Kafka clients are gone
    /// before the caller lets the cluster go), then sends what the producer still holds. Call
    /// after the HTTP server has stopped taking requests.
    pub async fn shutdown(&self, within: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled is what an abort ends with; a panic was logged where it happened.
            let _ = t.await;
        }
        if let Err(e) = self.writer.flush(within) {
            tracing::warn!(error = %e, in_flight = self.writer.in_flight(), "producer not flushed");
        }
    }
}
