//! The sink's memory of its partitions, rebuilt from `zmp.messages.v1` whenever a partition is
//! assigned, and kept current by applying each record the sink writes: per user, the profile
//! last read from `zmp.profiles.v1`, the sends of the last weeks (for quotas and the frequency
//! cap) and every message decided (dedup); per partition, the deferrals waiting for their time
//! and the profile-derived timers. Nothing here is stored elsewhere: the topic is the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use schemas::derived::{MessageEvent, MessageStatus, Profile};
use schemas::time::DAY_MS;

use crate::campaigns::ChannelName;
use crate::policy::Sent;
use crate::triggers::profile::ProfileTimer;

/// What the sink knows of one user.
#[derive(Default)]
pub struct UserState {
    pub profile: Option<Profile>,
    pub sent: Vec<Sent>,
    /// Message ids decided for good (sent, suppressed, failed, unknown) or being sent.
    pub decided: HashSet<String>,
    /// By campaign: when the user last entered it, and on which trigger (the re-entry rule).
    pub entries: HashMap<String, (i64, String)>,
    /// The segments the user is in (`zmp.audiences.v1`): a journey's `in_segment` branch.
    pub segments: HashSet<String>,
    /// Message ids decided in a way that lets the step's fallback be tried (an OA channel that
    /// cannot reach the user): a walk over the step goes on to the fallback.
    pub fell_through: HashSet<String>,
    /// A journey's branch taken, by the branch's message id: the step it went to, None for exit.
    pub gotos: HashMap<String, Option<usize>>,
    /// The campaign version a journey entered with, by `campaign \x1f trigger id`.
    pub journey_versions: HashMap<String, i64>,
}

/// The key of a journey in [`UserState::journey_versions`].
pub fn journey_key(campaign: &str, trigger_id: &str) -> String {
    format!("{campaign}\u{1f}{trigger_id}")
}

/// The key the sink knows a user by: `app/user` ([`schemas::topics::app_user_key`]), as in
/// `zmp.profiles.v1`. Two apps' users of the same key are two users: their sends, caps and
/// decisions never mix.
pub fn member(app: &str, user: &str) -> String {
    schemas::topics::app_user_key(app, user)
}

/// The member a `zmp.profiles.v1` record is about: its key (`app/user`), when that is the key of
/// its contents' app and user (a record counts only under its own app's key: `zcdp topics
/// migrate-keys` moves those a version before app-keyed topics wrote). None otherwise, and for
/// a tombstone of a key without the app.
pub fn profile_member(key: &str, profile: Option<&Profile>) -> Option<String> {
    match profile {
        Some(p) => Some(member(&p.app_id, &p.user_key)).filter(|m| m == key),
        None => schemas::topics::split_app_user_key(key).map(|_| key.to_string()),
    }
}

/// What the sink knows of one partition of its inputs (users are co-partitioned).
#[derive(Default)]
pub struct PartitionState {
    /// By [`member`] key.
    pub users: HashMap<String, UserState>,
    /// (retry_at, message id) → the deferred record (a night-ban deferral or a journey's wait).
    deferred: BTreeMap<(i64, String), MessageEvent>,
    /// Message id → its retry_at in `deferred`: lookups and removals without a scan.
    deferred_at: HashMap<String, i64>,
    /// (when, member, which): birthday and next-purchase checks.
    pub timers: BTreeSet<(i64, String, ProfileTimer)>,
    /// Send times of the last day per app and address (`app/phone:84…`, `app/oa:<id>`), whoever's
    /// profile it was on: the per-recipient cap counts them. Per app: each shop's sends are its
    /// own, and an OA user id means a person only within its OA.
    by_address: HashMap<String, Vec<i64>>,
}

/// The key a phone is counted under for an app's per-recipient cap.
pub fn phone_address(app: &str, phone: &str) -> String {
    format!("{app}/phone:{phone}")
}

/// The key an OA user id is counted under for an app's per-recipient cap.
pub fn oa_address(app: &str, oa_user_id: &str) -> String {
    format!("{app}/oa:{oa_user_id}")
}

/// The address a send on `channel` went to, by the user's profile as the sink knows it.
fn address_of(profile: Option<&Profile>, channel: &str) -> Option<String> {
    let p = profile?;
    if channel == ChannelName::Zns.name() {
        p.phone.as_deref().map(|phone| phone_address(&p.app_id, phone))
    } else {
        p.oa_user_id.as_deref().map(|id| oa_address(&p.app_id, id))
    }
}

