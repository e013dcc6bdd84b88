//! The query API's materialised view: the latest record of every key of the compacted topics
//! it follows (`zmp.profiles.v1`, `zmp.interests.v1`, `zmp.audiences.v1` on disk in
//! [`ViewDb`], resumed after a restart; `zmp.campaign-results.v1`, `zmp.activity.v1` in memory),
//! per-app engagement tallies, and snapshots taken from them every `--engagement-refresh`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::Message;

use schemas::derived::{Activity, AudienceChange, CampaignResult, Profile, UserInterests};
use schemas::kafka::Kafka;
use schemas::topics::{Topic, app_user_key};

use super::metrics::{CAMPAIGN_METRICS, VIEW_METRICS};
use super::store::{AUDIENCE, INTERESTS, PROFILE, SENDS, ViewDb};
use super::summaries::{self, ActivitySummary, CampaignSummary, Engagement, engagement, summarise};
use super::tally::Tally;

/// Kept records older than this are not resumed from: a tombstone (an erasure) written while the
/// replica was down may have been compacted away since (Kafka keeps tombstones
/// `delete.retention.ms`, 24 h by default), and the view would keep what it should forget.
const RESUME_WITHIN_MS: i64 = 12 * 3_600_000;

/// The topics whose records the view keeps on disk (and resumes after a restart); the others are
/// a few records a partition, read whole at each start.
const KEPT: [Topic; 4] = [Topic::Profiles, Topic::Interests, Topic::Audiences, Topic::Messages];

/// How far back the sends kept per user reach (the monthly promotion quota looks at a month).
const SENDS_FOR_MS: i64 = 40 * schemas::time::DAY_MS;
/// Most sends kept per user.
const MAX_SENDS: usize = 60;

/// A send as the view keeps it (see `store.rs`): when, the channel's class, promotional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub at: i64,
    pub channel: u8,
    pub promotional: bool,
}

fn channel_class(channel: &str) -> Option<u8> {
    Some(match channel {
        "oa_consultation" => 0,
        "oa_transaction" => 1,
        "oa_promotion" | "oa_template" => 2,
        "zns" => 3,
        _ => return None,
    })
}

fn encode_sends(sends: &[Send]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sends.len() * 9);
    for s in sends {
        out.extend_from_slice(&s.at.to_be_bytes());
        out.push(u8::from(s.promotional) | (s.channel << 1));
    }
    out
}

fn decode_sends(bytes: &[u8]) -> Vec<Send> {
    bytes
        .chunks_exact(9)
        .map(|c| Send { at: i64::from_be_bytes(c[..8].try_into().expect("8 bytes")), promotional: c[8] & 1 == 1, channel: (c[8] >> 1) & 3 })
        .collect()
}

/// The materialised view: the latest profile, interests and segment memberships of every user
/// (on disk, [`ViewDb`]), per-app engagement tallies and snapshots, campaign results and activity
/// (in memory: they are per app and partition, not per user).
pub struct View {
    db: ViewDb,
    snapshots: RwLock<HashMap<String, Arc<Engagement>>>,
    /// Per app: engagement kept by each record's contribution, so a refresh reads no profile.
    /// Also the write lock of per-user records: held while a record and its tally change.
    tallies: RwLock<HashMap<String, Tally>>,
    /// (App, segment) → members.
    segment_sizes: RwLock<HashMap<(String, String), usize>>,
    /// `app/campaign/partition` → that partition's results.
    campaigns: RwLock<HashMap<String, Arc<CampaignResult>>>,
    /// `app/partition` → that partition's activity.
    activity: RwLock<HashMap<String, Arc<Activity>>>,
    caught_up: AtomicBool,
    /// Records read from Kafka since this view started.
    read: AtomicU64,
}

fn decode<T: schemas::codec::Record>(bytes: &[u8]) -> Option<T> {
    schemas::codec::decode::<T>(bytes).ok()
}

/// A record of a per-user topic the tallies count.
enum UserRecord {
    Profile(Profile),
    Interests(UserInterests),
}

impl UserRecord {
    fn decode(kind: u8, bytes: &[u8]) -> Result<UserRecord, schemas::codec::CodecError> {
        Ok(if kind == PROFILE {
            UserRecord::Profile(schemas::codec::decode(bytes)?)
        } else {
            UserRecord::Interests(schemas::codec::decode(bytes)?)
        })
    }

