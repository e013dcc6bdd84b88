//! Campaigns (and segments) as versioned data: `zmp.campaigns.v1`, compacted, key
//! `app/kind/name`, one [`Definition`] a version. The admin API writes an app's definitions; the
//! sinks write the seed (`config/campaigns.toml`, or `--campaigns`) under app `*`, which every
//! app gets unless it has its own definition of the same name. Every reader (each sink member,
//! each query API replica) follows the topic in a [`Catalog`], so a change applies within a
//! second or two everywhere, without a restart. Every version read stays known by number: a
//! decision records the version it was taken under, and a deferral resumes under it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use schemas::derived::Definition;
use schemas::kafka::Kafka;
use schemas::topics::{Topic, definition_key};

use crate::campaigns::{Campaign, from_json};
use crate::triggers::Trigger;

/// The version of each definition a reader applies, and whether it is paused: a change is in
/// force at a reader once its gauge shows the new version.
static VERSION: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "zcdp_definition_version",
        "The version of each campaign (segment) definition in force at this reader (sink or query), by app (* the seed)",
        &["reader", "app", "kind", "name"]
    )
    .expect("metric")
});
static PAUSED: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "zcdp_definition_paused",
        "1 while the definition in force at this reader is paused",
        &["reader", "app", "kind", "name"]
    )
    .expect("metric")
});

pub const CAMPAIGN: &str = "campaign";
/// The sinks' `[limits]` (one record, `*/limits/limits`): what the campaign preview applies.
pub const LIMITS: &str = "limits";
pub const SEGMENT: &str = "segment";

/// A campaign in force for an app: its definition record and the campaign it reads as.
#[derive(Debug, Clone)]
pub struct Live {
    pub record: Definition,
    pub campaign: Arc<Campaign>,
}

impl Live {
    pub fn version(&self) -> i64 {
        self.record.version
    }
    pub fn paused(&self) -> bool {
        self.record.paused
    }
    /// The seed's (every app's), not the app's own.
    pub fn from_seed(&self) -> bool {
        self.record.app_id == Definition::SEED_APP
    }
}

#[derive(Default)]
struct State {
    /// The latest record per key.
    records: BTreeMap<String, Definition>,
    /// Campaign records read as campaigns, by key.
    campaigns: HashMap<String, Arc<Campaign>>,
    /// Every campaign version read: (app, name, version).
    versions: HashMap<(String, String, i64), Arc<Campaign>>,
    /// The highest version read per key, removed ones included: a definition written again
    /// after its removal goes on from there, so a version names one definition.
    highest: HashMap<String, i64>,
}

impl State {
    /// The key of the definition in force for `app`: its own when it has one, else the seed's.
    fn key_in_force(&self, app: &str, kind: &str, name: &str) -> String {
        let own = definition_key(app, kind, name);
        if self.records.contains_key(&own) { own } else { definition_key(Definition::SEED_APP, kind, name) }
    }
}

/// What `zmp.campaigns.v1` says, kept current by following it.
#[derive(Default)]
pub struct Catalog {
    state: RwLock<State>,
    caught_up: AtomicBool,
    /// Who reads it (the metrics' `reader` label): `sink`, `query`.
    reader: String,
    /// Per kind (segments; everything else), one more at every record of it applied: readers that
    /// derive something from the definitions (the processors' segments) rebuild it when it moved.
    generations: [std::sync::atomic::AtomicU64; 2],
}

