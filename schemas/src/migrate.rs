//! `zcdp topics migrate-keys`: moves the records a version before app-keyed topics wrote to
//! `zmp.profiles.v1`, `zmp.interests.v1` (key = user) and `zmp.audiences.v1` (key =
//! `segment/user`) to the keys that hold the app (`app/user`, `app/segment/user`), on the same
//! partition, and deletes the old keys. Readers take a record only under its own app's key, so
//! until this has run they do not see those records.
//!
//! Per partition and key, only the latest record counts (as compaction keeps it). An old-key
//! record is copied to its new key unless the new key already has a record or a tombstone (a
//! newer profile, or an erasure: never undone); then its old key gets a tombstone. A key that
//! happens to be both (a user key holding `/`) is decided by its latest record's contents, so a
//! record already under its own app's key is never deleted. Running it twice changes nothing.
//! Run it with the processors and sinks stopped: a record they write between the read and the
//! copy could be overtaken by the older one.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::derived::{AudienceChange, Profile, UserInterests};
use crate::kafka::Kafka;
use crate::topics::{Topic, app_user_key};

/// What one topic's migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub topic: Topic,
    /// Old-key records copied to their new key.
    pub moved: usize,
    /// Old keys deleted (tombstones written), moved or not.
    pub deleted: usize,
}

/// The key a record's contents say it belongs under now.
fn own_key(topic: Topic, payload: &[u8]) -> anyhow::Result<String> {
    Ok(match topic {
        Topic::Profiles => {
            let p = crate::codec::decode::<Profile>(payload)?;
            app_user_key(&p.app_id, &p.user_key)
        }
        Topic::Interests => {
            let i = crate::codec::decode::<UserInterests>(payload)?;
            app_user_key(&i.app_id, &i.user_key)
        }
        Topic::Audiences => crate::codec::decode::<AudienceChange>(payload)?.key(),
        other => anyhow::bail!("{other} has no app keys to migrate"),
    })
}

/// Migrates the three topics; see the module's doc.
pub async fn migrate_app_keys(kafka: &Kafka) -> anyhow::Result<Vec<Migrated>> {
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut out = Vec::new();
    for topic in [Topic::Profiles, Topic::Interests, Topic::Audiences] {
        let reader = kafka.clone();
        let records = tokio::task::spawn_blocking(move || reader.read_to_end(topic.name(), Duration::from_secs(300))).await??;
        // (partition, key) → the latest payload (None: a tombstone), in the topic's order.
        let mut latest: HashMap<(i32, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        for m in &records {
            latest.insert((m.partition(), m.key().unwrap_or_default().to_vec()), m.payload().map(<[u8]>::to_vec));
        }
        let mut done = Migrated { topic, moved: 0, deleted: 0 };
        let mut entries: Vec<(&(i32, Vec<u8>), &Option<Vec<u8>>)> = latest.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for ((partition, key), value) in entries {
            let Some(payload) = value else { continue };
            let own = own_key(topic, payload)?;
            if own.as_bytes() == key.as_slice() {
                continue;
            }
            if !latest.contains_key(&(*partition, own.as_bytes().to_vec())) {
                let record = FutureRecord::to(topic.name()).partition(*partition).key(own.as_bytes()).payload(payload);
                producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
                done.moved += 1;
            }
            let tombstone = FutureRecord::<[u8], [u8]>::to(topic.name()).partition(*partition).key(key.as_slice());
            producer.send(tombstone, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
            done.deleted += 1;
        }
        out.push(done);
    }
    Ok(out)
}