    fn key(&self) -> String {
        match self {
            UserRecord::Profile(p) => app_user_key(&p.app_id, &p.user_key),
            UserRecord::Interests(i) => app_user_key(&i.app_id, &i.user_key),
        }
    }

    fn contribute(&self, tally: &mut Tally, sign: i64) {
        match self {
            UserRecord::Profile(p) => tally.profile(p, sign),
            UserRecord::Interests(i) => tally.interests(i, sign),
        }
    }
}

impl View {
    /// A view whose per-user records live in `dir` (resumed at the next start when they can be),
    /// or in a temporary directory removed when the view is dropped.
    pub fn open(dir: Option<&std::path::Path>, cache_mb: usize) -> anyhow::Result<View> {
        Ok(View {
            db: ViewDb::open(dir, cache_mb)?,
            snapshots: Default::default(),
            tallies: Default::default(),
            segment_sizes: Default::default(),
            campaigns: Default::default(),
            activity: Default::default(),
            caught_up: AtomicBool::new(false),
            read: AtomicU64::new(0),
        })
    }

    /// Records read from Kafka since this view started (a resumed view reads only what is new).
    pub fn records_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// A profile or interests record (`payload`, as Kafka holds it) or its tombstone (`None`)
    /// under topic key `key`, read at `at`; a record under another app's key is not applied.
    fn apply_user_record(&self, kind: u8, key: &str, payload: Option<&[u8]>, at: (&str, i32, i64)) -> anyhow::Result<()> {
        let Some((app, _)) = schemas::topics::split_app_user_key(key) else { return self.db.read(at.0, at.1, at.2) };
        let new = match payload.map(|bytes| UserRecord::decode(kind, bytes)) {
            None => None,
            // A record counts only under its own app's key (`zcdp topics migrate-keys` moves
            // those of a version before app-keyed topics).
            Some(Ok(r)) if r.key() == key => Some(r),
            // Kafka's latest value for the key is not a record the view can use (under another
            // key, or undecodable): the key holds nothing, as after a tombstone.
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic = at.0, partition = at.1, offset = at.2, "query view: undecodable record; its key is left empty");
                None
            }
        };
        let mut tallies = self.tallies.write().expect("view lock");
        let old = self.db.get(kind, key)?;
        self.db.put(kind, key, new.as_ref().and(payload), Some(at))?;
        // An erased user (the profile's tombstone): their sends go too.
        if kind == PROFILE && payload.is_none() {
            self.db.put(SENDS, key, None, None)?;
        }
        let tally = tallies.entry(app.to_string()).or_default();
        if let Some(Ok(old)) = old.map(|bytes| UserRecord::decode(kind, &bytes)) {
            old.contribute(tally, -1);
        }
        if let Some(new) = new {
            new.contribute(tally, 1);
        }
        if tally.is_empty() {
            tallies.remove(app);
        }
        Ok(())
    }

    /// A segment membership change or its tombstone under topic key `key`.
    /// A `zmp.messages.v1` record: a send (or a send whose answer was lost, which the sinks
    /// count as one) joins the user's recent sends.
    fn apply_message(&self, payload: Option<&[u8]>, at: (&str, i32, i64)) -> anyhow::Result<()> {
        let m = payload.and_then(decode::<schemas::derived::MessageEvent>);
        let counted =
            m.as_ref().filter(|m| m.status == "sent" || m.status == "unknown").and_then(|m| Some((m, channel_class(&m.channel)?)));
        let Some((m, channel)) = counted else { return self.db.read(at.0, at.1, at.2) };
        let key = app_user_key(&m.app_id, &m.user_key);
        let mut sends = self.db.get(SENDS, &key)?.map(|b| decode_sends(&b)).unwrap_or_default();
        sends.push(Send { at: m.at, channel, promotional: m.promotional });
        sends.retain(|s| m.at - s.at < SENDS_FOR_MS);
        let excess = sends.len().saturating_sub(MAX_SENDS);
        sends.drain(..excess);
        self.db.put(SENDS, &key, Some(&encode_sends(&sends)), Some(at))
    }

    /// The user's sends of the last 40 days (the newest 60), oldest first.
    pub fn sends(&self, app: &str, user: &str) -> Vec<Send> {
        match self.db.get(SENDS, &app_user_key(app, user)) {
            Ok(v) => v.map(|b| decode_sends(&b)).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "query view: reading a user's sends");
                Vec::new()
            }
        }
    }

    fn apply_audience(&self, key: &str, payload: Option<&[u8]>, at: (&str, i32, i64)) -> anyhow::Result<()> {
        let Some((app, segment, _)) = schemas::topics::split_audience_key(key) else { return self.db.read(at.0, at.1, at.2) };
        let member = match payload.map(schemas::codec::decode::<AudienceChange>) {
            None => None,
            Some(Ok(c)) if c.key() == key => c.member.then_some(payload).flatten(),
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic = at.0, partition = at.1, offset = at.2, "query view: undecodable record; its key is left empty");
                None
            }
        };
        let mut sizes = self.segment_sizes.write().expect("view lock");
        let was = self.db.get(AUDIENCE, key)?.is_some();
        self.db.put(AUDIENCE, key, member, Some(at))?;
        let id = (app.to_string(), segment.to_string());
        match (was, member.is_some()) {
            (false, true) => *sizes.entry(id).or_default() += 1,
            (true, false) => {
                if let Some(n) = sizes.get_mut(&id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        sizes.remove(&id);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Rebuilds the tallies and segment sizes from the records kept on disk (a resumed view).
    fn rebuild(&self) -> anyhow::Result<(usize, usize, usize)> {
        // Built aside and swapped in: lookups meanwhile wait on no lock.
        let mut tallies: HashMap<String, Tally> = HashMap::new();
        let mut sizes: HashMap<(String, String), usize> = HashMap::new();
        let (mut profiles, mut interests, mut members) = (0, 0, 0);
        for (kind, n) in [(PROFILE, &mut profiles), (INTERESTS, &mut interests)] {
            self.db.scan(kind, "", None, |k, v| {
                if let (Some((app, _)), Ok(r)) = (schemas::topics::split_app_user_key(k), UserRecord::decode(kind, v)) {
                    r.contribute(tallies.entry(app.to_string()).or_default(), 1);
                    *n += 1;
                }
                true
            })?;
        }
        self.db.scan(AUDIENCE, "", None, |k, _| {
            if let Some((app, segment, _)) = schemas::topics::split_audience_key(k) {
                *sizes.entry((app.to_string(), segment.to_string())).or_default() += 1;
                members += 1;
            }
            true
        })?;
        *self.tallies.write().expect("view lock") = tallies;
        *self.segment_sizes.write().expect("view lock") = sizes;
        Ok((profiles, interests, members))
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
        let parts: Vec<&Activity> = all.values().filter(|a| a.app_id == app).map(|a| a.as_ref()).collect();
        summaries::activity(&parts)
    }

    /// The size of each segment of an app, by name.
    pub fn segment_sizes(&self, app: &str) -> std::collections::BTreeMap<String, usize> {
        let sizes = self.segment_sizes.read().expect("view lock");
        sizes.iter().filter(|((a, _), _)| a == app).map(|((_, segment), n)| (segment.clone(), *n)).collect()
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
        let m = &*CAMPAIGN_METRICS;
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

    /// Up to `limit` members of an app's segment with user keys after `after`, and whether more follow.
    pub fn members(&self, app: &str, segment: &str, after: Option<&str>, limit: usize) -> (Vec<Arc<AudienceChange>>, bool) {
        let prefix = schemas::topics::audience_key(app, segment, "");
        let after = after.map(|user| schemas::topics::audience_key(app, segment, user));
        let mut out = Vec::new();
        let scanned = self.db.scan(AUDIENCE, &prefix, after.as_deref(), |_, v| {
            if let Some(c) = decode::<AudienceChange>(v) {
                out.push(Arc::new(c));
            }
            out.len() <= limit
        });
        if let Err(e) = scanned {
            tracing::error!(error = %e, "query view: reading a segment's members");
        }
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }

    fn user_record<T: schemas::codec::Record>(&self, kind: u8, app: &str, user: &str) -> Option<Arc<T>> {
        match self.db.get(kind, &app_user_key(app, user)) {
            Ok(v) => v.and_then(|v| decode::<T>(&v)).map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "query view: reading a user's record");
                None
            }
        }
    }

    /// Calls `f` with every profile of `app` in the view, in key order.
    pub fn each_profile(&self, app: &str, mut f: impl FnMut(Profile)) {
        let scanned = self.db.scan(PROFILE, &app_user_key(app, ""), None, |_, v| {
            if let Some(p) = decode::<Profile>(v) {
                f(p);
            }
            true
        });
        if let Err(e) = scanned {
            tracing::error!(error = %e, "query view: reading an app's profiles");
        }
    }

    pub fn profile(&self, app: &str, user: &str) -> Option<Arc<Profile>> {
        self.user_record(PROFILE, app, user)
    }

    pub fn interests(&self, app: &str, user: &str) -> Option<Arc<UserInterests>> {
        self.user_record(INTERESTS, app, user)
    }

    /// Takes a new engagement snapshot of every app in the view, from its tally: the work is
    /// the app's days, cohorts and products, not its users.
    pub fn refresh(&self) {
        let _timer = VIEW_METRICS.refresh_seconds.start_timer();
        let snapshots: HashMap<String, Arc<Engagement>> =
            self.tallies.read().expect("view lock").iter().map(|(app, t)| (app.clone(), Arc::new(t.snapshot(app)))).collect();
        *self.snapshots.write().expect("view lock") = snapshots;
        self.export_campaign_metrics();
    }

    /// An app's engagement computed from every one of its profiles and interests, as the view did
    /// before it kept tallies: the baseline `zcdp bench serve` compares a refresh with.
    pub fn engagement_from_every_record(&self, app: &str) -> Engagement {
        let prefix = app_user_key(app, "");
        let (mut p, mut i) = (Vec::<Profile>::new(), Vec::<UserInterests>::new());
        let _ = self.db.scan(PROFILE, &prefix, None, |_, v| {
            p.extend(decode::<Profile>(v));
            true
        });
        let _ = self.db.scan(INTERESTS, &prefix, None, |_, v| {
            i.extend(decode::<UserInterests>(v));
            true
        });
        engagement(app, &p.iter().collect::<Vec<_>>(), &i.iter().collect::<Vec<_>>())
    }

    pub fn engagement(&self, app: &str) -> Arc<Engagement> {
        self.snapshots.read().expect("view lock").get(app).cloned().unwrap_or_else(|| Arc::new(engagement(app, &[], &[])))
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Where to read the kept topics from: after what the view kept, when it kept records of
    /// this cluster written within [`RESUME_WITHIN_MS`] (the tallies and segment sizes are then
    /// rebuilt from them, on disk, with no Kafka read); `None` to read from the beginning, the
    /// kept records cleared.
    fn resume(&self, kafka: &Kafka) -> anyhow::Result<Option<schemas::kafka::Tail>> {
        let (kept_cluster, saved) = self.db.origin()?;
        let offsets = self.db.offsets()?;
        let cluster = if kafka.is_embedded() {
            None
        } else {
            use rdkafka::consumer::Consumer as _;
            let probe = kafka.client_config().create::<rdkafka::consumer::BaseConsumer>().context("creating a metadata client")?;
            probe.client().fetch_cluster_id(Duration::from_secs(10))
        };
        let fresh = saved.is_some_and(|t| schemas::time::now_ms() - t < RESUME_WITHIN_MS);
        let why_not = match (&cluster, &kept_cluster) {
            _ if offsets.is_empty() => None,
            (None, _) => Some("the cluster has no id (the embedded cluster is new at every start)"),
            (Some(c), Some(k)) if c != k => Some("they came from another cluster"),
            (_, None) => Some("they do not say which cluster they came from"),
            _ if !fresh => {
                Some("the view last read the topics to their end over 12 hours ago, or never (a tombstone since may be compacted away)")
            }
            _ => {
                let from = offsets.iter().map(|(t, p, o)| ((t.clone(), *p), *o)).collect();
                match kafka.tail_from(&KEPT.map(|t| t.name()), "query", &from)? {
                    Some(tail) => {
                        let (profiles, interests, members) = self.rebuild()?;
                        tracing::info!(
                            dir = %self.db.path().display(), profiles, interests, members,
                            "query view resumed from its kept records; reading only what is newer"
                        );
                        return Ok(Some(tail));
                    }
                    None => Some("the topics' offsets do not match them (topics re-created?)"),
                }
            }
        };
        if let Some(why) = why_not {
            tracing::info!(dir = %self.db.path().display(), why, "query view: kept records not used; reading the topics from the beginning");
        }
        self.db.clear(cluster.as_deref())?;
        Ok(None)
    }

    /// Follows the topics forever; caught up once it has read what they held when it started.
    /// Profiles, interests, audiences and messages (each user's recent sends, for the campaign
    /// preview) are read from where the kept records end when the view can resume
    /// ([`View::resume`]), from the beginning otherwise; campaign results and activity (in
    /// memory) from the beginning, always.
    pub async fn follow(self: Arc<Self>, kafka: Kafka) -> anyhow::Result<()> {
        let topics = [Topic::Profiles, Topic::Interests, Topic::Audiences, Topic::Messages, Topic::CampaignResults, Topic::Activity];
        // Metadata calls, RocksDB reads and the rebuild block: off the async workers.
        let resumed = {
            let (view, kafka) = (self.clone(), kafka.clone());
            tokio::task::spawn_blocking(move || view.resume(&kafka)).await??
        };
        let mut kept = match resumed {
            Some(t) => t,
            None => kafka.tail(&KEPT.map(|t| t.name()), "query")?,
        };
        let mut marked = std::time::Instant::now();
        let mut small = kafka.tail(&[Topic::CampaignResults.name(), Topic::Activity.name()], "query")?;
        if kept.caught_up() && small.caught_up() {
            self.refresh();
            self.caught_up.store(true, Ordering::Release);
            self.db.mark_caught_up()?;
        }
        loop {
            // Following live once caught up: the time kept says how recent the view is.
            if self.caught_up() && marked.elapsed() >= Duration::from_secs(60) {
                self.db.mark_caught_up()?;
                marked = std::time::Instant::now();
            }
            let msg = tokio::select! {
                m = kept.next(Duration::from_secs(1)) => m,
                m = small.next(Duration::from_secs(1)) => m,
            };
            let Some(msg) = msg else { continue };
            self.read.fetch_add(1, Ordering::Relaxed);
            VIEW_METRICS.records_read.inc();
            let topic = topics.into_iter().find(|t| t.name() == msg.topic()).unwrap_or(Topic::Interests);
            let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
            let (partition, offset) = (msg.partition(), msg.offset());
            let at = (topic.name(), partition, offset);
            match topic {
                Topic::Profiles => self.apply_user_record(PROFILE, &key, msg.payload(), at)?,
                Topic::Interests => self.apply_user_record(INTERESTS, &key, msg.payload(), at)?,
                Topic::Audiences => self.apply_audience(&key, msg.payload(), at)?,
                Topic::Messages => self.apply_message(msg.payload(), at)?,
                _ => {
                    let applied = match msg.payload() {
                        None if topic == Topic::CampaignResults => Ok(drop(self.campaigns.write().expect("view lock").remove(&key))),
                        None => Ok(drop(self.activity.write().expect("view lock").remove(&key))),
                        Some(p) if topic == Topic::CampaignResults => {
                            schemas::codec::decode::<CampaignResult>(p).map(|r| self.apply_campaign_result(r))
                        }
                        Some(p) => schemas::codec::decode::<Activity>(p).map(|r| self.apply_activity(r)),
                    };
                    if let Err(e) = applied {
                        tracing::warn!(error = %e, %topic, partition, offset, "query view: undecodable record skipped");
                    }
                }
            }
            drop(msg);
            let done = kept.saw(topic.name(), partition, offset) | small.saw(topic.name(), partition, offset);
            if done && kept.caught_up() && small.caught_up() && !self.caught_up() {
                tracing::info!(records = self.records_read(), "query view caught up");
                self.refresh();
                self.caught_up.store(true, Ordering::Release);
                self.db.mark_caught_up()?;
                marked = std::time::Instant::now();
            }
        }
    }
}
