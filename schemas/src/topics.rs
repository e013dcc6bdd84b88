//! The topic catalogue: every topic zcdp reads or writes, with its key, cleanup policy and value
//! schema. `zcdp topics create` and `zcdp up` create exactly this list; the processors refuse to
//! start when the co-partitioned topics disagree on their partition count.

use std::fmt;

/// Partition count used when the operator gives none. Every co-partitioned topic uses the same.
pub const DEFAULT_PARTITIONS: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Views,
    Carts,
    Orders,
    Identities,
    Engagement,
    DeadLetter,
    Sessions,
    Interests,
    CartTriggers,
    Profiles,
    Audiences,
    Messages,
    CampaignResults,
    Activity,
    Audit,
    Consents,
    Campaigns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Records expire after the retention time.
    Delete,
    /// Only the latest record per key is kept: a table.
    Compact,
}

impl Cleanup {
    pub fn as_config(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

/// What a topic's record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The user key (Zalo id, or anonymous id when none is known), UTF-8. Co-partitioned.
    User,
    /// The app id, UTF-8.
    App,
    /// `app/user key`, UTF-8 ([`app_user_key`]); written to the user's partition (the hash of
    /// the user key alone, where the inputs are), so it is co-partitioned with the user-keyed
    /// topics. The app holds no `/`: the first `/` ends it.
    AppUser,
    /// `app/segment/user key`, UTF-8; written to the user's partition like [`KeyKind::AppUser`].
    AppSegmentUser,
    /// `app/campaign/partition`, UTF-8; written to that partition: one record per campaign and
    /// task, summed by readers.
    AppCampaignPartition,
    /// `app/partition`, UTF-8; written to that partition.
    AppPartition,
    /// The record's own id (a request id), UTF-8.
    Request,
    /// `app/kind/name`, UTF-8 (kind `campaign` or `segment`; app `*` for the seed): one
    /// definition; partitioned by its hash.
    AppKindName,
    /// `app/user id/purpose`, UTF-8 (the user id is an app's Zalo id or anonymous id; the app
    /// and the purpose hold no `/`); partitioned by its hash, so every writer of a key (the
    /// gateway, the processors' erasure) reaches the same partition.
    AppUserPurpose,
}

impl KeyKind {
    /// Whether a record with this key goes to the partition of the task that wrote it (its
    /// user's, or the one it counts) rather than to its key's hash.
    pub fn to_writers_partition(self) -> bool {
        matches!(self, KeyKind::AppUser | KeyKind::AppSegmentUser | KeyKind::AppCampaignPartition | KeyKind::AppPartition)
    }
}

pub struct TopicSpec {
    pub topic: Topic,
    pub name: &'static str,
    pub key: KeyKind,
    pub cleanup: Cleanup,
    /// Input topics: what the Mini App sends; the rest are written by zcdp.
    pub input: bool,
    /// Retention in ms when it differs from the cluster's default.
    pub retention_ms: Option<i64>,
    pub doc: &'static str,
}

const THIRTY_DAYS_MS: i64 = 30 * 24 * 3600 * 1000;

/// The catalogue, in the order the README lists it.
pub const CATALOGUE: &[TopicSpec] = &[
    TopicSpec {
        topic: Topic::Views,
        name: "zmp.views.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: true,
        retention_ms: None,
        doc: "page/screen views, product views (with dwell time), clicks, searches, shares",
    },
    TopicSpec {
        topic: Topic::Carts,
        name: "zmp.carts.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: true,
        retention_ms: None,
        doc: "items added/removed/updated, cart viewed, checkout started",
    },
    TopicSpec {
        topic: Topic::Orders,
        name: "zmp.orders.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: true,
        retention_ms: None,
        doc: "orders placed, paid, status changed, cancelled, refunded; items and value in VND",
    },
    TopicSpec {
        topic: Topic::Identities,
        name: "zmp.identities.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: true,
        retention_ms: None,
        doc: "identify (consented traits, verified phone), consent per purpose, OA follow/unfollow and interactions",
    },
    TopicSpec {
        topic: Topic::Engagement,
        name: "zmp.engagement.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: true,
        retention_ms: None,
        doc: "mini-games, vouchers, points earned/redeemed, reviews, referrals",
    },
    TopicSpec {
        topic: Topic::DeadLetter,
        name: "zmp.deadletter.v1",
        key: KeyKind::App,
        cleanup: Cleanup::Delete,
        input: false,
        retention_ms: Some(THIRTY_DAYS_MS),
        doc: "every rejected input with its raw bytes, the reason and the source",
    },
    TopicSpec {
        topic: Topic::Sessions,
        name: "zmp.sessions.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: false,
        retention_ms: None,
        doc: "closed sessions with their summary",
    },
    TopicSpec {
        topic: Topic::Interests,
        name: "zmp.interests.v1",
        key: KeyKind::AppUser,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "top-N products and categories per user, time-decayed",
    },
    TopicSpec {
        topic: Topic::CartTriggers,
        name: "zmp.cart-triggers.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: false,
        retention_ms: None,
        doc: "abandoned-cart triggers, one per cart version",
    },
    TopicSpec {
        topic: Topic::Profiles,
        name: "zmp.profiles.v1",
        key: KeyKind::AppUser,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "customer profiles with RFM, lifecycle and consent",
    },
    TopicSpec {
        topic: Topic::Audiences,
        name: "zmp.audiences.v1",
        key: KeyKind::AppSegmentUser,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "segment entries and exits",
    },
    TopicSpec {
        topic: Topic::Messages,
        name: "zmp.messages.v1",
        key: KeyKind::User,
        cleanup: Cleanup::Delete,
        input: false,
        // The sinks rebuild dedup and the monthly promotion quotas from it: keep over a month.
        retention_ms: Some(40 * 24 * 3600 * 1000),
        doc: "every send, suppression, deferral and delivery, with reason and cost",
    },
    TopicSpec {
        topic: Topic::CampaignResults,
        name: "zmp.campaign-results.v1",
        key: KeyKind::AppCampaignPartition,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "per campaign and partition: sent, suppressed by reason, delivered, cost, conversions, revenue, carts recovered",
    },
    TopicSpec {
        topic: Topic::Activity,
        name: "zmp.activity.v1",
        key: KeyKind::AppPartition,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "per app and partition: events by type per minute over the last hour, and in all",
    },
    TopicSpec {
        topic: Topic::Audit,
        name: "zmp.audit.v1",
        key: KeyKind::Request,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "who asked for each erasure (key id, app, user, time); erasure never removes it",
    },
    TopicSpec {
        topic: Topic::Consents,
        name: "zmp.consents.v1",
        key: KeyKind::AppUserPurpose,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "the latest consent decision per app, user id and purpose (the consent_changed event, as in zmp.identities.v1); erasure writes tombstones. Never expires: the gateway's consent view is rebuilt from it",
    },
    TopicSpec {
        topic: Topic::Campaigns,
        name: "zmp.campaigns.v1",
        key: KeyKind::AppKindName,
        cleanup: Cleanup::Compact,
        input: false,
        retention_ms: None,
        doc: "campaign and segment definitions, versioned: written by the admin API (and the config files as the seed), applied by every sink and processor member without a restart",
    },
];

/// The key of a user's record in the app-keyed compacted topics (`zmp.profiles.v1`,
/// `zmp.interests.v1`): `app/user`. Two apps' users with the same key never share a record.
pub fn app_user_key(app: &str, user: &str) -> String {
    format!("{app}/{user}")
}

/// The (app, user) of an [`app_user_key`]; None for a key without a `/` (a record written before
/// keys held the app: such a tombstone names no app, and readers leave it alone).
pub fn split_app_user_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

/// The key of a segment entry or exit in `zmp.audiences.v1`: `app/segment/user`.
pub fn audience_key(app: &str, segment: &str, user: &str) -> String {
    format!("{app}/{segment}/{user}")
}

/// The (app, segment, user) of an [`audience_key`] (segment names hold no `/`).
pub fn split_audience_key(key: &str) -> Option<(&str, &str, &str)> {
    let (app, rest) = key.split_once('/')?;
    let (segment, user) = rest.split_once('/')?;
    Some((app, segment, user))
}

/// The key of a definition in `zmp.campaigns.v1`: `app/kind/name`.
pub fn definition_key(app: &str, kind: &str, name: &str) -> String {
    format!("{app}/{kind}/{name}")
}

/// The key of a consent decision in `zmp.consents.v1`.
pub fn consent_key(app: &str, user_id: &str, purpose: &str) -> String {
    format!("{app}/{user_id}/{purpose}")
}

/// The (app, user id, purpose) of a [`consent_key`].
pub fn split_consent_key(key: &str) -> Option<(&str, &str, &str)> {
    let (app, rest) = key.split_once('/')?;
    let (user, purpose) = rest.rsplit_once('/')?;
    Some((app, user, purpose))
}

impl Topic {
    pub fn spec(self) -> &'static TopicSpec {
        CATALOGUE.iter().find(|s| s.topic == self).expect("every topic is in the catalogue")
    }
    pub fn name(self) -> &'static str {
        self.spec().name
    }
    /// The Confluent subject of the value schema (TopicNameStrategy).
    pub fn value_subject(self) -> String {
        format!("{}-value", self.name())
    }
    pub fn from_name(name: &str) -> Option<Topic> {
        CATALOGUE.iter().find(|s| s.name == name).map(|s| s.topic)
    }
    /// The five topics the Mini App's events are written to (the catalogue's `input` ones), in
    /// the catalogue's order.
    pub const INPUTS: [Topic; 5] = [Topic::Views, Topic::Carts, Topic::Orders, Topic::Identities, Topic::Engagement];

    pub fn inputs() -> impl Iterator<Item = Topic> {
        Topic::INPUTS.into_iter()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for spec in CATALOGUE {
            assert_eq!(Topic::from_name(spec.name), Some(spec.topic));
            assert_eq!(spec.topic.spec().name, spec.name);
        }
        let mut names: Vec<_> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
    }

    /// Where the processors' outputs go: by their key's hash (user-keyed, co-partitioned), or to
    /// the writing task's own partition for keys that are not a user (the member reads this).
    #[test]
    fn records_keyed_other_than_by_user_go_to_their_writers_partition() {
        let own: Vec<Topic> = CATALOGUE.iter().filter(|s| s.key.to_writers_partition()).map(|s| s.topic).collect();
        assert_eq!(own, [Topic::Interests, Topic::Profiles, Topic::Audiences, Topic::CampaignResults, Topic::Activity]);
        for t in [Topic::Sessions, Topic::CartTriggers, Topic::Messages] {
            assert_eq!(t.spec().key, KeyKind::User, "{t}");
        }
    }

    /// Every compacted topic's key holds the app: one app's erasure or update never touches
    /// another's record of the same user key.
    #[test]
    fn every_compacted_key_holds_the_app() {
        for spec in CATALOGUE.iter().filter(|s| s.cleanup == Cleanup::Compact) {
            assert!(
                matches!(
                    spec.key,
                    KeyKind::AppUser
                        | KeyKind::AppSegmentUser
                        | KeyKind::AppCampaignPartition
                        | KeyKind::AppPartition
                        | KeyKind::AppUserPurpose
                        | KeyKind::AppKindName
                ) || spec.topic == Topic::Audit,
                "{}",
                spec.name
            );
        }
        assert_eq!(split_app_user_key(&app_user_key("a", "u/1")), Some(("a", "u/1")));
        assert_eq!(split_audience_key(&audience_key("a", "vip", "u/1")), Some(("a", "vip", "u/1")));
    }

    #[test]
    fn input_topics_are_keyed_by_user() {
        for t in Topic::inputs() {
            assert_eq!(t.spec().key, KeyKind::User, "{t} must be co-partitioned by user");
        }
        let flagged: Vec<Topic> = CATALOGUE.iter().filter(|s| s.input).map(|s| s.topic).collect();
        assert_eq!(flagged, Topic::INPUTS, "Topic::INPUTS is the catalogue's input topics, in its order");
    }
}