/// The key the policy dedups sends by: one campaign's decision on one trigger occurrence.
pub fn dedup_key(campaign: &str, trigger_id: &str) -> String {
    format!("{campaign}/{trigger_id}")
}

impl PartitionState {
    pub fn user(&self, user: &str) -> Option<&UserState> {
        self.users.get(user)
    }

    pub fn profile(&self, user: &str) -> Option<&Profile> {
        self.user(user).and_then(|u| u.profile.as_ref())
    }

    pub fn set_profile(&mut self, who: &str, profile: Option<Profile>) {
        match profile {
            Some(p) => self.users.entry(who.to_string()).or_default().profile = Some(p),
            None => {
                if let Some(u) = self.users.get_mut(who) {
                    u.profile = None;
                }
            }
        }
    }

    /// A segment entry or exit (`zmp.audiences.v1`, read at assignment and as it comes).
    pub fn set_member(&mut self, who: &str, segment: &str, member: bool) {
        let u = self.users.entry(who.to_string()).or_default();
        if member {
            u.segments.insert(segment.to_string());
        } else {
            u.segments.remove(segment);
        }
    }

    /// The deferral or wait of message `mid`, if one is pending.
    pub fn is_pending(&self, mid: &str) -> bool {
        self.deferred_at.contains_key(mid)
    }

    /// The next pending deferral or wait due by `now`, taken out.
    pub fn pop_due(&mut self, now: i64) -> Option<MessageEvent> {
        let (&(at, _), _) = self.deferred.first_key_value()?;
        if at > now {
            return None;
        }
        let (_, rec) = self.deferred.pop_first().expect("first");
        self.deferred_at.remove(&rec.message_id);
        Some(rec)
    }

    /// How many deferrals and waits are pending.
    pub fn pending(&self) -> usize {
        self.deferred.len()
    }

    fn drop_pending(&mut self, mid: &str) {
        if let Some(at) = self.deferred_at.remove(mid) {
            self.deferred.remove(&(at, mid.to_string()));
        }
    }

    /// Messages sent to `address` in the 24 hours before `now`.
    pub fn sent_to_address(&self, address: &str, now: i64) -> u32 {
        self.by_address.get(address).map_or(0, |v| v.iter().filter(|t| now - **t < DAY_MS).count() as u32)
    }

    /// Counts every send of the last day again under its user's current address: after a
    /// rebuild has read the users' profiles (the messages came first).
    pub fn reindex_addresses(&mut self) {
        self.by_address.clear();
        for u in self.users.values() {
            let last = u.sent.iter().map(|s| s.at).max().unwrap_or(0);
            for s in u.sent.iter().filter(|s| last - s.at < DAY_MS) {
                let channel = if s.channel == crate::policy::Channel::Zns { "zns" } else { "oa" };
                if let Some(a) = address_of(u.profile.as_ref(), channel) {
                    self.by_address.entry(a).or_default().push(s.at);
                }
            }
        }
    }

    /// Whether a message was decided already (dedup across replays and restarts).
    pub fn decided(&self, user: &str, message_id: &str) -> bool {
        self.user(user).is_some_and(|u| u.decided.contains(message_id))
    }

