//! Accepting a request's events: who vouches for each (and what a client may therefore say),
//! duplicate ids inside the request, the consent each event needs, accepted events to their
//! topics and rejected ones to the dead-letter topic, and the wait until Kafka has all of them. Called by every endpoint that takes events (`http`, for
//! the Mini App's batches; `zalo_hooks`, for what Zalo posts and the phone exchange); it knows
//! nothing of HTTP.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use schemas::event::{DeadLetter, IdentityType, Trust};

/// The anonymous-id prefix of users Zalo's webhooks name only by their OA id (`zalo_hooks`).
pub const OA_ANONYMOUS_PREFIX: &str = "oa:";
use schemas::topics::{Topic, consent_key};

use crate::Gateway;
use crate::consent::{ConsentDecision, origin_headers};
use crate::metrics::METRICS;
use crate::validate::{Checked, Encoded, Events, Receipt, RejectCode, Rejection, Times};
use crate::writer::{Pending, WriteError};

/// Why the events of a request could not be made safe: nothing in it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("encoding a dead letter: {0}")]
    Encode(String),
}

/// Who vouches for a request's events: the model of docs/security.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouch {
    /// A client with the public write key, no session: what it saw, not who it is.
    Client,
    /// A client with the write key under a Zalo-verified session of this user (zalo_id).
    Session(String),
    /// The shop's server: a secret or admin key.
    Server,
    /// Zalo: a signed webhook, or the Graph phone exchange.
    Zalo,
}

impl Vouch {
    /// The event's `trust`, or why a client may not send it. A client may describe what it
    /// sees; only Zalo or the shop's server say who a user is, which phone is theirs, and which
    /// OA follower they are.
    pub fn judge(&self, e: &Encoded, parts: &[u8]) -> Result<Trust, Rejection> {
        let trust = match self {
            Vouch::Server => return Ok(Trust::Server),
            Vouch::Zalo => return Ok(Trust::Zalo),
            Vouch::Client => Trust::Unverified,
            Vouch::Session(user) => match e.zalo_id(parts) {
                Some(id) if id == user => Trust::Session,
                Some(_) => {
                    return Err(Rejection::new(
                        RejectCode::IdentityMismatch,
                        "the event names another user than the session's: a session speaks for its own user only",
                    ));
                }
                // Not naming the user: anonymous analytics, as without a session.
                None => Trust::Unverified,
            },
        };
        if e.needs_consent.phone() {
            return Err(Rejection::new(
                RejectCode::PhoneNotVerified,
                "a phone comes from Zalo's phone exchange (POST /v1/users/phone, under the user's session) or the shop's server (secret key), not from an event",
            ));
        }
        // `oa:<id>` keys the users Zalo's webhooks name only by their OA id: Zalo's namespace.
        if e.user_ids(parts)[1].is_some_and(|a| a.starts_with(OA_ANONYMOUS_PREFIX)) {
            return Err(Rejection::new(
                RejectCode::ZaloOnly,
                "anonymous ids starting with oa: are the OA followers Zalo's webhooks name; a client may not use them",
            ));
        }
        match e.identity {
            Some(IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted) => Err(Rejection::new(
                RejectCode::ZaloOnly,
                "OA follows and interactions come from Zalo's signed webhook (or the shop's server), not from the Mini App",
            )),
            // Identify and consent are statements about a person: the person's own session, naming
            // them. (A user key is a Zalo id or an anonymous id, one namespace: an anonymous id
            // could name anyone's profile, so "anonymous" identify and consent are not taken.)
            Some(IdentityType::Identify | IdentityType::ConsentChanged) if trust != Trust::Session => Err(Rejection::new(
                RejectCode::SessionRequired,
                "identify and consent need the user's session (X-Zcdp-Session from POST /v1/session) and its user.zalo_id, or the shop's server (secret key)",
            )),
            _ => Ok(trust),
        }
    }
}

pub struct Outcome {
    pub accepted: usize,
    pub rejected: Vec<(usize, Option<String>, Rejection)>,
}

impl Outcome {
    pub fn body(&self) -> Value {
        let rejected: Vec<Value> = self
            .rejected
            .iter()
            .map(|(i, id, r)| json!({"index": i, "event_id": id, "code": r.code.as_str(), "reason": r.message}))
            .collect();
        json!({"accepted": self.accepted, "rejected": rejected})
    }
}

