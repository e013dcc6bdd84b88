//! The gateway's view of who consented to what, so `identify` can be refused when the user has
//! not agreed to the purpose its data needs.
//!
//! Every gateway reads `zmp.consents.v1` from the start — compacted and never expiring, so a
//! consent given a year ago still counts after a restart, whatever the input topics' retention —
//! and keeps the latest decision per (app, user id, purpose). The gateways write it: each
//! accepted `consent_changed` goes to `zmp.identities.v1` and, under each user id it counts for,
//! to `zmp.consents.v1` (key `app/user id/purpose`); an erasure's tombstones there (written by
//! the processors) remove the user's decisions. A decision a gateway accepted itself is applied
//! as soon as Kafka acknowledged it. A consent sent through another gateway counts once that
//! gateway's write has been read here, usually within milliseconds; a consent in the same batch
//! always counts. Records this gateway wrote carry its origin header and are not decoded again
//! when read back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use schemas::event::{IdentityEvent, IdentityType, Trust};
use schemas::kafka::Kafka;
use schemas::topics::Topic;

use crate::metrics::METRICS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    granted: bool,
    at: i64,
}

/// A consent decision: the user's ids, the purpose, granted or revoked, and when (corrected time).
#[derive(Debug, Clone, Copy)]
pub struct ConsentDecision<'s> {
    pub ids: [Option<&'s str>; 2],
    pub purpose: &'s str,
    pub granted: bool,
    pub at: i64,
}

/// A user's decisions by purpose: a handful at most, so a list, not a map.
type UserConsents = Vec<(Box<str>, Decision)>;

/// Keys come from clients, so the hasher is seeded; foldhash is several times faster than SipHash
/// on short keys, and every consent and identify a gateway takes looks here.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The header naming the gateway process that wrote a consent record.
pub const ORIGIN_HEADER: &str = "zcdp-origin";

/// The headers a consent record written by the gateway `origin` carries.
pub fn origin_headers(origin: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header { key: ORIGIN_HEADER, value: Some(origin) })
}

pub struct ConsentView {
    /// Keyed by app and user id, joined by a unit separator (looked up without allocating).
    users: RwLock<FastMap<String, UserConsents>>,
    caught_up: AtomicBool,
    /// This process's origin header value.
    pub origin: String,
}

impl Default for ConsentView {
    fn default() -> Self {
        ConsentView { users: RwLock::default(), caught_up: AtomicBool::new(false), origin: uuid::Uuid::new_v4().to_string() }
    }
}

fn user_key(buf: &mut String, app: &str, id: &str) {
    buf.clear();
    buf.push_str(app);
    buf.push('\u{1f}');
    buf.push_str(id);
}

impl ConsentView {
    /// Applies a record of `zmp.consents.v1`: a decision for the one user id its key names, or,
    /// for a tombstone (an erasure), the removal of that id's decision for the purpose.
    pub fn apply_record(&self, key: &str, event: Option<&IdentityEvent>) {
        let Some((app, id, purpose)) = schemas::topics::split_consent_key(key) else { return };
        match event {
            Some(e) => {
                let Some(granted) = e.properties.granted else { return };
                self.apply_all(app, &[ConsentDecision { ids: [Some(id), None], purpose, granted, at: e.corrected_time }]);
            }
            None => {
                let mut k = String::new();
                user_key(&mut k, app, id);
                let mut users = self.users.write().expect("consent lock");
                if let Some(entry) = users.get_mut(k.as_str()) {
                    entry.retain(|(p, _)| **p != *purpose);
                    if entry.is_empty() {
                        users.remove(k.as_str());
                    }
                }
                METRICS.consent_users.set(users.len() as i64);
            }
        }
    }

    /// Whether a decision for `id` and `purpose` later than `at` is known.
    pub fn decided_after(&self, app: &str, id: &str, purpose: &str, at: i64) -> bool {
        let mut key = String::with_capacity(64);
        user_key(&mut key, app, id);
        let users = self.users.read().expect("consent lock");
        users.get(key.as_str()).and_then(|c| c.iter().find(|(p, _)| **p == *purpose)).is_some_and(|(_, d)| d.at > at)
    }

