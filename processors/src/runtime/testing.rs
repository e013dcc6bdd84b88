//! Helpers for tests of the runtime (here and in the end-to-end tests of the binary): a shop
//! history on every partition, how far a group has committed, and a run's outputs reduced to
//! what their consumers rely on.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use schemas::codec::Record;
use schemas::derived::{AudienceChange, CartTrigger, Profile, Session, UserInterests};
use schemas::event::InputEvent;
use schemas::kafka::Kafka;
use schemas::testing::build::{page, shop_history};
use schemas::testing::{eventually_explained, produce, produce_to_partition, read_to_end};

use super::task::INPUTS;
use super::{Member, Topology};

/// Every record of `R`'s topic, with its key.
pub async fn read<R: Record>(kafka: &Kafka) -> Vec<(String, R)> {
    let kafka = kafka.clone();
    let msgs = tokio::task::spawn_blocking(move || read_to_end(&kafka, R::TOPIC.name(), Duration::from_secs(30)))
        .await
        .expect("reader thread")
        .expect("read topic");
    msgs.iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                schemas::codec::decode::<R>(m.payload().unwrap_or_default()).expect("decodable output"),
            )
        })
        .collect()
}

/// (committed, end) offsets of a group, summed over every input partition.
pub async fn progress(kafka: &Kafka, group: &str) -> (i64, i64) {
    totals(&progress_by_partition(kafka, group).await)
}

/// (committed, end) summed over partitions.
fn totals(parts: &[PartitionProgress]) -> (i64, i64) {
    parts.iter().fold((0, 0), |(d, e), p| (d + p.committed.unwrap_or(0), e + p.end))
}

/// How far a group has committed one input partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub topic: &'static str,
    pub partition: i32,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
    /// The high watermark.
    pub end: i64,
}

/// The group's committed offset and the end of every input partition.
pub async fn progress_by_partition(kafka: &Kafka, group: &str) -> Vec<PartitionProgress> {
    let (kafka, group) = (kafka.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = kafka.client_config().set("group.id", &group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for t in INPUTS {
            for p in 0..kafka.partitions {
                tpl.add_partition(t.name(), p);
            }
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        let mut out = Vec::new();
        for e in committed.elements() {
            let (_, high) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10)).expect("watermarks");
            let topic = INPUTS.iter().find(|t| t.name() == e.topic()).expect("an input topic").name();
            let committed = if let Offset::Offset(o) = e.offset() { Some(o) } else { None };
            out.push(PartitionProgress { topic, partition: e.partition(), committed, end: high });
        }
        out
    })
    .await
    .expect("progress thread")
}

/// Waits until the group has committed at least `fraction` of the input. On time-out, the
/// panic names the partitions that are behind.
pub async fn wait_progress(kafka: &Kafka, group: &str, fraction: f64, within: Duration) {
    let what = format!("{:.0}% of the input processed and committed by {group}", fraction * 100.0);
    eventually_explained(within, &what, || async {
        let parts = progress_by_partition(kafka, group).await;
        let (done, end) = totals(&parts);
        if end > 0 && done as f64 >= end as f64 * fraction {
            return Ok(());
        }
        let behind: Vec<String> = parts
            .iter()
            .filter(|p| p.committed.unwrap_or(0) < p.end)
            .map(|p| format!("{}/{} committed {:?} of {}", p.topic, p.partition, p.committed, p.end))
            .collect();
        Err(format!("{done} of {end}; behind: {}", behind.join(", ")))
    })
    .await;
}

/// Runs `history` through one member that nothing interrupts, phase after phase, and returns
/// its outputs: what every other schedule must reproduce.
pub async fn reference_run(kafka: &Kafka, history: &History, args: &crate::ProcessArgs, topology: Topology) -> Outputs {
    let member = Member::start(kafka, args, topology, None).await.expect("start reference member");
    let group = format!("zcdp-{}", args.application_id);
    for phase in 0..history.phases.len() {
        history.produce(kafka, phase).await;
        wait_progress(kafka, &group, 1.0, Duration::from_secs(300)).await;
    }
    history.finish(kafka).await;
    wait_progress(kafka, &group, 1.0, Duration::from_secs(300)).await;
    tokio::task::spawn_blocking(move || member.stop()).await.expect("stop thread").expect("stop reference member");
    outputs(kafka).await
}

/// A shop history written in phases, so a test can change the cluster (members joining,
/// leaving, killed) between them, while a reference run sees the same schedule. Runs compared
/// record for record should keep timers to event time (a long `--timer-grace`): the wall clock
/// would fire them at moments that depend on when fetches return.
pub struct History {
    phases: Vec<Vec<InputEvent>>,
}

