//! The query API (`zcdp serve`; inside `zcdp up` on the same HTTP port): profiles,
//! recommendations and app-wide engagement, answered from a local materialised view of the
//! compacted topics `zmp.profiles.v1` and `zmp.interests.v1`. Every replica reads the whole
//! topics, so the API scales by adding replicas; nothing it answers costs a Kafka round trip.
//!
//! Engagement and trending products are computed from the view every `--engagement-refresh`
//! (they read every profile of an app) and served from that snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::Message;
use serde::Serialize;
use serde_json::{Value, json};

use schemas::derived::{Activity, AudienceChange, CampaignResult, Profile, UserInterests};
use schemas::duration::parse_duration;
use schemas::kafka::Kafka;
use schemas::keys::AppKeys;
use schemas::topics::Topic;

use crate::profiles::{DAY_MS, vn_day};

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
/// Trending products and categories kept per app.
const TRENDING: usize = 100;
/// Cohorts (first-seen days) the retention table reports, newest first.
const COHORTS: i64 = 60;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub id: String,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayCount {
    pub day: String,
    pub users: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cohort {
    /// The first-seen day (Vietnam time).
    pub cohort: String,
    pub users: usize,
    /// Share of the cohort active on the 1st, 7th, 30th day after it; null until that day has come.
    pub day1: Option<f64>,
    pub day7: Option<f64>,
    pub day30: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Funnel {
    pub users: usize,
    pub viewed_product: usize,
    pub added_to_cart: usize,
    pub started_checkout: usize,
    pub ordered: usize,
}

/// App-wide engagement, as of the latest event in the app's profiles.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Engagement {
    pub app_id: String,
    pub as_of: i64,
    pub day: String,
    pub users: usize,
    pub dau: usize,
    pub wau: usize,
    pub mau: usize,
    /// DAU / MAU (0 without monthly users).
    pub stickiness: f64,
    /// Users active on each of the last 30 days, oldest first.
    pub daily_active: Vec<DayCount>,
    pub retention: Vec<Cohort>,
    pub funnel: Funnel,
    pub top_products: Vec<Scored>,
    pub top_categories: Vec<Scored>,
}

/// The day (Vietnam time) of a day number, as YYYY-MM-DD.
fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// Computes an app's engagement from its profiles and interests.
pub fn engagement(app: &str, profiles: &[&Profile], interests: &[&UserInterests]) -> Engagement {
    let as_of = profiles.iter().map(|p| p.as_of).max().unwrap_or(0);
    let today = vn_day(as_of);
    let active_within = |p: &Profile, days: i64| p.recent_active_days.iter().any(|d| *d > today - days && *d <= today);
    let dau = profiles.iter().filter(|p| active_within(p, 1)).count();
    let wau = profiles.iter().filter(|p| active_within(p, 7)).count();
    let mau = profiles.iter().filter(|p| active_within(p, 30)).count();
    let daily_active = (today - 29..=today)
        .map(|d| DayCount { day: day_name(d), users: profiles.iter().filter(|p| p.recent_active_days.contains(&d)).count() })
        .collect();
    let mut cohorts: HashMap<i64, [usize; 4]> = HashMap::new();
    for p in profiles {
        let c = vn_day(p.first_seen);
        if c > today - COHORTS {
            let e = cohorts.entry(c).or_default();
            e[0] += 1;
            e[1] += usize::from(p.active_on_day1);
            e[2] += usize::from(p.active_on_day7);
            e[3] += usize::from(p.active_on_day30);
        }
    }
    let mut days: Vec<i64> = cohorts.keys().copied().collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    let retention = days
        .into_iter()
        .map(|c| {
            let [users, d1, d7, d30] = cohorts[&c];
            let share = |n: usize, after: i64| (c + after <= today).then(|| n as f64 / users as f64);
            Cohort { cohort: day_name(c), users, day1: share(d1, 1), day7: share(d7, 7), day30: share(d30, 30) }
        })
        .collect();
    let funnel = Funnel {
        users: profiles.len(),
        viewed_product: profiles.iter().filter(|p| p.product_views > 0).count(),
        added_to_cart: profiles.iter().filter(|p| p.cart_adds > 0).count(),
        started_checkout: profiles.iter().filter(|p| p.checkouts > 0).count(),
        ordered: profiles.iter().filter(|p| p.orders > 0).count(),
    };
    let (top_products, top_categories) = trending(interests);
    Engagement {
        app_id: app.to_string(),
        as_of,
        day: day_name(today),
        users: profiles.len(),
        dau,
        wau,
        mau,
        stickiness: if mau > 0 { dau as f64 / mau as f64 } else { 0.0 },
        daily_active,
        retention,
        funnel,
        top_products,
        top_categories,
    }
}

/// Every user's interest scores, decayed to the latest time among them and summed.
fn trending(interests: &[&UserInterests]) -> (Vec<Scored>, Vec<Scored>) {
    let now = interests.iter().map(|i| i.as_of).max().unwrap_or(0);
    let mut products: HashMap<&str, f64> = HashMap::new();
    let mut categories: HashMap<&str, f64> = HashMap::new();
    for i in interests {
        let f = if i.half_life_ms > 0 { 0.5f64.powf((now - i.as_of) as f64 / i.half_life_ms as f64) } else { 1.0 };
        for s in &i.products {
            *products.entry(&s.id).or_default() += s.score * f;
        }
        for s in &i.categories {
            *categories.entry(&s.id).or_default() += s.score * f;
        }
    }
    let top = |m: HashMap<&str, f64>| {
        let mut v: Vec<Scored> = m.into_iter().map(|(id, score)| Scored { id: id.to_string(), score }).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        v.truncate(TRENDING);
        v
    };
    (top(products), top(categories))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendation {
    pub product_id: String,
    pub score: f64,
    /// `interest` (the user's own) or `trending` (the app's, to fill the list).
    pub reason: &'static str,
}

/// The user's top products, then the app's trending ones they do not already have.
pub fn recommend(user: Option<&UserInterests>, trending: &[Scored], limit: usize) -> Vec<Recommendation> {
    let mut out: Vec<Recommendation> = user
        .map(|u| {
            u.products.iter().take(limit).map(|s| Recommendation { product_id: s.id.clone(), score: s.score, reason: "interest" }).collect()
        })
        .unwrap_or_default();
    for t in trending {
        if out.len() >= limit {
            break;
        }
        if !out.iter().any(|r| r.product_id == t.id) {
            out.push(Recommendation { product_id: t.id.clone(), score: t.score, reason: "trending" });
        }
    }
    out
}

fn key(app: &str, user: &str) -> String {
    format!("{app}\u{1f}{user}")
}

/// The materialised view: the latest profile and interests of every user, and per-app snapshots.
#[derive(Default)]
pub struct View {
    profiles: RwLock<HashMap<String, Arc<Profile>>>,
    interests: RwLock<HashMap<String, Arc<UserInterests>>>,
    snapshots: RwLock<HashMap<String, Arc<Engagement>>>,
    /// Segment → user key → the record that put the user in it.
    audiences: RwLock<HashMap<String, std::collections::BTreeMap<String, Arc<AudienceChange>>>>,
    /// `app/campaign/partition` → that partition's results.
    campaigns: RwLock<HashMap<String, Arc<CampaignResult>>>,
    /// `app/partition` → that partition's activity.
    activity: RwLock<HashMap<String, Arc<Activity>>>,
    caught_up: AtomicBool,
}

/// An app's events by type (`GET /v1/activity`), summed over partitions.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ActivitySummary {
    pub as_of: i64,
    /// One entry per minute of the last hour up to `as_of`, oldest first, with the counts by type
    /// (minutes without events are there, with none).
    pub minutes: Vec<MinuteSummary>,
    pub totals: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MinuteSummary {
    pub minute: i64,
    pub counts: std::collections::BTreeMap<String, i64>,
}

/// A campaign's results over every partition (`GET /v1/campaigns`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CampaignSummary {
    pub campaign: String,
    pub sent: i64,
    pub deferred: i64,
    pub suppressed: std::collections::BTreeMap<String, i64>,
    pub suppressed_total: i64,
    pub failed: i64,
    pub unknown: i64,
    pub delivered: i64,
    pub cost_vnd: i64,
    pub conversions: i64,
    pub revenue_vnd: i64,
    /// Revenue per VND spent; null while nothing was spent (free messages).
    pub revenue_per_vnd: Option<f64>,
    /// Credited orders per message sent (above 1 when users order more than once in the window).
    pub conversion_rate: Option<f64>,
    pub carts_triggered: i64,
    pub carts_recovered: i64,
    pub recovered_revenue_vnd: i64,
    pub recovery_rate: Option<f64>,
    pub window_ms: i64,
    pub as_of: i64,
}

/// Sums a campaign's partitions.
pub fn summarise(campaign: &str, parts: &[&CampaignResult]) -> CampaignSummary {
    let mut s = CampaignSummary { campaign: campaign.to_string(), ..Default::default() };
    for r in parts {
        s.sent += r.sent;
        s.deferred += r.deferred;
        for rc in &r.suppressed {
            *s.suppressed.entry(rc.reason.clone()).or_default() += rc.count;
            s.suppressed_total += rc.count;
        }
        s.failed += r.failed;
        s.unknown += r.unknown;
        s.delivered += r.delivered;
        s.cost_vnd += r.cost_vnd;
        s.conversions += r.conversions;
        s.revenue_vnd += r.revenue_vnd;
        s.carts_triggered += r.carts_triggered;
        s.carts_recovered += r.carts_recovered;
        s.recovered_revenue_vnd += r.recovered_revenue_vnd;
        s.window_ms = s.window_ms.max(r.window_ms);
        s.as_of = s.as_of.max(r.as_of);
    }
    let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
    s.revenue_per_vnd = ratio(s.revenue_vnd, s.cost_vnd);
    s.conversion_rate = ratio(s.conversions, s.sent);
    s.recovery_rate = ratio(s.carts_recovered, s.carts_triggered);
    s
}

impl View {
    pub fn apply_profile(&self, p: Profile) {
        self.profiles.write().expect("view lock").insert(key(&p.app_id, &p.user_key), Arc::new(p));
    }

    pub fn apply_interests(&self, i: UserInterests) {
        self.interests.write().expect("view lock").insert(key(&i.app_id, &i.user_key), Arc::new(i));
    }

    pub fn apply_audience(&self, c: AudienceChange) {
        let mut a = self.audiences.write().expect("view lock");
        let members = a.entry(c.segment.clone()).or_default();
        if c.member {
            members.insert(c.user_key.clone(), Arc::new(c));
        } else {
            members.remove(&c.user_key);
        }
    }

    pub fn apply_campaign_result(&self, r: CampaignResult) {
        self.campaigns.write().expect("view lock").insert(r.key(), Arc::new(r));
    }

    pub fn apply_activity(&self, a: Activity) {
        self.activity.write().expect("view lock").insert(a.key(), Arc::new(a));
    }

    /// An app's events by type: per minute over the hour up to its latest event, and in all.
    pub fn activity(&self, app: &str) -> ActivitySummary {
        let all = self.activity.read().expect("view lock");
        let parts: Vec<&Arc<Activity>> = all.values().filter(|a| a.app_id == app).collect();
        let as_of = parts.iter().map(|a| a.as_of).max().unwrap_or(0);
        let last = as_of - as_of.rem_euclid(60_000);
        let first = last - (crate::activity::MINUTES - 1) * 60_000;
        let mut minutes: Vec<MinuteSummary> =
            (0..crate::activity::MINUTES).map(|i| MinuteSummary { minute: first + i * 60_000, ..Default::default() }).collect();
        let mut totals = std::collections::BTreeMap::new();
        for a in parts {
            for m in a.minutes.iter().filter(|m| m.minute >= first && m.minute <= last) {
                *minutes[((m.minute - first) / 60_000) as usize].counts.entry(m.event_type.clone()).or_default() += m.count;
            }
            for t in &a.totals {
                *totals.entry(t.event_type.clone()).or_default() += t.count;
            }
        }
        if as_of == 0 {
            minutes.clear();
        }
        ActivitySummary { as_of, minutes, totals }
    }

    /// The size of each segment of an app, by name.
    pub fn segment_sizes(&self, app: &str) -> std::collections::BTreeMap<String, usize> {
        let a = self.audiences.read().expect("view lock");
        a.iter().map(|(segment, members)| (segment.clone(), members.values().filter(|c| c.app_id == app).count())).collect()
    }

    /// Every campaign of an app with results, by name.
    pub fn campaigns(&self, app: &str) -> Vec<CampaignSummary> {
        let c = self.campaigns.read().expect("view lock");
        let mut by_name: std::collections::BTreeMap<&str, Vec<&CampaignResult>> = Default::default();
        for r in c.values().filter(|r| r.app_id == app) {
            by_name.entry(r.campaign.as_str()).or_default().push(r);
        }
        by_name.into_iter().map(|(name, parts)| summarise(name, &parts)).collect()
    }

    /// Sets the `zcdp_campaign_*` gauges from the view.
    fn export_campaign_metrics(&self) {
        let apps: Vec<String> = {
            let c = self.campaigns.read().expect("view lock");
            let mut apps: Vec<String> = c.values().map(|r| r.app_id.clone()).collect();
            apps.sort_unstable();
            apps.dedup();
            apps
        };
        let m = &*crate::metrics::CAMPAIGN_METRICS;
        for app in apps {
            for s in self.campaigns(&app) {
                let l = [app.as_str(), s.campaign.as_str()];
                m.sent.with_label_values(&l).set(s.sent);
                m.delivered.with_label_values(&l).set(s.delivered);
                m.cost.with_label_values(&l).set(s.cost_vnd);
                m.conversions.with_label_values(&l).set(s.conversions);
                m.revenue.with_label_values(&l).set(s.revenue_vnd);
                m.revenue_per_vnd.with_label_values(&l).set(s.revenue_per_vnd.unwrap_or(0.0));
                m.carts_triggered.with_label_values(&l).set(s.carts_triggered);
                m.carts_recovered.with_label_values(&l).set(s.carts_recovered);
                for (reason, n) in &s.suppressed {
                    m.suppressed.with_label_values(&[app.as_str(), s.campaign.as_str(), reason.as_str()]).set(*n);
                }
            }
        }
    }

    /// A tombstone: the key is gone from the topic (in whichever app had it).
    pub fn forget(&self, topic: Topic, key: &str) {
        let suffix = format!("\u{1f}{key}");
        match topic {
            Topic::CampaignResults => {
                self.campaigns.write().expect("view lock").remove(key);
            }
            Topic::Activity => {
                self.activity.write().expect("view lock").remove(key);
            }
            Topic::Profiles => self.profiles.write().expect("view lock").retain(|k, _| !k.ends_with(&suffix)),
            Topic::Audiences => {
                if let Some((segment, user)) = key.split_once('/')
                    && let Some(m) = self.audiences.write().expect("view lock").get_mut(segment)
                {
                    m.remove(user);
                }
            }
            _ => self.interests.write().expect("view lock").retain(|k, _| !k.ends_with(&suffix)),
        }
    }

    /// Up to `limit` members of an app's segment with user keys after `after`, and whether more follow.
    pub fn members(&self, app: &str, segment: &str, after: Option<&str>, limit: usize) -> (Vec<Arc<AudienceChange>>, bool) {
        let a = self.audiences.read().expect("view lock");
        let Some(m) = a.get(segment) else { return (Vec::new(), false) };
        let range = match after {
            Some(k) => m.range::<str, _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => m.range::<str, _>(..),
        };
        let mut out: Vec<Arc<AudienceChange>> = range.filter(|(_, c)| c.app_id == app).map(|(_, c)| c.clone()).take(limit + 1).collect();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }

    pub fn profile(&self, app: &str, user: &str) -> Option<Arc<Profile>> {
        self.profiles.read().expect("view lock").get(&key(app, user)).cloned()
    }

    pub fn interests(&self, app: &str, user: &str) -> Option<Arc<UserInterests>> {
        self.interests.read().expect("view lock").get(&key(app, user)).cloned()
    }

    /// Recomputes the engagement snapshot of every app in the view.
    pub fn refresh(&self) {
        let profiles: Vec<Arc<Profile>> = self.profiles.read().expect("view lock").values().cloned().collect();
        let interests: Vec<Arc<UserInterests>> = self.interests.read().expect("view lock").values().cloned().collect();
        let mut apps: Vec<&str> = profiles.iter().map(|p| p.app_id.as_str()).chain(interests.iter().map(|i| i.app_id.as_str())).collect();
        apps.sort_unstable();
        apps.dedup();
        let mut snapshots = HashMap::new();
        for app in apps {
            let p: Vec<&Profile> = profiles.iter().filter(|p| p.app_id == app).map(|p| p.as_ref()).collect();
            let i: Vec<&UserInterests> = interests.iter().filter(|i| i.app_id == app).map(|i| i.as_ref()).collect();
            snapshots.insert(app.to_string(), Arc::new(engagement(app, &p, &i)));
        }
        *self.snapshots.write().expect("view lock") = snapshots;
        self.export_campaign_metrics();
    }

    pub fn engagement(&self, app: &str) -> Arc<Engagement> {
        self.snapshots.read().expect("view lock").get(app).cloned().unwrap_or_else(|| Arc::new(engagement(app, &[], &[])))
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Reads both compacted topics from the beginning, forever; caught up once it has read what
    /// they held when it started.
    pub async fn follow(self: Arc<Self>, kafka: Kafka) -> anyhow::Result<()> {
        let topics = [Topic::Profiles, Topic::Interests, Topic::Audiences, Topic::CampaignResults, Topic::Activity];
        let mut tail = kafka.tail(&topics.map(|t| t.name()), "query")?;
        if tail.caught_up() {
            self.caught_up.store(true, Ordering::Release);
        }
        loop {
            let Some(msg) = tail.next(Duration::from_secs(1)).await else { continue };
            let topic = topics.into_iter().find(|t| t.name() == msg.topic()).unwrap_or(Topic::Interests);
            let user = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
            let applied = match (topic, msg.payload()) {
                (_, None) => {
                    self.forget(topic, &user);
                    Ok(())
                }
                (Topic::Profiles, Some(p)) => schemas::codec::decode::<Profile>(p).map(|r| self.apply_profile(r)),
                (Topic::Audiences, Some(p)) => schemas::codec::decode::<AudienceChange>(p).map(|r| self.apply_audience(r)),
                (Topic::CampaignResults, Some(p)) => schemas::codec::decode::<CampaignResult>(p).map(|r| self.apply_campaign_result(r)),
                (Topic::Activity, Some(p)) => schemas::codec::decode::<Activity>(p).map(|r| self.apply_activity(r)),
                (_, Some(p)) => schemas::codec::decode::<UserInterests>(p).map(|r| self.apply_interests(r)),
            };
            if let Err(e) = applied {
                tracing::warn!(error = %e, %topic, partition = msg.partition(), offset = msg.offset(), "query view: undecodable record skipped");
            }
            let (partition, offset) = (msg.partition(), msg.offset());
            drop(msg);
            if tail.saw(topic.name(), partition, offset) {
                tracing::info!("query view caught up");
                self.refresh();
                self.caught_up.store(true, Ordering::Release);
            }
        }
    }
}

/// Writes an erasure request for a user to `zmp.identities.v1` (keyed like the user's events, so
/// the task that holds the user reads it in order) and waits for Kafka's acknowledgement; returns
/// the request's event id.
pub async fn request_forget(producer: &rdkafka::producer::FutureProducer, app: &str, user: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let event = schemas::event::forget_request(app, user, now);
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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for QueryApi {
    fn drop(&mut self) {
        for t in &self.tasks {
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
        Ok(Arc::new(QueryApi { view, keys, segments, producer, tasks: vec![follow, refresh] }))
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

    fn app(&self, headers: &HeaderMap) -> Result<String, Response> {
        self.keys.app_for(headers).map(str::to_string).ok_or_else(|| {
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

async fn profile(State(api): State<Arc<QueryApi>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let app = match api.app(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match api.view.profile(&app, &id) {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown_user", "no profile for this user id in this app (yet)"),
    }
}

/// Erasure: accepted once the request is in Kafka; the processors then erase the user from every
/// store and write tombstones to every compacted topic (the view drops the user when it reads them).
async fn forget(State(api): State<Arc<QueryApi>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let app = match api.app(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
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
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let app = match api.app(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
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
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let app = match api.app(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
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

async fn activity_route(State(api): State<Arc<QueryApi>>, headers: HeaderMap) -> Response {
    match api.app(&headers) {
        Ok(app) => Json(api.view.activity(&app)).into_response(),
        Err(r) => r,
    }
}

/// Every defined segment with its current size (0 for a defined segment nobody is in).
async fn segments_route(State(api): State<Arc<QueryApi>>, headers: HeaderMap) -> Response {
    match api.app(&headers) {
        Ok(app) => {
            let sizes = api.view.segment_sizes(&app);
            let list: Vec<Value> = api
                .segments
                .list
                .iter()
                .map(|s| json!({"name": s.name, "size": sizes.get(s.name.as_str()).copied().unwrap_or(0)}))
                .collect();
            Json(json!({"app_id": app, "segments": list})).into_response()
        }
        Err(r) => r,
    }
}

async fn campaigns_route(State(api): State<Arc<QueryApi>>, headers: HeaderMap) -> Response {
    match api.app(&headers) {
        Ok(app) => {
            let campaigns = api.view.campaigns(&app);
            Json(json!({"app_id": app, "campaigns": campaigns})).into_response()
        }
        Err(r) => r,
    }
}

async fn engagement_route(State(api): State<Arc<QueryApi>>, headers: HeaderMap) -> Response {
    match api.app(&headers) {
        Ok(app) => Json(api.view.engagement(&app).as_ref().clone()).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::derived::Score;

    /// 2026-01-01T00:00:00+07:00.
    const T0: i64 = 1_767_200_400_000;
    const D: i64 = DAY_MS;

    fn profile(user: &str, first: i64, active: &[i64], retained: [bool; 3], funnel: [i64; 4]) -> Profile {
        let days: Vec<i64> = active.iter().map(|t| vn_day(*t)).collect();
        Profile {
            app_id: "demo".into(),
            user_key: user.into(),
            first_seen: first,
            last_seen: *active.last().unwrap(),
            as_of: *active.last().unwrap(),
            recent_active_days: days,
            active_on_day1: retained[0],
            active_on_day7: retained[1],
            active_on_day30: retained[2],
            product_views: funnel[0],
            cart_adds: funnel[1],
            checkouts: funnel[2],
            orders: funnel[3],
            ..Default::default()
        }
    }

    /// A small known history: four users over ten days.
    #[test]
    fn dau_mau_retention_and_funnel_of_a_known_history() {
        let a = profile("a", T0, &[T0, T0 + D, T0 + 9 * D], [true, false, false], [3, 1, 1, 1]);
        let b = profile("b", T0, &[T0], [false, false, false], [1, 0, 0, 0]);
        let c = profile("c", T0 + 3 * D, &[T0 + 3 * D, T0 + 4 * D, T0 + 8 * D], [true, false, false], [2, 2, 0, 0]);
        let d = profile("d", T0 + 9 * D, &[T0 + 9 * D + 3600_000], [false, false, false], [0, 0, 0, 0]);
        let e = engagement("demo", &[&a, &b, &c, &d], &[]);
        // Day 9 is "today" (the latest event): a and d; the week (days 3-9): a, c, d; the month: all.
        assert_eq!((e.dau, e.wau, e.mau, e.users), (2, 3, 4, 4));
        assert!((e.stickiness - 0.5).abs() < 1e-9);
        assert_eq!(e.day, "2026-01-10");
        assert_eq!(e.daily_active.len(), 30);
        assert_eq!(e.daily_active.last().unwrap(), &DayCount { day: "2026-01-10".into(), users: 2 });
        assert_eq!(e.daily_active[29 - 9], DayCount { day: "2026-01-01".into(), users: 2 });
        // Cohorts newest first: day 9 (d: day 1 not yet come), day 3 (c), day 0 (a, b).
        let cohorts: Vec<(&str, usize, Option<f64>, Option<f64>)> =
            e.retention.iter().map(|c| (c.cohort.as_str(), c.users, c.day1, c.day7)).collect();
        assert_eq!(
            cohorts,
            vec![("2026-01-10", 1, None, None), ("2026-01-04", 1, Some(1.0), None), ("2026-01-01", 2, Some(0.5), Some(0.0))]
        );
        assert_eq!(e.funnel, Funnel { users: 4, viewed_product: 3, added_to_cart: 2, started_checkout: 1, ordered: 1 });
    }

    #[test]
    fn recommendations_fill_with_trending_products_the_user_does_not_have() {
        let scores = |v: &[(&str, f64)]| v.iter().map(|(id, s)| Score { id: id.to_string(), score: *s }).collect::<Vec<_>>();
        let half = 7 * D;
        let u1 = UserInterests {
            app_id: "demo".into(),
            user_key: "u1".into(),
            as_of: T0 + half,
            half_life_ms: half,
            products: scores(&[("tea", 4.0)]),
            ..Default::default()
        };
        // u2's scores are a half-life older: they count half.
        let u2 = UserInterests {
            app_id: "demo".into(),
            user_key: "u2".into(),
            as_of: T0,
            half_life_ms: half,
            products: scores(&[("cake", 10.0), ("tea", 2.0)]),
            ..Default::default()
        };
        let (top, _) = trending(&[&u1, &u2]);
        // Equal scores: by id.
        assert_eq!(top, vec![Scored { id: "cake".into(), score: 5.0 }, Scored { id: "tea".into(), score: 5.0 }]);
        let r = recommend(Some(&u1), &top, 3);
        assert_eq!(
            r.iter().map(|r| (r.product_id.as_str(), r.reason)).collect::<Vec<_>>(),
            vec![("tea", "interest"), ("cake", "trending")]
        );
        let r = recommend(None, &top, 1);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, "trending");
    }
}
