//! Records the roles derive from the input events, field for field the schemas under
//! `schemas/avro/`: the processors' `zmp.sessions.v1`, `zmp.interests.v1`,
//! `zmp.cart-triggers.v1`, `zmp.profiles.v1`, `zmp.audiences.v1`, `zmp.campaign-results.v1` and
//! `zmp.activity.v1`, and the sinks' `zmp.messages.v1` (with its [`MessageStatus`] vocabulary).
//! Every processor record is a pure function of the input events, so a record written twice
//! (after a crash) is the same record, and its id says so.

use serde::{Deserialize, Serialize};

use crate::codec::Record;
use crate::event::{Item, User};
use crate::topics::Topic;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub app_id: String,
    pub user: User,
    pub start: i64,
    pub end: i64,
    pub duration_ms: i64,
    pub events: i64,
    pub screens: i64,
    pub product_views: i64,
    pub products_viewed: Vec<String>,
    pub searches: i64,
    pub cart_adds: i64,
    pub orders: i64,
    pub revenue: i64,
    pub landing_screen: Option<String>,
    pub exit_screen: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub affiliate_id: Option<String>,
    pub referrer: Option<String>,
    pub converted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub id: String,
    pub score: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserInterests {
    pub app_id: String,
    pub user_key: String,
    pub as_of: i64,
    pub half_life_ms: i64,
    pub products: Vec<Score>,
    pub categories: Vec<Score>,
    pub terms: Vec<Score>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewedProduct {
    pub product_id: String,
    pub product_name: Option<String>,
    pub category: Option<String>,
    pub price: Option<i64>,
    pub viewed_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartTrigger {
    pub trigger_id: String,
    pub app_id: String,
    pub user: User,
    pub cart_id: String,
    pub cart_version: i64,
    pub items: Vec<Item>,
    pub value: i64,
    pub last_activity: i64,
    pub deadline: i64,
    pub last_viewed_product: Option<ViewedProduct>,
}

/// The campaign context of an event that carried one, and the orders credited to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub affiliate_id: Option<String>,
    pub at: i64,
    pub conversions: i64,
    pub revenue: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub purpose: String,
    pub granted: bool,
    pub changed_at: i64,
    pub policy_version: Option<String>,
}

/// A customer's profile (`zmp.profiles.v1`, compacted, key `app/user`). Definitions:
/// docs/profiles.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub app_id: String,
    pub user_key: String,
    pub zalo_id: Option<String>,
    pub oa_user_id: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub as_of: i64,
    pub consents: Vec<Consent>,
    pub name: Option<String>,
    pub gender: Option<String>,
    pub birthday: Option<String>,
    pub phone: Option<String>,
    pub oa_following: bool,
    pub oa_followed_at: Option<i64>,
    pub oa_last_interaction: Option<i64>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub sessions: i64,
    pub active_days: i64,
    pub recent_active_days: Vec<i64>,
    pub active_on_day1: bool,
    pub active_on_day7: bool,
    pub active_on_day30: bool,
    pub product_views: i64,
    pub cart_adds: i64,
    pub checkouts: i64,
    pub orders: i64,
    pub revenue: i64,
    pub average_order_value: i64,
    pub last_order_at: Option<i64>,
    pub recency_score: i32,
    pub frequency_score: i32,
    pub monetary_score: i32,
    pub lifecycle: String,
    pub funnel_stage: String,
    pub next_purchase_expected: Option<i64>,
    pub next_purchase_basis: String,
    pub vouchers_claimed: i64,
    pub vouchers_used: i64,
    pub points_balance: i64,
    pub first_touch: Option<Touch>,
    pub last_touch: Option<Touch>,
    /// The phone came from Zalo's exchange or the shop's server (v2; v1 records: false).
    #[serde(default)]
    pub phone_verified: bool,
    /// The OA user id came from Zalo's webhook or the shop's server (v2; v1 records: false).
    #[serde(default)]
    pub oa_user_id_verified: bool,
}

crate::avro_record!(Session {
    session_id, app_id, user, start, end, duration_ms, events, screens, product_views, products_viewed[array], searches,
    cart_adds, orders, revenue, landing_screen, exit_screen, utm_source, utm_medium, utm_campaign, affiliate_id, referrer,
    converted,
});
crate::avro_record!(Score { id, score });
crate::avro_record!(UserInterests { app_id, user_key, as_of, half_life_ms, products[array], categories[array], terms[array] });
crate::avro_record!(ViewedProduct { product_id, product_name, category, price, viewed_at });
crate::avro_record!(CartTrigger { trigger_id, app_id, user, cart_id, cart_version, items[array], value, last_activity, deadline, last_viewed_product });

/// A user entering or leaving a segment (`zmp.audiences.v1`, compacted, key `app/segment/user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceChange {
    pub app_id: String,
    pub segment: String,
    pub user_key: String,
    pub member: bool,
    pub at: i64,
    pub zalo_id: Option<String>,
    pub oa_user_id: Option<String>,
    pub phone_sha256: Option<String>,
    pub phone_sha256_e164: Option<String>,
}