impl History {
    /// `users` users' history, cut in `phases` parts of consecutive time.
    pub fn new(users: usize, phases: usize) -> History {
        let all = shop_history(users, 7, 1_767_225_600_000);
        let per = all.len().div_ceil(phases.max(1));
        History { phases: all.chunks(per).map(<[InputEvent]>::to_vec).collect() }
    }

    pub fn len(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn produce(&self, kafka: &Kafka, phase: usize) {
        produce(kafka, &self.phases[phase]).await.expect("produce phase");
    }

    /// One page view a day after the end on every partition: every deadline passes in event time.
    pub async fn finish(&self, kafka: &Kafka) {
        let end = self.phases.iter().flatten().map(InputEvent::time).max().unwrap_or(0) + 24 * 3600 * 1000;
        for p in 0..kafka.partitions {
            produce_to_partition(kafka, &page(&format!("zz-sentinel-{p}"), end), p).await.expect("produce sentinel");
        }
    }
}

/// A run's outputs as their consumers see them: every distinct session and trigger (a
/// duplicate after a failure has the same id and the same content), the latest interests and
/// profile of each user, the latest audience record of each segment and user. The sentinels of [`History::finish`] are left out.
#[derive(Debug, PartialEq)]
pub struct Outputs {
    pub sessions: BTreeMap<String, Session>,
    pub triggers: BTreeMap<String, CartTrigger>,
    pub interests: BTreeMap<String, UserInterests>,
    pub profiles: BTreeMap<String, Profile>,
    pub audiences: BTreeMap<String, AudienceChange>,
}

pub async fn outputs(kafka: &Kafka) -> Outputs {
    let real = |k: &str| !k.starts_with("zz-sentinel");
    let mut sessions = BTreeMap::new();
    for (_, s) in read::<Session>(kafka).await.into_iter().filter(|(k, _)| real(k)) {
        if let Some(old) = sessions.insert(s.session_id.clone(), s.clone()) {
            assert_eq!(old, s, "two different sessions with one id");
        }
    }
    let mut triggers = BTreeMap::new();
    for (_, t) in read::<CartTrigger>(kafka).await.into_iter().filter(|(k, _)| real(k)) {
        if let Some(old) = triggers.insert(t.trigger_id.clone(), t.clone()) {
            assert_eq!(old, t, "two different triggers with one id");
        }
    }
    let mut interests = BTreeMap::new();
    for (k, i) in read::<UserInterests>(kafka).await.into_iter().filter(|(_, i)| real(&i.user_key)) {
        interests.insert(k, i);
    }
    let mut profiles = BTreeMap::new();
    for (k, p) in read::<Profile>(kafka).await.into_iter().filter(|(_, p)| real(&p.user_key)) {
        profiles.insert(k, p);
    }
    let mut audiences = BTreeMap::new();
    for (k, a) in read::<AudienceChange>(kafka).await.into_iter().filter(|(_, a)| real(&a.user_key)) {
        audiences.insert(k, a);
    }
    Outputs { sessions, triggers, interests, profiles, audiences }
}

impl Outputs {
    /// The first differences between two runs' outputs, for a failure message.
    pub fn difference(&self, other: &Outputs) -> String {
        fn side<V: std::fmt::Debug>(name: &str, a: &BTreeMap<String, V>, b: &BTreeMap<String, V>, out: &mut Vec<String>) {
            let only_a: Vec<_> = a.iter().filter(|(k, _)| !b.contains_key(*k)).take(3).collect();
            let only_b: Vec<_> = b.iter().filter(|(k, _)| !a.contains_key(*k)).take(3).collect();
            let changed: Vec<_> = a
                .iter()
                .filter_map(|(k, v)| b.get(k).filter(|w| format!("{v:?}") != format!("{w:?}")).map(|w| (k, v, w)))
                .take(2)
                .collect();
            if !only_a.is_empty() || !only_b.is_empty() || !changed.is_empty() {
                out.push(format!("{name}: {} vs {}; only left {only_a:?}; only right {only_b:?}; changed {changed:?}", a.len(), b.len()));
            }
        }
        let mut out = Vec::new();
        side("sessions", &self.sessions, &other.sessions, &mut out);
        side("triggers", &self.triggers, &other.triggers, &mut out);
        side("interests", &self.interests, &other.interests, &mut out);
        side("profiles", &self.profiles, &other.profiles, &mut out);
        side("audiences", &self.audiences, &other.audiences, &mut out);
        out.join("\n")
    }
}
