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
//! - `admin`: the campaigns as data (`/v1/admin/campaigns…`, admin key), and `preview`: whom a
//!   definition would reach now;
//! - `report`: the report page (`/report`, `report.html`, one static file that reads this API)
//!   and its sign-in, which keeps the admin key out of every URL.

mod admin;
mod metrics;
mod preview;
pub mod report;
mod store;
pub mod summaries;
mod tally;
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

use schemas::derived::AuditRecord;
use schemas::duration::parse_duration;
use schemas::kafka::Kafka;
use schemas::keys::{Access, Caller, Keys};
use schemas::session::{SESSION_HEADER, Session, Sessions};
use schemas::topics::Topic;

pub use summaries::{
    ActivitySummary, CampaignSummary, Cohort, DayCount, Engagement, Funnel, MinuteSummary, Recommendation, Scored, engagement, recommend,
    summarise,
};
pub use view::View;

/// The query API's flags (its keys and session secret are the role's: `KeyArgs`, `SessionArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    /// How often app-wide engagement and trending products are recomputed from the view.
    #[arg(long = "engagement-refresh", env = "ZCDP_ENGAGEMENT_REFRESH", default_value = "2s", value_parser = parse_duration)]
    pub engagement_refresh: Duration,
    /// Where the view keeps every user's profile, interests and segment memberships (RocksDB).
    /// A restarted replica resumes from them and reads only what is newer (on a real cluster,
    /// within 12 hours). Without it, a temporary directory removed at exit, and the topics are
    /// read from the beginning at every start.
    #[arg(long = "view-dir", env = "ZCDP_VIEW_DIR")]
    pub view_dir: Option<std::path::PathBuf>,
    /// The view's RocksDB block cache, in MB: its memory does not grow with the users.
    #[arg(long = "view-cache-mb", env = "ZCDP_VIEW_CACHE_MB", default_value_t = 64)]
    pub view_cache_mb: usize,
}

impl Default for QueryArgs {
    fn default() -> Self {
        QueryArgs { engagement_refresh: Duration::from_secs(2), view_dir: None, view_cache_mb: 64 }
    }
}

/// Most recommendations one request may ask for.
pub const MAX_LIMIT: usize = 100;

/// Writes an erasure request for a user to `zmp.identities.v1` (keyed like the user's events, so
/// the task that holds the user reads it in order), and who asked for it to `zmp.audit.v1`
/// (`asked_by`: the key's id, or the tool's name), and waits for Kafka's acknowledgement of both;
/// returns the request's event id. The audit record is written first: an erasure nobody can
/// account for is never requested.
pub async fn request_forget(producer: &rdkafka::producer::FutureProducer, app: &str, user: &str, asked_by: &str) -> anyhow::Result<String> {
    let now = schemas::time::now_ms();
    let event = schemas::event::forget_request(app, user, now);
    let audit = AuditRecord {
        request_id: event.event_id().to_string(),
        app_id: app.to_string(),
        action: "erase".into(),
        user_key: user.to_string(),
        key_id: asked_by.to_string(),
        at: now,
    };
    let audit_payload = schemas::codec::encode(&audit)?;
    let record = rdkafka::producer::FutureRecord::to(Topic::Audit.name()).key(&audit.request_id).payload(&audit_payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("recording the erasure request: {e}"))?;
    let mut payload = Vec::new();
    schemas::codec::encode_input_into(&event, &mut payload)?;
    let record = rdkafka::producer::FutureRecord::to(Topic::Identities.name()).key(user).payload(&payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("writing the erasure request: {e}"))?;
    Ok(event.event_id().to_string())
}