    /// Applies one `zmp.messages.v1` record (rebuild and live alike).
    pub fn apply(&mut self, rec: &MessageEvent) {
        let u = self.users.entry(member(&rec.app_id, &rec.user_key)).or_default();
        // A campaign's first record on an occurrence (not a later step's, not a receipt) is an
        // entry.
        // entry (one suppressed whole before the campaign ran — too old, no OA — is none); its
        // time is its first record's.
        let whole = matches!(rec.reason.as_deref(), Some("stale_trigger" | "no_oa_for_app"));
        if !rec.campaign.is_empty() && !rec.trigger_id.contains("#step") && !rec.is(MessageStatus::Delivered) && !whole {
            let last = u.entries.entry(rec.campaign.clone()).or_insert((rec.at, rec.trigger_id.clone()));
            if rec.trigger_id != last.1 && rec.at >= last.0 {
                *last = (rec.at, rec.trigger_id.clone());
            }
            if let Some(v) = rec.campaign_version {
                u.journey_versions.entry(journey_key(&rec.campaign, &rec.trigger_id)).or_insert(v);
            }
        }
        if crate::policy::falls_through(&rec.status, rec.reason.as_deref(), rec.zalo_error) {
            u.fell_through.insert(rec.message_id.clone());
        }
        if let Some(goto) = rec.reason.as_deref().and_then(|r| r.strip_prefix("goto:")) {
            u.gotos.insert(rec.message_id.clone(), goto.parse::<usize>().ok());
        }
        match rec.status() {
            Some(MessageStatus::Deferred | MessageStatus::Waiting) => {
                if let Some(at) = rec.retry_at
                    && !u.decided.contains(&rec.message_id)
                {
                    self.drop_pending(&rec.message_id);
                    self.deferred.insert((at, rec.message_id.clone()), rec.clone());
                    self.deferred_at.insert(rec.message_id.clone(), at);
                }
                return;
            }
            Some(MessageStatus::Delivered) => return,
            // An unknown send may have reached the user (and been billed): it counts toward every
            // cap and quota as a sent one.
            Some(MessageStatus::Sent | MessageStatus::Unknown) => {
                if let Some(ch) = ChannelName::parse(&rec.channel) {
                    u.sent.push(Sent {
                        at: rec.at,
                        channel: ch.channel(),
                        promotional: rec.promotional,
                        trigger_id: dedup_key(&rec.campaign, &rec.trigger_id),
                    });
                    // The policy looks back a month at most.
                    let horizon = rec.at - 40 * DAY_MS;
                    u.sent.retain(|s| s.at >= horizon);
                    if let Some(a) = address_of(u.profile.as_ref(), &rec.channel) {
                        let sends = self.by_address.entry(a).or_default();
                        sends.push(rec.at);
                        sends.retain(|t| rec.at - t < DAY_MS);
                    }
                }
            }
            _ => {}
        }
        u.decided.insert(rec.message_id.clone());
        self.drop_pending(&rec.message_id);
    }
}

/// Rebuilds new partitions' state from their `zmp.messages.v1` records, in the topic's order
/// (records of partitions not in `parts` are not this rebuild's). Returns the sends whose answer
/// never came — a `sending` that nothing followed for the same message — with
/// their partitions: the caller closes them as `unknown`, never sends them again.
pub fn rebuild(
    parts: &mut HashMap<i32, PartitionState>,
    records: impl IntoIterator<Item = (i32, MessageEvent)>,
) -> Vec<(i32, MessageEvent)> {
    let mut open: Vec<(i32, MessageEvent)> = Vec::new();
    for (partition, rec) in records {
        let Some(part) = parts.get_mut(&partition) else { continue };
        part.apply(&rec);
        if rec.is(MessageStatus::Sending) {
            open.push((partition, rec));
        } else {
            open.retain(|(_, o)| o.message_id != rec.message_id);
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: MessageStatus, at: i64) -> MessageEvent {
        let mut m = MessageEvent {
            message_id: id.into(),
            user_key: "u".into(),
            campaign: "c".into(),
            trigger_id: format!("t-{id}"),
            channel: "zns".into(),
            at,
            ..Default::default()
        };
        m.set_status(status);
        m
    }

    #[test]
    fn a_rebuild_remembers_decisions_and_finds_sends_left_open() {
        let mut parts = HashMap::from([(0, PartitionState::default())]);
        let mut deferred = rec("d", MessageStatus::Deferred, 1);
        deferred.retry_at = Some(100);
        let open = rebuild(
            &mut parts,
            [
                (0, rec("a", MessageStatus::Sending, 1)),
                (0, rec("a", MessageStatus::Sent, 2)),
                (0, rec("b", MessageStatus::Sending, 3)),
                (0, deferred),
                // A partition this member does not hold: ignored.
                (7, rec("x", MessageStatus::Sending, 3)),
            ],
        );
        assert_eq!(open.iter().map(|(p, m)| (*p, m.message_id.as_str())).collect::<Vec<_>>(), vec![(0, "b")]);
        let part = &parts[&0];
        let u = member("", "u");
        assert!(part.decided(&u, "a") && part.decided(&u, "b") && !part.decided(&u, "d"));
        assert_eq!(part.user(&u).unwrap().sent.len(), 1, "one send counts against the quotas");
        assert_eq!(part.user(&u).unwrap().sent[0].trigger_id, "c/t-a");
        assert_eq!(part.pending(), 1, "the deferral waits for its time");
    }
}