impl AudienceChange {
    /// The record's Kafka key: `app/segment/user` ([`crate::topics::audience_key`]).
    pub fn key(&self) -> String {
        crate::topics::audience_key(&self.app_id, &self.segment, &self.user_key)
    }
}

crate::avro_record!(AudienceChange { app_id, segment, user_key, member, at, zalo_id, oa_user_id, phone_sha256, phone_sha256_e164 });
impl Record for AudienceChange {
    const TOPIC: Topic = Topic::Audiences;
}

crate::avro_record!(Touch { utm_source, utm_medium, utm_campaign, affiliate_id, at, conversions, revenue });
crate::avro_record!(Consent { purpose, granted, changed_at, policy_version });
crate::avro_record!(Profile {
    app_id, user_key, zalo_id, oa_user_id, anonymous_ids[array], as_of, consents[array], name, gender, birthday, phone,
    oa_following, oa_followed_at, oa_last_interaction, first_seen, last_seen, sessions, active_days, recent_active_days[array],
    active_on_day1, active_on_day7, active_on_day30, product_views, cart_adds, checkouts, orders, revenue,
    average_order_value, last_order_at, recency_score, frequency_score, monetary_score, lifecycle, funnel_stage,
    next_purchase_expected, next_purchase_basis, vouchers_claimed, vouchers_used, points_balance, first_touch, last_touch,
    phone_verified, oa_user_id_verified,
});

impl Record for Profile {
    const TOPIC: Topic = Topic::Profiles;
}
impl Record for Session {
    const TOPIC: Topic = Topic::Sessions;
}
impl Record for UserInterests {
    const TOPIC: Topic = Topic::Interests;
}
impl Record for CartTrigger {
    const TOPIC: Topic = Topic::CartTriggers;
}

/// What a `zmp.messages.v1` record says happened to a message. The Avro field is a string (so a
/// consumer that does not know a newer status still reads the record); this is its vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Decided to send, recorded before Zalo is called; its answer follows.
    Sending,
    /// Zalo accepted it.
    Sent,
    /// Zalo refused it (`zalo_error`), or could not be reached.
    Failed,
    /// Sent, but its answer never came (the member stopped): never sent again.
    Unknown,
    /// The policy held it back (`reason`).
    Suppressed,
    /// Held until `retry_at` (the night ban).
    Deferred,
    /// Zalo's delivery receipt for a ZNS message (from the webhook).
    Delivered,
    /// The user is in the campaign's holdout group for this entry: nothing is sent (cost 0);
    /// the entry counts in the control group's conversions.
    HeldOut,
    /// A journey waits until `retry_at` before its next step (`data`: the variables).
    Waiting,
    /// A journey's wait is over: its next step follows.
    Resumed,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 10] = [
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Failed,
        MessageStatus::Unknown,
        MessageStatus::Suppressed,
        MessageStatus::Deferred,
        MessageStatus::Delivered,
        MessageStatus::HeldOut,
        MessageStatus::Waiting,
        MessageStatus::Resumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Unknown => "unknown",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Deferred => "deferred",
            MessageStatus::Delivered => "delivered",
            MessageStatus::HeldOut => "held_out",
            MessageStatus::Waiting => "waiting",
            MessageStatus::Resumed => "resumed",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision or outcome of the messaging sinks (`zmp.messages.v1`, key = user key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub message_id: String,
    pub app_id: String,
    pub user_key: String,
    pub campaign: String,
    pub trigger: String,
    pub trigger_id: String,
    pub channel: String,
    pub status: String,
    pub reason: Option<String>,
    pub zalo_error: Option<i64>,
    pub cost_vnd: i64,
    pub promotional: bool,
    pub at: i64,
    pub retry_at: Option<i64>,
    pub template_id: Option<String>,
    pub zalo_message_id: Option<String>,
    pub data: Option<String>,
    /// The campaign definition's version the decision was taken under (None: before versions).
    pub campaign_version: Option<i64>,
}

crate::avro_record!(MessageEvent {
    message_id,
    app_id,
    user_key,
    campaign,
    trigger,
    trigger_id,
    channel,
    status,
    reason,
    zalo_error,
    cost_vnd,
    promotional,
    at,
    retry_at,
    template_id,
    zalo_message_id,
    data,
    campaign_version,
});
impl Record for MessageEvent {
    const TOPIC: Topic = Topic::Messages;
}

impl MessageEvent {
    /// The record's status, if it is one this version knows.
    pub fn status(&self) -> Option<MessageStatus> {
        MessageStatus::parse(&self.status)
    }

    pub fn is(&self, status: MessageStatus) -> bool {
        self.status == status.as_str()
    }

    pub fn set_status(&mut self, status: MessageStatus) {
        self.status = status.as_str().to_string();
    }
}

/// An action that must leave a trace (`zmp.audit.v1`, compacted, key `request_id`): who asked
/// (the key's id, never the key), for which app and user, when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub request_id: String,
    pub app_id: String,
    pub action: String,
    pub user_key: String,
    pub key_id: String,
    pub at: i64,
}

crate::avro_record!(AuditRecord { request_id, app_id, action, user_key, key_id, at });
impl Record for AuditRecord {
    const TOPIC: Topic = Topic::Audit;
}