/// The query API: its view, its keys, and the tasks that keep the view current.
pub struct QueryApi {
    view: Arc<View>,
    keys: Keys,
    sessions: Sessions,
    segments: Arc<crate::segments::Segments>,
    producer: rdkafka::producer::FutureProducer,
    /// The campaign definitions (`zmp.campaigns.v1`), followed: the admin API reads and writes them.
    catalog: Arc<sinks::definitions::Catalog>,
    /// One-time report links already opened (subject → expiry).
    used_links: std::sync::Mutex<HashMap<String, i64>>,
    /// The view's follower and the snapshot refresh; taken (and awaited) by [`QueryApi::shutdown`].
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Why the view stopped following its topics, once it has.
    stopped: Arc<std::sync::Mutex<Option<String>>>,
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
    pub fn start(
        kafka: &Kafka,
        args: &QueryArgs,
        keys: Keys,
        sessions: Sessions,
        segments: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<QueryApi>> {
        let segments = crate::segments::loaded(segments)?;
        let view = Arc::new(View::open(args.view_dir.as_deref(), args.view_cache_mb)?);
        let stopped: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let follow = {
            let (view, kafka, stopped) = (view.clone(), kafka.clone(), stopped.clone());
            tokio::spawn(async move {
                let why = match view.follow(kafka).await {
                    Ok(()) => "the view's follower ended".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                tracing::error!(error = %why, "query view stopped; answers are no longer updated");
                *stopped.lock().expect("stopped lock") = Some(why);
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
        let (catalog, definitions) = sinks::definitions::Catalog::spawn(kafka, "query");
        Ok(Arc::new(QueryApi {
            view,
            keys,
            sessions,
            segments,
            producer,
            catalog,
            used_links: Default::default(),
            tasks: std::sync::Mutex::new(vec![follow, refresh, definitions]),
            stopped,
        }))
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

    /// Why the view stopped being updated, if it has (`zcdp up` stops then, and says so).
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().expect("stopped lock").clone()
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    pub fn apps(&self) -> Vec<String> {
        self.keys.apps()
    }

    /// The segments defined for `app`: the segments file's, then those of `zmp.campaigns.v1`
    /// (the app's own, and the seed's) not in it.
    fn segment_names(&self, app: &str) -> Vec<String> {
        let mut names: Vec<String> = self.segments.list.iter().map(|s| s.name.clone()).collect();
        for d in self.catalog.effective(app, sinks::definitions::SEGMENT) {
            if !names.contains(&d.name) {
                names.push(d.name);
            }
        }
        names
    }

    /// The API's routes (`zcdp up` merges them with the gateway's).
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/me/profile", get(my_profile))
            .route("/v1/me/recommendations", get(my_recommendations))
            .route("/v1/users/{id}/profile", get(profile))
            .route("/v1/users/{id}", axum::routing::delete(forget))
            .route("/v1/users/{id}/recommendations", get(recommendations))
            .route("/v1/engagement", get(engagement_route))
            .route("/v1/segments/{name}/members", get(segment_members))
            .route("/v1/campaigns", get(campaigns_route))
            .route("/v1/activity", get(activity_route))
            .route("/v1/segments", get(segments_route))
            .route("/report", get(report::page))
            .route("/report/sign-in", axum::routing::post(report::sign_in).get(report::open_link))
            .route("/report/sign-out", axum::routing::post(report::sign_out))
            .route("/report/links", axum::routing::post(report::link))
            .merge(admin::routes())
            .with_state(self.clone())
    }

    /// `/healthz`, `/readyz` (ready once the view has caught up) and `/openapi.json` (the
    /// document of the whole API, given by the caller), for `zcdp serve` alone.
    pub fn probes(self: &Arc<Self>, openapi: &'static str) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/openapi.json", get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi) }))
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

/// "an admin key", "a secret key".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A caller whose key is at least `MIN` (1: secret, 2: admin): what every route that reads other
/// users' data (or erases) takes first. No or an unknown key: 401; a key of a lower kind: 403.
/// A read (GET) may also come from the report page, signed in with an admin key (its cookie).
struct Key<const MIN: u8>(Caller);

/// The routes of a secret (or admin) key: any user's profile, segments, engagement, campaigns.
type SecretKey = Key<1>;
/// The routes of an admin key: erasure, the campaigns' definitions.
type AdminKey = Key<2>;

impl<const MIN: u8> FromRequestParts<Arc<QueryApi>> for Key<MIN> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<QueryApi>) -> Result<Self, Response> {
        let needed = if MIN >= 2 { Access::Admin } else { Access::Secret };
        let from_cookie = || (parts.method == axum::http::Method::GET).then(|| report::cookie_caller(api, &parts.headers)).flatten();
        let Some(caller) = api.keys.caller(&parts.headers).or_else(from_cookie) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("give {} {} key: Authorization: Bearer <key>", article(needed.name()), needed.name()),
            ));
        };
        if caller.access < needed {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!(
                    "{} {} key may not do this: it needs {} {} key, which stays on the shop's servers (docs/security.md)",
                    article(caller.access.name()),
                    caller.access.name(),
                    article(needed.name()),
                    needed.name()
                ),
            ));
        }
        Ok(Key(caller))
    }
}

/// The session user of a request: any key of the app (the write key, from the Mini App) and a
/// valid `X-Zcdp-Session` of that app. What the `/v1/me/…` routes answer is that user's only.
struct Me(Session);