    /// Applies the consent decisions of app `app` under one lock (those of a batch once Kafka has
    /// them).
    pub fn apply_all(&self, app: &str, decisions: &[ConsentDecision<'_>]) {
        let mut key = String::new();
        let mut users = self.users.write().expect("consent lock");
        for d in decisions {
            let decision = Decision { granted: d.granted, at: d.at };
            // Record under every id the event names, so a consent given while anonymous still
            // counts once the user logs in with the same device id.
            for id in d.ids.into_iter().flatten() {
                user_key(&mut key, app, id);
                let entry = match users.get_mut(key.as_str()) {
                    Some(e) => e,
                    None => users.entry(key.clone()).or_default(),
                };
                match entry.iter_mut().find(|(p, _)| **p == *d.purpose) {
                    Some((_, known)) if known.at > decision.at => {}
                    Some((_, known)) => *known = decision,
                    None => entry.push((d.purpose.into(), decision)),
                }
            }
        }
        METRICS.consent_users.set(users.len() as i64);
    }

    /// Whether any of `ids` of the user has granted `purpose` and not revoked it since.
    pub fn granted(&self, app: &str, ids: &[&str], purpose: &str) -> bool {
        let mut key = String::with_capacity(64);
        let users = self.users.read().expect("consent lock");
        let latest = ids
            .iter()
            .filter_map(|id| {
                user_key(&mut key, app, id);
                users.get(key.as_str())
            })
            .filter_map(|c| c.iter().find(|(p, _)| **p == *purpose).map(|(_, d)| d))
            .max_by_key(|d| d.at);
        latest.is_some_and(|d| d.granted)
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Reads `zmp.consents.v1` from the beginning, forever. Marks the view caught up once it has
    /// read everything that was in the topic when it started.
    pub async fn follow(self: Arc<Self>, kafka: Kafka) -> anyhow::Result<()> {
        let mut tail = kafka.tail(&[Topic::Consents.name()], "ingest-consent")?;
        if tail.caught_up() {
            // Nothing kept yet: a new deployment, or one upgraded from a version that kept
            // consents only in zmp.identities.v1. What that topic still holds is carried over
            // (the tail reads it back); until then the gateway is not ready.
            let carried = carry_over(&kafka).await?;
            if carried > 0 {
                tracing::info!(carried, "consent decisions carried over from zmp.identities.v1 to zmp.consents.v1");
                tail = kafka.tail(&[Topic::Consents.name()], "ingest-consent")?;
            }
        }
        if tail.caught_up() {
            self.caught_up.store(true, Ordering::Release);
        }
        loop {
            let Some(msg) = tail.next(Duration::from_secs(1)).await else { continue };
            // This gateway's own decisions were applied when Kafka acknowledged them.
            let own = msg.headers().is_some_and(|h| h.iter().any(|x| x.key == ORIGIN_HEADER && x.value == Some(self.origin.as_bytes())));
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default();
            match msg.payload() {
                _ if own => {}
                None => self.apply_record(key, None),
                Some(payload) => match schemas::codec::decode::<IdentityEvent>(payload) {
                    Ok(ev) if ev.kind == IdentityType::ConsentChanged => self.apply_record(key, Some(&ev)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, partition = msg.partition(), offset = msg.offset(), "consent view: undecodable record skipped")
                    }
                },
            }
            let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
            drop(msg);
            if tail.saw(&topic, partition, offset) {
                tracing::info!("consent view caught up");
                self.caught_up.store(true, Ordering::Release);
            }
        }
    }
}

/// Writes the latest consent decision per (app, user id, purpose) that `zmp.identities.v1` holds
/// to `zmp.consents.v1`; how many.
async fn carry_over(kafka: &Kafka) -> anyhow::Result<usize> {
    let mut tail = kafka.tail(&[Topic::Identities.name()], "ingest-consent-carry-over")?;
    let mut latest: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
    // Erasures seen: (app, user key) → when. Decisions made before one are not carried over.
    let mut erased: HashMap<(String, String), i64> = HashMap::new();
    while !tail.caught_up() {
        let Some(msg) = tail.next(Duration::from_secs(1)).await else { continue };
        let wanted = |i: u32| i == IdentityType::ConsentChanged as u32 || i == IdentityType::UserForgotten as u32;
        if let Some(payload) = msg.payload()
            && schemas::codec::peek_type_index(payload).is_none_or(wanted)
            && let Ok(ev) = schemas::codec::decode::<IdentityEvent>(payload)
        {
            match (ev.kind, &ev.properties.purpose) {
                (IdentityType::UserForgotten, _) => {
                    let at = erased.entry((ev.app_id.clone(), ev.user.key.clone())).or_insert(ev.corrected_time);
                    *at = (*at).max(ev.corrected_time);
                }
                (IdentityType::ConsentChanged, Some(purpose)) => {
                    // As the gateway keeps them: under a session, not under the anonymous id.
                    let anonymous = if ev.trust == Trust::Session { None } else { ev.user.anonymous_id.as_deref() };
                    for id in [ev.user.zalo_id.as_deref(), anonymous].into_iter().flatten() {
                        let key = schemas::topics::consent_key(&ev.app_id, id, purpose);
                        if latest.get(&key).is_none_or(|(at, _)| *at <= ev.corrected_time) {
                            latest.insert(key, (ev.corrected_time, payload.to_vec()));
                        }
                    }
                }
                _ => {}
            }
        }
        let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
        drop(msg);
        tail.saw(&topic, partition, offset);
    }
    latest.retain(|key, (at, _)| {
        let Some((app, id, _)) = schemas::topics::split_consent_key(key) else { return false };
        erased.get(&(app.to_string(), id.to_string())).is_none_or(|forgotten| *at > *forgotten)
    });
    let producer: rdkafka::producer::FutureProducer = kafka.producer_config().create()?;
    let sends = latest.iter().map(|(key, (_, payload))| {
        producer.send(rdkafka::producer::FutureRecord::to(Topic::Consents.name()).key(key).payload(payload), Duration::from_secs(30))
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| anyhow::anyhow!("carrying consents over to zmp.consents.v1: {e}"))?;
    }
    Ok(latest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::event::*;

    fn consent(user: &str, purpose: &str, granted: bool, at: i64) -> IdentityEvent {
        let InputEvent::Identity(mut e) =
            schemas::testing::sample_events().into_iter().find(|e| e.type_name() == "consent_changed").unwrap()
        else {
            unreachable!()
        };
        e.user = User { key: user.into(), zalo_id: Some(user.into()), anonymous_id: None, oa_user_id: None };
        e.properties.purpose = Some(purpose.into());
        e.properties.granted = Some(granted);
        e.corrected_time = at;
        e
    }

    #[test]
    fn latest_decision_wins_whatever_the_arrival_order() {
        let v = ConsentView::default();
        v.apply_record("demo/u1/phone", Some(&consent("u1", "phone", true, 10)));
        assert!(v.granted("demo", &["u1"], "phone"));
        assert!(!v.granted("demo", &["u1"], "profile"));
        assert!(!v.granted("other-app", &["u1"], "phone"));
        v.apply_record("demo/u1/phone", Some(&consent("u1", "phone", false, 20)));
        assert!(!v.granted("demo", &["u1"], "phone"));
        // A late-arriving older grant does not undo the revoke.
        v.apply_record("demo/u1/phone", Some(&consent("u1", "phone", true, 15)));
        assert!(!v.granted("demo", &["u1"], "phone"));
    }

    /// Records of `zmp.consents.v1` count for the id their key names; a tombstone (an erasure)
    /// removes that decision, and only that one.
    #[test]
    fn consent_records_apply_by_key_and_tombstones_remove_them() {
        let v = ConsentView::default();
        v.apply_record("demo/u1/phone", Some(&consent("someone-else", "phone", true, 10)));
        v.apply_record("demo/u1/profile", Some(&consent("someone-else", "profile", true, 10)));
        v.apply_record("other/u1/phone", Some(&consent("u1", "phone", true, 10)));
        assert!(v.granted("demo", &["u1"], "phone") && v.granted("demo", &["u1"], "profile"));
        assert!(!v.granted("demo", &["someone-else"], "phone"), "the key names the user, not the event");
        assert!(v.decided_after("demo", "u1", "phone", 9) && !v.decided_after("demo", "u1", "phone", 10));
        v.apply_record("demo/u1/phone", None);
        assert!(!v.granted("demo", &["u1"], "phone"));
        assert!(v.granted("demo", &["u1"], "profile"));
        assert!(v.granted("other", &["u1"], "phone"), "another app's decision is untouched");
    }
}