impl Catalog {
    /// Applies one record of the topic (None: a tombstone of `key`).
    pub fn apply(&self, key: &str, record: Option<Definition>) {
        let mut s = self.state.write().expect("catalog lock");
        let of_kind = record.as_ref().map(|d| d.kind.clone()).or_else(|| s.records.get(key).map(|d| d.kind.clone()));
        self.generations[usize::from(of_kind.as_deref() == Some(SEGMENT))].fetch_add(1, Ordering::AcqRel);
        let Some(d) = record else {
            if let Some(old) = s.records.remove(key) {
                let labels = [self.reader.as_str(), &old.app_id, &old.kind, &old.name];
                let _ = VERSION.remove_label_values(&labels);
                let _ = PAUSED.remove_label_values(&labels);
            }
            s.campaigns.remove(key);
            return;
        };
        if d.key() != key {
            tracing::warn!(key, "zmp.campaigns.v1: a record under another key than its own; skipped");
            return;
        }
        // A writer applies its own record at once; the follower may bring an older one after
        // a newer (another replica's): versions only go forward.
        if s.records.get(key).is_some_and(|old| old.version > d.version) {
            return;
        }
        if d.kind == CAMPAIGN {
            let parsed = serde_json::from_str::<Value>(&d.definition)
                .map_err(|e| e.to_string())
                .and_then(|v| from_json(&v).map_err(|e| e.to_string()));
            match parsed {
                Ok(c) if c.name == d.name => {
                    let c = Arc::new(c);
                    s.versions.insert((d.app_id.clone(), d.name.clone(), d.version), c.clone());
                    s.campaigns.insert(key.to_string(), c);
                }
                Ok(_) => tracing::warn!(key, "zmp.campaigns.v1: a definition whose name is not its key's; skipped"),
                // Checked when written; a rule that changed since (a Zalo service stopped) or a
                // newer version's field: this member cannot run it.
                Err(why) => {
                    tracing::warn!(key, version = d.version, %why, "zmp.campaigns.v1: a campaign this member cannot run; it is left out");
                    s.campaigns.remove(key);
                }
            }
        }
        let top = s.highest.entry(key.to_string()).or_default();
        *top = (*top).max(d.version);
        let labels = [self.reader.as_str(), &d.app_id, &d.kind, &d.name];
        VERSION.with_label_values(&labels).set(d.version);
        PAUSED.with_label_values(&labels).set(i64::from(d.paused));
        s.records.insert(key.to_string(), d);
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Moves whenever a record of `kind` is applied.
    pub fn generation(&self, kind: &str) -> u64 {
        self.generations[usize::from(kind == SEGMENT)].load(Ordering::Acquire)
    }

    /// Starts following the topic from its beginning, in a task; [`Catalog::caught_up`] says
    /// when what it held at the start is read.
    /// `reader`: who reads it, `sink`, `query` or `process` (metrics, and the consumer's name).
    pub fn spawn(kafka: &Kafka, reader: &str) -> (Arc<Catalog>, tokio::task::JoinHandle<()>) {
        let catalog = Arc::new(Catalog { reader: reader.to_string(), ..Default::default() });
        let purpose = format!("{reader}-campaigns");
        let task = {
            let (catalog, kafka) = (catalog.clone(), kafka.clone());
            tokio::spawn(async move {
                if let Err(e) = catalog.follow(&kafka, &purpose).await {
                    tracing::error!(error = %format!("{e:#}"), "following zmp.campaigns.v1 stopped: campaign changes are no longer applied here");
                }
            })
        };
        (catalog, task)
    }

    /// [`Catalog::spawn`], returning once what the topic held at the start is read (or after
    /// `within`, with an error).
    pub async fn start(kafka: &Kafka, reader: &str, within: Duration) -> anyhow::Result<(Arc<Catalog>, tokio::task::JoinHandle<()>)> {
        let (catalog, task) = Catalog::spawn(kafka, reader);
        let deadline = tokio::time::Instant::now() + within;
        while !catalog.caught_up() {
            if task.is_finished() || tokio::time::Instant::now() > deadline {
                task.abort();
                anyhow::bail!("zmp.campaigns.v1 was not read to its end within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((catalog, task))
    }

    async fn follow(&self, kafka: &Kafka, purpose: &str) -> anyhow::Result<()> {
        let mut tail = kafka.tail(&[Topic::Campaigns.name()], purpose)?;
        if tail.caught_up() {
            self.caught_up.store(true, Ordering::Release);
        }
        loop {
            let Some(msg) = tail.next(Duration::from_secs(1)).await else { continue };
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default().to_string();
            match msg.payload().map(schemas::codec::decode::<Definition>) {
                None => self.apply(&key, None),
                Some(Ok(d)) => self.apply(&key, Some(d)),
                Some(Err(e)) => tracing::warn!(error = %e, key, "zmp.campaigns.v1: undecodable record skipped"),
            }
            let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
            drop(msg);
            if tail.saw(&topic, partition, offset) {
                self.caught_up.store(true, Ordering::Release);
            }
        }
    }

    /// The highest version `app`'s own `kind/name` ever had here (0: none).
    pub fn highest(&self, app: &str, kind: &str, name: &str) -> i64 {
        self.state.read().expect("catalog lock").highest.get(&definition_key(app, kind, name)).copied().unwrap_or(0)
    }

    /// The latest record of `app`'s own definition `kind/name` (not the seed's).
    pub fn own(&self, app: &str, kind: &str, name: &str) -> Option<Definition> {
        self.state.read().expect("catalog lock").records.get(&definition_key(app, kind, name)).cloned()
    }

    /// The definitions of `kind` in force for `app`: its own, and the seed's it has none of, by
    /// name.
    pub fn effective(&self, app: &str, kind: &str) -> Vec<Definition> {
        let s = self.state.read().expect("catalog lock");
        let mut out: BTreeMap<&str, &Definition> = BTreeMap::new();
        for d in s.records.values().filter(|d| d.kind == kind) {
            if d.app_id == app || (d.app_id == Definition::SEED_APP && !out.contains_key(d.name.as_str())) {
                out.insert(&d.name, d);
            }
        }
        out.into_values().cloned().collect()
    }

    /// The definition of `kind/name` in force for `app`.
    pub fn get(&self, app: &str, kind: &str, name: &str) -> Option<Definition> {
        let s = self.state.read().expect("catalog lock");
        s.records.get(&s.key_in_force(app, kind, name)).cloned()
    }

    /// The campaign `name` in force for `app` (paused or not): the app's own when it has one —
    /// None if this member cannot run that one, never the seed in its place — else the seed's.
    pub fn campaign(&self, app: &str, name: &str) -> Option<Live> {
        let s = self.state.read().expect("catalog lock");
        let key = s.key_in_force(app, CAMPAIGN, name);
        Some(Live { record: s.records.get(&key)?.clone(), campaign: s.campaigns.get(&key)?.clone() })
    }

    /// Version `version` of `app`'s campaign `name` (its own, or the seed's).
    pub fn campaign_version(&self, app: &str, name: &str, version: i64) -> Option<Arc<Campaign>> {
        let s = self.state.read().expect("catalog lock");
        [app, Definition::SEED_APP].into_iter().find_map(|a| s.versions.get(&(a.to_string(), name.to_string(), version)).cloned())
    }

    /// The campaigns in force for `app` that start on `trigger`, not paused.
    pub fn for_trigger(&self, app: &str, trigger: Trigger) -> Vec<Live> {
        self.effective(app, CAMPAIGN)
            .into_iter()
            .filter(|d| !d.paused)
            .filter_map(|d| self.campaign(app, &d.name).filter(|l| l.record.app_id == d.app_id))
            .filter(|l| l.campaign.trigger == trigger && l.campaign.enabled)
            .collect()
    }

    /// How many definitions of `kind` `app` has of its own (not the seed's).
    pub fn own_count(&self, app: &str, kind: &str) -> usize {
        self.state.read().expect("catalog lock").records.values().filter(|d| d.app_id == app && d.kind == kind).count()
    }

    /// Removes `app`'s own definition `kind/name` (the seed's, if any, applies again).
    pub async fn remove_own(&self, producer: &FutureProducer, app: &str, kind: &str, name: &str) -> anyhow::Result<bool> {
        let key = definition_key(app, kind, name);
        if !self.state.read().expect("catalog lock").records.contains_key(&key) {
            return Ok(false);
        }
        remove(producer, self, &key).await?;
        Ok(true)
    }

    /// Whether any app has a campaign (paused or not) on `trigger`: triggers no campaign wants
    /// are not even queued.
    pub fn any_for_trigger(&self, trigger: Trigger) -> bool {
        self.state.read().expect("catalog lock").campaigns.values().any(|c| c.trigger == trigger)
    }
}

/// Writes a definition and waits for Kafka's acknowledgement; then applies it to `catalog`, so
/// the writer reads its own write at once.
pub async fn write(producer: &FutureProducer, catalog: &Catalog, d: Definition) -> anyhow::Result<Definition> {
    let key = d.key();
    let payload = schemas::codec::encode(&d)?;
    producer
        .send(FutureRecord::to(Topic::Campaigns.name()).key(&key).payload(&payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("writing {key} to zmp.campaigns.v1: {e}"))?;
    catalog.apply(&key, Some(d.clone()));
    Ok(d)
}

/// Writes a tombstone of `key` and applies it.
async fn remove(producer: &FutureProducer, catalog: &Catalog, key: &str) -> anyhow::Result<()> {
    producer
        .send(FutureRecord::<str, [u8]>::to(Topic::Campaigns.name()).key(key), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("removing {key} from zmp.campaigns.v1: {e}"))?;
    catalog.apply(key, None);
    Ok(())
}

/// Makes the seed (app `*`) what the config says: a campaign new or changed in the file gets a
/// new version; one the file no longer has is removed (an app's own definitions stay). Returns
/// how many records it wrote. Two members seeding at once write the same versions.
pub async fn seed(kafka: &Kafka, catalog: &Catalog, kind: &str, seeds: &[(String, Value)], source: &str) -> anyhow::Result<usize> {
    let producer: FutureProducer = kafka.producer_config().create().context("creating the definitions' producer")?;
    let mut written = 0;
    let now = schemas::time::now_ms();
    for (name, value) in seeds {
        let definition = value.to_string();
        let old = catalog.own(Definition::SEED_APP, kind, name);
        if old.as_ref().is_some_and(|o| o.definition == definition) {
            continue;
        }
        let d = Definition {
            app_id: Definition::SEED_APP.into(),
            kind: kind.into(),
            name: name.clone(),
            version: catalog.highest(Definition::SEED_APP, kind, name) + 1,
            paused: false,
            definition,
            updated_at: now,
            updated_by: format!("seed:{source}"),
        };
        write(&producer, catalog, d).await?;
        written += 1;
    }
    for d in catalog.effective(Definition::SEED_APP, kind).into_iter().filter(|d| d.app_id == Definition::SEED_APP) {
        if !seeds.iter().any(|(n, _)| *n == d.name) {
            remove(&producer, catalog, &d.key()).await?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(app: &str, name: &str, version: i64, paused: bool, text: &str) -> Definition {
        Definition {
            app_id: app.into(),
            kind: CAMPAIGN.into(),
            name: name.into(),
            version,
            paused,
            definition: json!({"name": name, "trigger": "oa_followed", "channel": "oa_consultation", "text": text}).to_string(),
            updated_at: 1,
            updated_by: "t".into(),
        }
    }

    #[test]
    fn an_apps_own_definition_overrides_the_seed_and_every_version_stays_known() {
        let c = Catalog::default();
        for d in
            [def("*", "thanks", 1, false, "seed"), def("shop", "thanks", 1, false, "mine v1"), def("shop", "thanks", 2, false, "mine v2")]
        {
            c.apply(&d.key(), Some(d.clone()));
        }
        let live = c.campaign("shop", "thanks").unwrap();
        assert_eq!((live.version(), live.campaign.primary.text.as_deref()), (2, Some("mine v2")));
        assert_eq!(c.campaign("other", "thanks").unwrap().campaign.primary.text.as_deref(), Some("seed"));
        assert_eq!(c.campaign_version("shop", "thanks", 1).unwrap().primary.text.as_deref(), Some("mine v1"));
        assert_eq!(c.for_trigger("shop", Trigger::OaFollowed).len(), 1);
        // Paused: no new entries for that app; the seed still runs for the others.
        let p = def("shop", "thanks", 3, true, "mine v2");
        c.apply(&p.key(), Some(p));
        assert!(c.for_trigger("shop", Trigger::OaFollowed).is_empty());
        assert_eq!(c.for_trigger("other", Trigger::OaFollowed).len(), 1);
        // The app's own removed: the seed is back for it.
        c.apply("shop/campaign/thanks", None);
        assert_eq!(c.for_trigger("shop", Trigger::OaFollowed)[0].campaign.primary.text.as_deref(), Some("seed"));
    }

    #[test]
    fn a_record_that_does_not_check_is_left_out() {
        let c = Catalog::default();
        let mut d = def("shop", "bad", 1, false, "x");
        d.definition = json!({"name": "bad", "trigger": "lunch", "channel": "zns"}).to_string();
        c.apply(&d.key(), Some(d));
        assert!(c.campaign("shop", "bad").is_none());
        assert!(!c.any_for_trigger(Trigger::OaFollowed));
    }
}
