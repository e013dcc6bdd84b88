//! The query API (`zcdp serve`; inside `zcdp up` on the same HTTP port): profiles,
//! recommendations, segments, campaign results, activity and app-wide engagement, answered from
//! a local materialised view of the compacted topics. Every replica reads the whole topics, so
//! the API scales by adding replicas; nothing it answers costs a Kafka round trip. It touches
//! only topics, the shared segment config and `schemas` — nothing of the runtime or the
//! processors.
//!
//! - this file: the flags, [`QueryApi`], its routes and handlers, erasure requests;
//! - `view`: the materialised view and the engagement snapshots;
//! - `summaries`: what the answers compute, as pure functions;
//! - `metrics`: the `zcdp_campaign_*` gauges;
//! - `report.html`: the report page (`/report`), one static file that reads this API.

mod metrics;
pub mod summaries;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use schemas::duration::parse_duration;
use schemas::kafka::Kafka;
use schemas::keys::AppKeys;
use schemas::topics::Topic;

pub use summaries::{
    ActivitySummary, CampaignSummary, Cohort, DayCount, Engagement, Funnel, MinuteSummary, Recommendation, Scored, engagement, recommend,
    summarise,
};
pub use view::View;

/// The query API's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    /// Read keys as app_id:key, comma-separated. Each key lets its holder read its app's
    /// profiles, recommendations and engagement.
    #[arg(long = "read-keys", env = "ZCDP_READ_KEYS", value_delimiter = ',', default_value = "demo:demo-read-key")]
    pub read_keys: Vec<String>,
    /// How often app-wide engagement and trending products are recomputed from the view.
    #[arg(long = "engagement-refresh", env = "ZCDP_ENGAGEMENT_REFRESH", default_value = "2s", value_parser = parse_duration)]
    pub engagement_refresh: Duration,
}

impl Default for QueryArgs {
    fn default() -> Self {
        QueryArgs { read_keys: vec!["demo:demo-read-key".into()], engagement_refresh: Duration::from_secs(2) }
    }
}

/// Most recommendations one request may ask for.
pub const MAX_LIMIT: usize = 100;

/// Writes an erasure request for a user to `zmp.identities.v1` (keyed like the user's events, so
/// the task that holds the user reads it in order) and waits for Kafka's acknowledgement; returns
/// the request's event id.
pub async fn request_forget(producer: &rdkafka::producer::FutureProducer, app: &str, user: &str) -> anyhow::Result<String> {
    let event = schemas::event::forget_request(app, user, schemas::time::now_ms());
    let mut payload = Vec::new();
    schemas::codec::encode_input_into(&event, &mut payload)?;
    let record = rdkafka::producer::FutureRecord::to(Topic::Identities.name()).key(user).payload(&payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("writing the erasure request: {e}"))?;
    Ok(event.event_id().to_string())
}

/// The query API: its view, its keys, and the tasks that keep the view current.
pub struct QueryApi {
    view: Arc<View>,
    keys: AppKeys,
    segments: Arc<crate::segments::Segments>,
    producer: rdkafka::producer::FutureProducer,
    /// The view's follower and the snapshot refresh; taken (and awaited) by [`QueryApi::shutdown`].
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for QueryApi {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().expect("tasks lock").iter() {
            t.abort();
        }
    }
}

impl QueryApi {
    /// Starts following the topics and refreshing the engagement snapshots.
    /// `segments`: the segments file the processors use (None: the shipped one), to tell an
    /// unknown segment from an empty one.
    pub fn start(kafka: &Kafka, args: &QueryArgs, segments: Option<&std::path::Path>) -> anyhow::Result<Arc<QueryApi>> {
        let keys = AppKeys::parse(&args.read_keys, "--read-keys", "ZCDP_READ_KEYS", "x-read-key")?;
        let segments = crate::segments::loaded(segments)?;
        let view = Arc::new(View::default());
        let follow = {
            let (view, kafka) = (view.clone(), kafka.clone());
            tokio::spawn(async move {
                if let Err(e) = view.follow(kafka).await {
                    tracing::error!(error = format!("{e:#}"), "query view stopped; answers are no longer updated");
                }
            })
        };
        let refresh = {
            let (view, every) = (view.clone(), args.engagement_refresh.max(Duration::from_millis(100)));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let v = view.clone();
                    let _ = tokio::task::spawn_blocking(move || v.refresh()).await;
                }
            })
        };
        let producer = kafka.producer_config().create().context("creating the erasure requests' producer")?;
        Ok(Arc::new(QueryApi { view, keys, segments, producer, tasks: std::sync::Mutex::new(vec![follow, refresh]) }))
    }

    /// Stops following the topics and waits until the follower has stopped, so the view's
    /// consumer is gone before the caller lets the cluster go. (A snapshot refresh already
    /// running may finish after: it touches only memory.)
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    pub fn apps(&self) -> Vec<String> {
        self.keys.apps().map(str::to_string).collect()
    }

    /// The API's routes (`zcdp up` merges them with the gateway's).
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/users/{id}/profile", get(profile))
            .route("/v1/users/{id}", axum::routing::delete(forget))
            .route("/v1/users/{id}/recommendations", get(recommendations))
            .route("/v1/engagement", get(engagement_route))
            .route("/v1/segments/{name}/members", get(segment_members))
            .route("/v1/campaigns", get(campaigns_route))
            .route("/v1/activity", get(activity_route))
            .route("/v1/segments", get(segments_route))
            .route("/report", get(report))
            .with_state(self.clone())
    }

    /// `/healthz` and `/readyz` (ready once the view has caught up), for `zcdp serve` alone.
    pub fn probes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(|State(api): State<Arc<QueryApi>>| async move {
                    let ready = api.view.caught_up();
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, Json(json!({"ready": ready, "view": ready})))
                }),
            )
            .with_state(self.clone())
    }
}