impl FromRequestParts<Arc<QueryApi>> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<QueryApi>) -> Result<Self, Response> {
        let Some(caller) = api.keys.caller(&parts.headers) else {
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "give the app's write key: Authorization: Bearer <write key>"));
        };
        let Some(token) = parts.headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "session_required",
                "open a session (POST /v1/session) and send it as X-Zcdp-Session",
            ));
        };
        match api.sessions.verify(token, schemas::time::now_ms()) {
            Ok(s) if s.app == caller.app => Ok(Me(s)),
            Ok(_) => Err(error(StatusCode::FORBIDDEN, "identity_mismatch", "the session is another app's")),
            Err(e) => Err(error(StatusCode::UNAUTHORIZED, "invalid_session", &e.to_string())),
        }
    }
}

/// What a user may see of their own profile: no phone, ids, birthday or scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MyProfile {
    pub user_key: String,
    pub name: Option<String>,
    pub consents: Vec<schemas::derived::Consent>,
    pub points_balance: i64,
    pub orders: i64,
    pub vouchers_claimed: i64,
    pub vouchers_used: i64,
    pub oa_following: bool,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl From<&schemas::derived::Profile> for MyProfile {
    fn from(p: &schemas::derived::Profile) -> MyProfile {
        MyProfile {
            user_key: p.user_key.clone(),
            name: p.name.clone(),
            consents: p.consents.clone(),
            points_balance: p.points_balance,
            orders: p.orders,
            vouchers_claimed: p.vouchers_claimed,
            vouchers_used: p.vouchers_used,
            oa_following: p.oa_following,
            first_seen: p.first_seen,
            last_seen: p.last_seen,
        }
    }
}

async fn my_profile(State(api): State<Arc<QueryApi>>, Me(me): Me) -> Response {
    match api.view.profile(&me.app, &me.user) {
        Some(p) => Json(MyProfile::from(p.as_ref())).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown_user", "no profile for you in this app (yet)"),
    }
}

async fn my_recommendations(State(api): State<Arc<QueryApi>>, Me(me): Me, Query(q): Query<HashMap<String, String>>) -> Response {
    let limit = match limit(&q, 10, MAX_LIMIT) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let interests = api.view.interests(&me.app, &me.user);
    let snapshot = api.view.engagement(&me.app);
    let items = recommend(interests.as_deref(), &snapshot.top_products, limit);
    Json(json!({"user": me.user, "personalised": interests.is_some(), "items": items})).into_response()
}

/// The `limit` query parameter: `default` when absent, 1..=`max` when given, else a 400.
fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Response> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(error(StatusCode::BAD_REQUEST, "bad_limit", &format!("limit must be a whole number from 1 to {max}"))),
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

async fn profile(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): SecretKey, Path(id): Path<String>) -> Response {
    match api.view.profile(&app, &id) {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown_user", "no profile for this user id in this app (yet)"),
    }
}

/// Erasure: accepted once the request is in Kafka; the processors then erase the user from every
/// store and write tombstones to every compacted topic (the view drops the user when it reads them).
async fn forget(State(api): State<Arc<QueryApi>>, Key(Caller { app, key_id, .. }): AdminKey, Path(id): Path<String>) -> Response {
    if id.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_user", "give the user key (Zalo id or anonymous id)");
    }
    match request_forget(&api.producer, &app, &id, &key_id).await {
        Ok(request_id) => (StatusCode::ACCEPTED, Json(json!({"user": id, "request_id": request_id, "status": "accepted"}))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable", &format!("{e:#}; nothing was requested: send it again")),
    }
}

async fn recommendations(
    State(api): State<Arc<QueryApi>>,
    Key(Caller { app, .. }): SecretKey,
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
    Key(Caller { app, .. }): SecretKey,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let names = api.segment_names(&app);
    if !names.contains(&name) {
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

async fn activity_route(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): SecretKey) -> Response {
    Json(api.view.activity(&app)).into_response()
}

/// Every defined segment with its current size (0 for a defined segment nobody is in).
async fn segments_route(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): SecretKey) -> Response {
    let sizes = api.view.segment_sizes(&app);
    let list: Vec<Value> =
        api.segment_names(&app).iter().map(|s| json!({"name": s, "size": sizes.get(s.as_str()).copied().unwrap_or(0)})).collect();
    Json(json!({"app_id": app, "segments": list})).into_response()
}

async fn campaigns_route(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): SecretKey) -> Response {
    let campaigns = api.view.campaigns(&app);
    Json(json!({"app_id": app, "campaigns": campaigns})).into_response()
}

async fn engagement_route(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): SecretKey) -> Response {
    Json(api.view.engagement(&app).as_ref().clone()).into_response()
}
