//! The query API's materialised view: the latest record of every key of the compacted topics
//! it follows (`zmp.profiles.v1`, `zmp.interests.v1`, `zmp.audiences.v1`,
//! `zmp.campaign-results.v1`, `zmp.activity.v1`), kept in memory, and per-app engagement
//! snapshots recomputed every `--engagement-refresh`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::Message;

use schemas::derived::{Activity, AudienceChange, CampaignResult, Profile, UserInterests};
use schemas::kafka::Kafka;
use schemas::topics::{Topic, app_user_key};

use super::metrics::CAMPAIGN_METRICS;
use super::summaries::{self, ActivitySummary, CampaignSummary, Engagement, engagement, summarise};
use super::tally::Tally;

fn key(app: &str, user: &str) -> String {
    format!("{app}\u{1f}{user}")
}

/// The materialised view: the latest profile and interests of every user, and per-app snapshots.
#[derive(Default)]
pub struct View {
    profiles: RwLock<HashMap<String, Arc<Profile>>>,
    interests: RwLock<HashMap<String, Arc<UserInterests>>>,
    snapshots: RwLock<HashMap<String, Arc<Engagement>>>,
    /// Per app: engagement kept by each record's contribution, so a refresh reads no profile.
    tallies: RwLock<HashMap<String, Tally>>,
    /// (App, segment) → user key → the record that put the user in it.
    audiences: RwLock<HashMap<(String, String), std::collections::BTreeMap<String, Arc<AudienceChange>>>>,
    /// `app/campaign/partition` → that partition's results.
    campaigns: RwLock<HashMap<String, Arc<CampaignResult>>>,
    /// `app/partition` → that partition's activity.
    activity: RwLock<HashMap<String, Arc<Activity>>>,
    caught_up: AtomicBool,
}

impl View {
    // Lock order everywhere: `tallies`, then `profiles` or `interests`, both held while a record
    // and its tally change together.

    pub fn apply_profile(&self, p: Profile) {
        let p = Arc::new(p);
        let mut tallies = self.tallies.write().expect("view lock");
        let old = self.profiles.write().expect("view lock").insert(key(&p.app_id, &p.user_key), p.clone());
        let tally = tallies.entry(p.app_id.clone()).or_default();
        if let Some(old) = old {
            tally.profile(&old, -1);
        }
        tally.profile(&p, 1);
    }

    pub fn apply_interests(&self, i: UserInterests) {
        let i = Arc::new(i);
        let mut tallies = self.tallies.write().expect("view lock");
        let old = self.interests.write().expect("view lock").insert(key(&i.app_id, &i.user_key), i.clone());
        let tally = tallies.entry(i.app_id.clone()).or_default();
        if let Some(old) = old {
            tally.interests(&old, -1);
        }
        tally.interests(&i, 1);
    }

    pub fn apply_audience(&self, c: AudienceChange) {
        let mut a = self.audiences.write().expect("view lock");
        let members = a.entry((c.app_id.clone(), c.segment.clone())).or_default();
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
        let parts: Vec<&Activity> = all.values().filter(|a| a.app_id == app).map(|a| a.as_ref()).collect();
        summaries::activity(&parts)
    }

    /// The size of each segment of an app, by name.
    pub fn segment_sizes(&self, app: &str) -> std::collections::BTreeMap<String, usize> {
        let a = self.audiences.read().expect("view lock");
        a.iter().filter(|((a, _), _)| a == app).map(|((_, segment), members)| (segment.clone(), members.len())).collect()
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

    /// A tombstone: the key is gone from the topic. Every key names its app, so another app's
    /// record of the same user key stays.
    pub fn forget(&self, topic: Topic, key: &str) {
        match topic {
            Topic::CampaignResults => {
                self.campaigns.write().expect("view lock").remove(key);
            }
            Topic::Activity => {
                self.activity.write().expect("view lock").remove(key);
            }
            Topic::Profiles | Topic::Interests => {
                let Some((app, user)) = schemas::topics::split_app_user_key(key) else { return };
                let k = self::key(app, user);
                let mut tallies = self.tallies.write().expect("view lock");
                if topic == Topic::Profiles {
                    if let Some(old) = self.profiles.write().expect("view lock").remove(&k) {
                        tallies.entry(app.to_string()).or_default().profile(&old, -1);
                    }
                } else if let Some(old) = self.interests.write().expect("view lock").remove(&k) {
                    tallies.entry(app.to_string()).or_default().interests(&old, -1);
                }
                tallies.retain(|_, t| !t.is_empty());
            }
            Topic::Audiences => {
                if let Some((app, segment, user)) = schemas::topics::split_audience_key(key)
                    && let Some(m) = self.audiences.write().expect("view lock").get_mut(&(app.to_string(), segment.to_string()))
                {
                    m.remove(user);
                }
            }
            _ => {}
        }
    }

    /// Up to `limit` members of an app's segment with user keys after `after`, and whether more follow.
    pub fn members(&self, app: &str, segment: &str, after: Option<&str>, limit: usize) -> (Vec<Arc<AudienceChange>>, bool) {
        let a = self.audiences.read().expect("view lock");
        let Some(m) = a.get(&(app.to_string(), segment.to_string())) else { return (Vec::new(), false) };
        let range = match after {
            Some(k) => m.range::<str, _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => m.range::<str, _>(..),
        };
        let mut out: Vec<Arc<AudienceChange>> = range.map(|(_, c)| c.clone()).take(limit + 1).collect();
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

    /// Takes a new engagement snapshot of every app in the view, from its tally: the work is
    /// the app's days, cohorts and products, not its users.
    pub fn refresh(&self) {
        let snapshots: HashMap<String, Arc<Engagement>> =
            self.tallies.read().expect("view lock").iter().map(|(app, t)| (app.clone(), Arc::new(t.snapshot(app)))).collect();
        *self.snapshots.write().expect("view lock") = snapshots;
        self.export_campaign_metrics();
    }

    /// An app's engagement computed from every one of its profiles and interests, as the view did
    /// before it kept tallies: the baseline `zcdp bench serve` compares a refresh with.
    pub fn engagement_from_every_record(&self, app: &str) -> Engagement {
        let profiles = self.profiles.read().expect("view lock");
        let interests = self.interests.read().expect("view lock");
        let p: Vec<&Profile> = profiles.values().filter(|p| p.app_id == app).map(|p| p.as_ref()).collect();
        let i: Vec<&UserInterests> = interests.values().filter(|i| i.app_id == app).map(|i| i.as_ref()).collect();
        engagement(app, &p, &i)
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
                    Ok(Some(()))
                }
                // A record counts only under its own app's key (`zcdp topics migrate-keys` moves
                // those of a version before app-keyed topics).
                (Topic::Profiles, Some(p)) => schemas::codec::decode::<Profile>(p)
                    .map(|r| (app_user_key(&r.app_id, &r.user_key) == user).then(|| self.apply_profile(r))),
                (Topic::Audiences, Some(p)) => {
                    schemas::codec::decode::<AudienceChange>(p).map(|r| (r.key() == user).then(|| self.apply_audience(r)))
                }
                (Topic::CampaignResults, Some(p)) => {
                    schemas::codec::decode::<CampaignResult>(p).map(|r| Some(self.apply_campaign_result(r)))
                }
                (Topic::Activity, Some(p)) => schemas::codec::decode::<Activity>(p).map(|r| Some(self.apply_activity(r))),
                (_, Some(p)) => schemas::codec::decode::<UserInterests>(p)
                    .map(|r| (app_user_key(&r.app_id, &r.user_key) == user).then(|| self.apply_interests(r))),
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