/// Validates, checks consent, writes accepted events to their topics and rejected ones to the
/// dead-letter topic, and waits until Kafka has all of them.
///
/// One pass: each event is validated, encoded and handed to the producer while it is still in
/// the cache, and dropped. Only events whose data needs a consent wait until the whole batch has
/// been seen (a consent later in the same batch counts for them); they are written after the
/// others.
pub async fn ingest(gw: &Gateway, receipt: &Receipt<'_>, events: Events<'_>, source: &str, vouch: &Vouch) -> Result<Outcome, AcceptError> {
    let total = events.len();
    let Events { buf: parts, checked, .. } = events;
    let mut w = BatchWriter {
        gw,
        receipt,
        source,
        pending: Pending::default(),
        buf: Vec::with_capacity(1024),
        accepted_by_topic: [0; Topic::INPUTS.len()],
        outcome: Outcome { accepted: 0, rejected: Vec::new() },
        consents: HashMap::new(),
    };
    // Duplicated ids inside one batch: the first one counts. Ids are canonical UUIDs by now.
    let mut seen: HashSet<u128, foldhash::fast::RandomState> = HashSet::with_capacity_and_hasher(total, Default::default());
    let mut consents: Vec<ConsentDecision<'_>> = Vec::new();
    let mut waiting: Vec<(usize, &str, Encoded, Times, Trust)> = Vec::new();
    for (i, c) in checked.into_iter().enumerate() {
        let (raw, e) = match c {
            Checked::Accepted(raw, e) => (raw, e),
            Checked::Rejected(raw, why) => {
                w.reject(i, raw, why)?;
                continue;
            }
        };
        if !seen.insert(e.id) {
            w.reject(i, raw, Rejection::new(RejectCode::DuplicateEventId, "the same event_id appears earlier in this batch"))?;
            continue;
        }
        let trust = match vouch.judge(&e, &parts) {
            Ok(t) => t,
            Err(why) => {
                w.reject(i, raw, why)?;
                continue;
            }
        };
        let times = e.times(receipt.sent_at, receipt.received_at);
        if !e.needs_consent.is_empty() {
            waiting.push((i, raw, e, times, trust));
            continue;
        }
        w.accept(&e, &parts, &times, trust)?;
        if let Some((purpose, granted)) = e.consent {
            // Under a session, the decision is the session user's alone: not recorded under an
            // anonymous id the event also names, which could be anyone's key.
            let mut ids = e.user_ids(&parts);
            if trust == Trust::Session {
                ids[1] = None;
            }
            w.keep_consent(ids, purpose, times.corrected);
            consents.push(ConsentDecision { ids, purpose, granted, at: times.corrected });
        }
    }

    if !waiting.is_empty() {
        // Consent decisions in this batch: the latest (by corrected time) per user id and purpose.
        let mut in_batch: HashMap<(&str, &str), (bool, i64), foldhash::fast::RandomState> = HashMap::default();
        for d in &consents {
            for id in d.ids.into_iter().flatten() {
                let slot = in_batch.entry((id, d.purpose)).or_insert((d.granted, d.at));
                if d.at >= slot.1 {
                    *slot = (d.granted, d.at);
                }
            }
        }
        for (i, raw, e, times, trust) in &waiting {
            let ids: Vec<&str> = e.user_ids(&parts).into_iter().flatten().collect();
            let refused = e.needs_consent.purposes().find(|purpose| {
                let latest = ids.iter().filter_map(|id| in_batch.get(&(*id, *purpose))).max_by_key(|d| d.1);
                !match latest {
                    Some(&(granted, _)) => granted,
                    None => gw.consent.granted(receipt.app_id, &ids, purpose),
                }
            });
            match refused {
                Some(purpose) => w.reject(
                    *i,
                    raw,
                    Rejection::new(
                        RejectCode::NoConsent,
                        format!(
                            "the user has not consented to purpose {purpose:?}: send consent_changed {{purpose: {purpose:?}, granted: true}} first or in the same batch"
                        ),
                    ),
                )?,
                None => w.accept(e, &parts, times, *trust)?,
            }
        }
        w.outcome.rejected.sort_by_key(|(i, _, _)| *i);
    }

    w.keep_consents()?;
    let BatchWriter { pending, accepted_by_topic, outcome, .. } = w;
    let waited = gw.writer.wait(pending).await.inspect_err(|e| {
        tracing::warn!(app = receipt.app_id, events = total, error = %e, "batch not acknowledged");
    })?;
    METRICS.produce_seconds.observe(waited.as_secs_f64());
    gw.consent.apply_all(receipt.app_id, &consents);
    for (topic, n) in Topic::INPUTS.iter().zip(accepted_by_topic) {
        if n > 0 {
            METRICS.accepted.with_label_values(&[receipt.app_id, topic.name()]).inc_by(n);
        }
    }
    for (_, _, r) in &outcome.rejected {
        METRICS.rejected.with_label_values(&[r.code.as_str()]).inc();
    }
    tracing::debug!(app = receipt.app_id, accepted = outcome.accepted, rejected = outcome.rejected.len(), "batch stored");
    Ok(outcome)
}

