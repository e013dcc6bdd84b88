//! Helpers for tests of the runtime (here and in the end-to-end tests of the binary): a shop
//! history on every partition, how far a group has committed, and a run's outputs reduced to
//! what their consumers rely on.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use schemas::codec::Record;
use schemas::derived::{CartTrigger, Session, UserInterests};
use schemas::event::InputEvent;
use schemas::kafka::Kafka;
use schemas::testing::build::{page, shop_history};
use schemas::testing::{eventually, produce, produce_to_partition, read_to_end};

use crate::task::INPUTS;

/// Every record of `R`'s topic, with its key.
pub async fn read<R: Record>(kafka: &Kafka) -> Vec<(String, R)> {
    let kafka = kafka.clone();
    let msgs = tokio::task::spawn_blocking(move || read_to_end(&kafka, R::TOPIC.name(), Duration::from_secs(30)))
        .await
        .expect("reader thread")
        .expect("read topic");
    msgs.iter()
        .map(|m| (String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(), schemas::codec::decode::<R>(m.payload().unwrap_or_default()).expect("decodable output")))
        .collect()
}

/// (committed, end) offsets of a group, summed over every input partition.
pub async fn progress(kafka: &Kafka, group: &str) -> (i64, i64) {
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
        let (mut done, mut end) = (0, 0);
        for e in committed.elements() {
            let (_, high) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10)).expect("watermarks");
            end += high;
            if let Offset::Offset(o) = e.offset() {
                done += o;
            }
        }
        (done, end)
    })
    .await
    .expect("progress thread")
}

/// Waits until the group has committed at least `fraction` of the input.
pub async fn wait_progress(kafka: &Kafka, group: &str, fraction: f64, within: Duration) {
    eventually(within, &format!("{:.0}% of the input processed and committed", fraction * 100.0), || async {
        let (done, end) = progress(kafka, group).await;
        (end > 0 && done as f64 >= end as f64 * fraction).then_some(())
    })
    .await;
}

/// A shop history of `users` users from 2026-01-01, then one page view a day after its end on
/// every partition, so every session and cart deadline passes in event time.
pub async fn load_history(kafka: &Kafka, users: usize) -> Vec<InputEvent> {
    let history = shop_history(users, 7, 1_767_225_600_000);
    produce(kafka, &history).await.expect("produce history");
    let end = history.last().map(InputEvent::time).unwrap_or(0) + 24 * 3600 * 1000;
    for p in 0..kafka.partitions {
        produce_to_partition(kafka, &page(&format!("zz-sentinel-{p}"), end), p).await.expect("produce sentinel");
    }
    history
}

/// A run's outputs as their consumers see them: every distinct session and trigger (a
/// duplicate after a failure has the same id and the same content), the latest interests of
/// each user. The sentinels of [`load_history`] are left out.
#[derive(Debug, PartialEq)]
pub struct Outputs {
    pub sessions: BTreeMap<String, Session>,
    pub triggers: BTreeMap<String, CartTrigger>,
    pub interests: BTreeMap<String, UserInterests>,
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
    for (k, i) in read::<UserInterests>(kafka).await.into_iter().filter(|(k, _)| real(k)) {
        interests.insert(k, i);
    }
    Outputs { sessions, triggers, interests }
}