/// The app a request's read key opens. Every route but the report page takes it first: a
/// request without a valid key is answered 401 before anything else is looked at.
struct ReadKey(String);

impl FromRequestParts<Arc<QueryApi>> for ReadKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<QueryApi>) -> Result<ReadKey, Response> {
        api.keys.app_for(&parts.headers).map(|app| ReadKey(app.to_string())).ok_or_else(|| {
            error(StatusCode::UNAUTHORIZED, "bad_read_key", "give a read key: Authorization: Bearer <read key> (or X-Read-Key)")
        })
    }
}

/// The `limit` query parameter: `default` when absent, 1..=`max` when given, else a 400.
fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Response> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(error(StatusCode::BAD_REQUEST, "bad_limit", &format!("limit must be a whole number from 1 to {max}"))),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

async fn profile(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey, Path(id): Path<String>) -> Response {
    match api.view.profile(&app, &id) {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown_user", "no profile for this user id in this app (yet)"),
    }
}

/// Erasure: accepted once the request is in Kafka; the processors then erase the user from every
/// store and write tombstones to every compacted topic (the view drops the user when it reads them).
async fn forget(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey, Path(id): Path<String>) -> Response {
    if id.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_user", "give the user key (Zalo id or anonymous id)");
    }
    match request_forget(&api.producer, &app, &id).await {
        Ok(request_id) => (StatusCode::ACCEPTED, Json(json!({"user": id, "request_id": request_id, "status": "accepted"}))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable", &format!("{e:#}; nothing was requested: send it again")),
    }
}

async fn recommendations(
    State(api): State<Arc<QueryApi>>,
    ReadKey(app): ReadKey,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit(&q, 10, MAX_LIMIT) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let interests = api.view.interests(&app, &id);
    let snapshot = api.view.engagement(&app);
    let items = recommend(interests.as_deref(), &snapshot.top_products, limit);
    Json(json!({"user": id, "personalised": interests.is_some(), "items": items})).into_response()
}

/// Most members one request may ask for.
pub const MAX_MEMBERS: usize = 10_000;

async fn segment_members(
    State(api): State<Arc<QueryApi>>,
    ReadKey(app): ReadKey,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !api.segments.list.iter().any(|s| s.name == name) {
        let names: Vec<&str> = api.segments.list.iter().map(|s| s.name.as_str()).collect();
        return error(StatusCode::NOT_FOUND, "unknown_segment", &format!("no segment {name:?}; defined: {}", names.join(", ")));
    }
    let limit = match limit(&q, 1000, MAX_MEMBERS) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let (members, more) = api.view.members(&app, &name, q.get("after").map(String::as_str), limit);
    let next = if more { members.last().map(|m| m.user_key.clone()) } else { None };
    let list: Vec<Value> =
        members.iter().map(|m| json!({"user_key": m.user_key, "zalo_id": m.zalo_id, "oa_user_id": m.oa_user_id, "since": m.at})).collect();
    Json(json!({"segment": name, "members": list, "next_after": next})).into_response()
}

/// The report page: one static file, no build step; it reads the API with the read key given in
/// `?key=` (or typed in), and refreshes itself every 5 s (`?refresh=ms`).
async fn report() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"), (axum::http::header::CACHE_CONTROL, "no-cache")],
        include_str!("report.html"),
    )
        .into_response()
}

async fn activity_route(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey) -> Response {
    Json(api.view.activity(&app)).into_response()
}

/// Every defined segment with its current size (0 for a defined segment nobody is in).
async fn segments_route(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey) -> Response {
    let sizes = api.view.segment_sizes(&app);
    let list: Vec<Value> =
        api.segments.list.iter().map(|s| json!({"name": s.name, "size": sizes.get(s.name.as_str()).copied().unwrap_or(0)})).collect();
    Json(json!({"app_id": app, "segments": list})).into_response()
}

async fn campaigns_route(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey) -> Response {
    let campaigns = api.view.campaigns(&app);
    Json(json!({"app_id": app, "campaigns": campaigns})).into_response()
}

async fn engagement_route(State(api): State<Arc<QueryApi>>, ReadKey(app): ReadKey) -> Response {
    Json(api.view.engagement(&app).as_ref().clone()).into_response()
}