/// One request's writes: records handed to the producer, counts, the answer being built.
struct BatchWriter<'g, 'r> {
    gw: &'g Gateway,
    receipt: &'r Receipt<'r>,
    source: &'r str,
    pending: Pending,
    buf: Vec<u8>,
    accepted_by_topic: [u64; Topic::INPUTS.len()],
    outcome: Outcome,
    /// The request's latest consent record per (user id, purpose), for `zmp.consents.v1`.
    consents: HashMap<(String, &'static str), (i64, Vec<u8>)>,
}

impl BatchWriter<'_, '_> {
    /// Frames an accepted event with its times and hands it to the producer.
    fn accept(&mut self, event: &Encoded, parts: &[u8], times: &Times, trust: Trust) -> Result<(), AcceptError> {
        event.frame(parts, times, trust, &mut self.buf);
        let topic = event.topic;
        let headers = event.consent.is_some().then(|| origin_headers(&self.gw.consent.origin));
        self.gw.writer.send_with_headers(
            &mut self.pending,
            topic.name(),
            event.key(parts),
            &self.buf,
            self.receipt.received_at,
            headers,
        )?;
        if let Some(n) = Topic::INPUTS.iter().position(|t| *t == topic) {
            self.accepted_by_topic[n] += 1;
        }
        self.outcome.accepted += 1;
        Ok(())
    }

    /// Notes the consent decision just accepted (its record is still in `buf`) for
    /// `zmp.consents.v1`, under each user id it counts for: the latest of the request per id and
    /// purpose ([`BatchWriter::keep_consents`] writes them).
    fn keep_consent(&mut self, ids: [Option<&str>; 2], purpose: &'static str, at: i64) {
        for id in ids.into_iter().flatten() {
            match self.consents.get_mut(&(id.to_string(), purpose)) {
                Some((known, _)) if *known > at => {}
                Some(slot) => *slot = (at, self.buf.clone()),
                None => {
                    self.consents.insert((id.to_string(), purpose), (at, self.buf.clone()));
                }
            }
        }
    }

    /// Writes the request's latest consent decisions to `zmp.consents.v1` (compacted, never
    /// expiring) — each unless this gateway already knows a later one for that id and purpose:
    /// the topic keeps the last record written per key, so an older decision written after a
    /// newer one would win there. (Two gateways deciding the same key within milliseconds may
    /// still write out of order; docs/security.md says so.)
    fn keep_consents(&mut self) -> Result<(), AcceptError> {
        let app = self.receipt.app_id;
        for ((id, purpose), (at, record)) in std::mem::take(&mut self.consents) {
            if self.gw.consent.decided_after(app, &id, purpose, at) {
                continue;
            }
            self.gw.writer.send_with_headers(
                &mut self.pending,
                Topic::Consents.name(),
                consent_key(app, &id, purpose).as_bytes(),
                &record,
                self.receipt.received_at,
                Some(origin_headers(&self.gw.consent.origin)),
            )?;
        }
        Ok(())
    }

    /// Writes a rejected event to the dead-letter topic and notes it for the answer.
    fn reject(&mut self, index: usize, raw: &str, rejection: Rejection) -> Result<(), AcceptError> {
        let letter = dead_letter(self.receipt, self.source, index, raw, &rejection);
        self.buf.clear();
        schemas::codec::encode_into(&letter, &mut self.buf).map_err(|e| AcceptError::Encode(e.to_string()))?;
        self.gw.writer.send(
            &mut self.pending,
            Topic::DeadLetter.name(),
            self.receipt.app_id.as_bytes(),
            &self.buf,
            self.receipt.received_at,
        )?;
        self.outcome.rejected.push((index, letter.event_id, rejection));
        Ok(())
    }
}

/// The dead-letter record of one rejected event, without the personal data in it
/// ([`crate::redact`]): a rejected event must not keep what the user has not agreed to.
fn dead_letter(receipt: &Receipt<'_>, source: &str, index: usize, raw: &str, r: &Rejection) -> DeadLetter {
    let event_id = crate::redact::string_member(raw.as_bytes(), "event_id");
    let event_type = crate::redact::string_member(raw.as_bytes(), "type");
    let raw_bytes = crate::redact::redact(raw.as_bytes());
    DeadLetter {
        received_at: receipt.received_at,
        source: source.into(),
        app_id: Some(receipt.app_id.into()),
        event_id,
        event_type,
        index: Some(index as i64),
        reason_code: r.code.as_str().into(),
        reason: r.message.clone(),
        raw: raw_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_identify_keeps_no_phone_or_traits() {
        let raw = r#"{"event_id":"x","type":"identify","properties":{"phone":"0987654321","traits":{"name":"Lan"}}}"#;
        let r = Receipt { app_id: "demo", received_at: 1, sent_at: None };
        let d = dead_letter(&r, "t", 0, raw, &Rejection::new(RejectCode::NoConsent, "no"));
        let text = String::from_utf8(d.raw).unwrap();
        assert!(!text.contains("0987654321") && !text.contains("Lan"), "{text}");
        assert_eq!(d.event_id.as_deref(), Some("x"));
        assert_eq!(d.event_type.as_deref(), Some("identify"));
    }
}