/// One version of a campaign or segment definition (`zmp.campaigns.v1`, compacted, key
/// `app/kind/name`; app `*` is the seed every app gets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub app_id: String,
    pub kind: String,
    pub name: String,
    pub version: i64,
    pub paused: bool,
    /// The definition, as JSON.
    pub definition: String,
    pub updated_at: i64,
    /// The admin key's id, or `seed:<file>`.
    pub updated_by: String,
}

crate::avro_record!(Definition { app_id, kind, name, version, paused, definition, updated_at, updated_by });
impl Record for Definition {
    const TOPIC: Topic = Topic::Campaigns;
}

impl Definition {
    /// The app every app's seed definitions are kept under.
    pub const SEED_APP: &'static str = "*";

    pub fn key(&self) -> String {
        crate::topics::definition_key(&self.app_id, &self.kind, &self.name)
    }
}

/// A short, stable id from the parts that identify a derived record (hex of SHA-256, 32 chars).
pub fn stable_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn derived_records_round_trip() {
        let s = Session {
            session_id: stable_id(&["a", "u", "1"]),
            products_viewed: vec!["p".into()],
            landing_screen: Some("/".into()),
            ..Default::default()
        };
        assert_eq!(decode::<Session>(&encode(&s).unwrap()).unwrap(), s);
        let i = UserInterests { products: vec![Score { id: "p".into(), score: 1.5 }], ..Default::default() };
        assert_eq!(decode::<UserInterests>(&encode(&i).unwrap()).unwrap(), i);
        let t = CartTrigger {
            items: vec![Item { product_id: "p".into(), quantity: 1, price: 5, ..Default::default() }],
            last_viewed_product: Some(ViewedProduct { product_id: "p".into(), viewed_at: 3, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(decode::<CartTrigger>(&encode(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn message_statuses_read_back_what_they_write() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
            let mut m = MessageEvent::default();
            m.set_status(s);
            assert!(m.is(s) && m.status() == Some(s));
        }
        assert_eq!(MessageStatus::parse("exploded"), None, "a status this version does not know");
    }

    #[test]
    fn stable_ids_do_not_collide_on_concatenation() {
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
        assert_eq!(stable_id(&["x"]), stable_id(&["x"]));
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

crate::avro_record!(ReasonCount { reason, count });

/// A campaign's results among one task's users (`zmp.campaign-results.v1`, compacted, key
/// `app/campaign/partition`). Readers sum the partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignResult {
    pub app_id: String,
    pub campaign: String,
    pub partition: i64,
    pub as_of: i64,
    pub window_ms: i64,
    pub sent: i64,
    pub deferred: i64,
    pub suppressed: Vec<ReasonCount>,
    pub failed: i64,
    pub unknown: i64,
    pub delivered: i64,
    pub cost_vnd: i64,
    pub conversions: i64,
    pub revenue_vnd: i64,
    pub carts_triggered: i64,
    pub carts_recovered: i64,
    pub recovered_revenue_vnd: i64,
    pub held_out: i64,
    pub entrants_treatment: i64,
    pub entrants_control: i64,
    pub converted_treatment: i64,
    pub converted_control: i64,
    pub orders_treatment: i64,
    pub orders_control: i64,
    pub revenue_treatment_vnd: i64,
    pub revenue_control_vnd: i64,
}

crate::avro_record!(CampaignResult {
    app_id,
    campaign,
    partition,
    as_of,
    window_ms,
    sent,
    deferred,
    suppressed[array],
    failed,
    unknown,
    delivered,
    cost_vnd,
    conversions,
    revenue_vnd,
    carts_triggered,
    carts_recovered,
    recovered_revenue_vnd,
    held_out,
    entrants_treatment,
    entrants_control,
    converted_treatment,
    converted_control,
    orders_treatment,
    orders_control,
    revenue_treatment_vnd,
    revenue_control_vnd,
});
impl Record for CampaignResult {
    const TOPIC: Topic = Topic::CampaignResults;
}

impl CampaignResult {
    /// The record's Kafka key: `app/campaign/partition`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.app_id, self.campaign, self.partition)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCount {
    pub minute: i64,
    pub event_type: String,
    pub count: i64,
}

crate::avro_record!(MinuteCount { minute, event_type, count });

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    pub event_type: String,
    pub count: i64,
}

crate::avro_record!(TypeCount { event_type, count });

/// Events by type among one task's users (`zmp.activity.v1`, compacted, key `app/partition`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub app_id: String,
    pub partition: i64,
    pub as_of: i64,
    pub minutes: Vec<MinuteCount>,
    pub totals: Vec<TypeCount>,
}

crate::avro_record!(Activity { app_id, partition, as_of, minutes[array], totals[array] });
impl Record for Activity {
    const TOPIC: Topic = Topic::Activity;
}

impl Activity {
    /// Minutes a record covers, up to its latest event (`minutes` holds no older ones): what the
    /// processor keeps and what the query API sums.
    pub const MINUTES: i64 = 60;

    /// The record's Kafka key: `app/partition`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.app_id, self.partition)
    }
}
