//! The Rust side of the event contract: one type per input topic, field for field the records
//! of `schemas/avro/<topic>/v1.avsc`. The round-trip tests in `codec.rs` keep the two in step.
//!
//! Every input record shares one envelope (`Event`) and differs only in its `type` enum and its
//! `properties` record, so the processors can treat time, user and context uniformly.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Declares the record of one input topic: the shared envelope plus the topic's `type` enum and
/// `properties` record. One struct per topic (not a generic) because the Avro record names
/// differ and the schema-aware deserializer checks them.
macro_rules! input_event {
    ($(#[$doc:meta])* $name:ident, $kind:ty, $props:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            pub event_id: String,
            pub app_id: String,
            #[serde(rename = "type")]
            pub kind: $kind,
            pub user: User,
            pub event_time: i64,
            pub sent_at: Option<i64>,
            pub received_at: i64,
            pub corrected_time: i64,
            pub clock_skew_ms: i64,
            pub future_clamped: bool,
            pub stale: bool,
            pub context: Context,
            pub properties: $props,
            /// Who vouched for the event (records written before it existed read as unverified).
            #[serde(default)]
            pub trust: Trust,
        }
    };
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The partition key: `zalo_id` when known, else `anonymous_id`.
    pub key: String,
    pub zalo_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub oa_user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub screen: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_content: Option<String>,
    pub affiliate_id: Option<String>,
    pub referrer: Option<String>,
    pub app_version: Option<String>,
    pub zalo_version: Option<String>,
    pub platform: Option<String>,
    pub os_version: Option<String>,
    pub device_model: Option<String>,
    pub locale: Option<String>,
    pub library: Option<String>,
}

/// A line of a cart or an order. Money is integer VND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub product_id: String,
    pub product_name: Option<String>,
    pub category: Option<String>,
    pub quantity: i64,
    pub price: i64,
}

impl Item {
    /// The line's value, quantity × price. Saturating: the gateway bounds both (10⁶ items,
    /// 10¹³ VND), but their product can pass `i64::MAX`, and records written before the bounds
    /// were checked are not bounded at all.
    pub fn value(&self) -> i64 {
        self.quantity.saturating_mul(self.price)
    }

    /// The lines' total value, saturating.
    pub fn total(items: &[Item]) -> i64 {
        items.iter().fold(0i64, |sum, i| sum.saturating_add(i.value()))
    }
}

/// Extra properties outside the contract: key → the value's JSON text.
pub type Custom = HashMap<String, String>;

// ---- zmp.views.v1 -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewType {
    PageViewed,
    ProductViewed,
    ProductClicked,
    Search,
    ProductShared,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewProperties {
    pub page_title: Option<String>,
    pub product_id: Option<String>,
    pub product_name: Option<String>,
    pub category: Option<String>,
    pub price: Option<i64>,
    pub dwell_ms: Option<i64>,
    pub query: Option<String>,
    pub results_count: Option<i64>,
    pub share_channel: Option<String>,
    pub list_id: Option<String>,
    pub custom: Custom,
}

input_event!(
    /// A record of `zmp.views.v1`.
    ViewEvent, ViewType, ViewProperties
);

// ---- zmp.carts.v1 -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartType {
    CartItemAdded,
    CartItemRemoved,
    CartItemUpdated,
    CartViewed,
    CheckoutStarted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartProperties {
    pub cart_id: String,
    pub product_id: Option<String>,
    pub product_name: Option<String>,
    pub category: Option<String>,
    pub quantity: Option<i64>,
    pub price: Option<i64>,
    pub cart_value: Option<i64>,
    pub items: Vec<Item>,
    pub custom: Custom,
}

input_event!(
    /// A record of `zmp.carts.v1`.
    CartEvent, CartType, CartProperties
);

// ---- zmp.orders.v1 ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    OrderPlaced,
    OrderPaid,
    OrderStatusChanged,
    OrderCancelled,
    OrderRefunded,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderProperties {
    pub order_id: String,
    pub cart_id: Option<String>,
    pub items: Vec<Item>,
    pub total: Option<i64>,
    pub shipping_fee: Option<i64>,
    pub discount: Option<i64>,
    pub payment_method: Option<String>,
    pub voucher_code: Option<String>,
    pub points_used: Option<i64>,
    pub status: Option<String>,
    pub refund_amount: Option<i64>,
    pub reason: Option<String>,
    pub custom: Custom,
}

input_event!(
    /// A record of `zmp.orders.v1`.
    OrderEvent, OrderType, OrderProperties
);

// ---- zmp.identities.v1 --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityType {
    Identify,
    ConsentChanged,
    OaFollowed,
    OaUnfollowed,
    OaInteracted,
    /// An erasure request, written by zcdp itself (never accepted from a Mini App): every
    /// processor forgets the user. Schema v2.
    UserForgotten,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traits {
    pub name: Option<String>,
    pub gender: Option<String>,
    pub birthday: Option<String>,
    pub email: Option<String>,
    pub city: Option<String>,
    pub custom: Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProperties {
    pub traits: Option<Traits>,
    pub phone: Option<String>,
    pub purpose: Option<String>,
    pub granted: Option<bool>,
    pub policy_version: Option<String>,
    pub oa_id: Option<String>,
    pub interaction: Option<String>,
    pub custom: Custom,
}

input_event!(
    /// A record of `zmp.identities.v1`.
    IdentityEvent, IdentityType, IdentityProperties
);

// ---- zmp.engagement.v1 --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngagementType {
    MinigamePlayed,
    VoucherClaimed,
    PointsEarned,
    PointsRedeemed,
    ReviewSubmitted,
    ReferralCompleted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngagementProperties {
    pub game_id: Option<String>,
    pub result: Option<String>,
    pub reward: Option<String>,
    pub voucher_code: Option<String>,
    pub points: Option<i64>,
    pub reason: Option<String>,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub rating: Option<i64>,
    pub referral_code: Option<String>,
    pub custom: Custom,
}

input_event!(
    /// A record of `zmp.engagement.v1`.
    EngagementEvent, EngagementType, EngagementProperties
);

// ---- zmp.deadletter.v1 --------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub received_at: i64,
    pub source: String,
    pub app_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub index: Option<i64>,
    pub reason_code: String,
    pub reason: String,
    #[serde(with = "apache_avro::serde::bytes")]
    pub raw: Vec<u8>,
}

/// Consent purposes a user can grant or revoke (`consent_changed`). What each one allows:
/// - `analytics`: measurement and reports;
/// - `personalization`: recommendations from the user's own behaviour;
/// - `profile`: keeping the traits of `identify` (name, gender, birthday, email, city);
/// - `phone`: keeping the verified phone number (and ZNS messages to it);
/// - `marketing`: promotional messages and ad audiences.
pub const CONSENT_PURPOSES: &[&str] = &["analytics", "personalization", "profile", "phone", "marketing"];
pub const PURPOSE_PROFILE: &str = "profile";
pub const PURPOSE_PHONE: &str = "phone";
pub const PURPOSE_MARKETING: &str = "marketing";

/// Any input event, tagged by its topic: what the gateway produces and the processors consume.
#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    View(ViewEvent),
    Cart(CartEvent),
    Order(OrderEvent),
    Identity(IdentityEvent),
    Engagement(EngagementEvent),
    /// A messaging decision or outcome from `zmp.messages.v1`, read by the campaign-results
    /// processor (the other processors never see it).
    Message(Box<MessageInput>),
}

/// A `zmp.messages.v1` record with the envelope the processor runtime needs: the dedup id is the
/// message id with its status (one message has a record per status), the time is the decision's.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageInput {
    pub event_id: String,
    pub app_id: String,
    pub user: User,
    pub context: Context,
    pub corrected_time: i64,
    pub message: crate::derived::MessageEvent,
}

impl MessageInput {
    pub fn new(message: crate::derived::MessageEvent) -> MessageInput {
        MessageInput {
            event_id: format!("{}:{}", message.message_id, message.status),
            app_id: message.app_id.clone(),
            user: User { key: message.user_key.clone(), ..Default::default() },
            context: Context::default(),
            corrected_time: message.at,
            message,
        }
    }
}

/// The envelope fields every input event has, whatever its topic.
macro_rules! each_input {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            InputEvent::View($e) => $body,
            InputEvent::Cart($e) => $body,
            InputEvent::Order($e) => $body,
            InputEvent::Identity($e) => $body,
            InputEvent::Engagement($e) => $body,
            InputEvent::Message($e) => $body,
        }
    };
}

impl InputEvent {
    pub fn event_id(&self) -> &str {
        each_input!(self, e => &e.event_id)
    }
    pub fn app_id(&self) -> &str {
        each_input!(self, e => &e.app_id)
    }
    pub fn user(&self) -> &User {
        each_input!(self, e => &e.user)
    }
    pub fn context(&self) -> &Context {
        each_input!(self, e => &e.context)
    }
    /// The event time on the server's clock, in epoch ms.
    pub fn time(&self) -> i64 {
        each_input!(self, e => e.corrected_time)
    }
    /// The topic this event belongs to.
    pub fn topic(&self) -> crate::topics::Topic {
        use crate::topics::Topic;
        match self {
            InputEvent::View(_) => Topic::Views,
            InputEvent::Cart(_) => Topic::Carts,
            InputEvent::Order(_) => Topic::Orders,
            InputEvent::Identity(_) => Topic::Identities,
            InputEvent::Engagement(_) => Topic::Engagement,
            InputEvent::Message(_) => Topic::Messages,
        }
    }
    /// Who vouched for the event; zcdp's own messaging records count as the server's.
    pub fn trust(&self) -> Trust {
        match self {
            InputEvent::View(e) => e.trust,
            InputEvent::Cart(e) => e.trust,
            InputEvent::Order(e) => e.trust,
            InputEvent::Identity(e) => e.trust,
            InputEvent::Engagement(e) => e.trust,
            InputEvent::Message(_) => Trust::Server,
        }
    }
    /// The event, when it is a consent decision (`consent_changed`).
    pub fn consent_decision(&self) -> Option<&IdentityEvent> {
        match self {
            InputEvent::Identity(e) if e.kind == IdentityType::ConsentChanged => Some(e),
            _ => None,
        }
    }
    /// The snake_case event type, as in the HTTP API.
    pub fn type_name(&self) -> &'static str {
        match self {
            InputEvent::View(e) => e.kind.name(),
            InputEvent::Cart(e) => e.kind.name(),
            InputEvent::Order(e) => e.kind.name(),
            InputEvent::Identity(e) => e.kind.name(),
            InputEvent::Engagement(e) => e.kind.name(),
            InputEvent::Message(_) => "message",
        }
    }
}

/// Every event type of the HTTP API with the topic it goes to. One table, so the gateway's
/// parser, the docs test and the simulator cannot disagree.
pub const EVENT_TYPES: &[(&str, crate::topics::Topic)] = {
    use crate::topics::Topic::*;
    &[
        ("page_viewed", Views),
        ("product_viewed", Views),
        ("product_clicked", Views),
        ("search", Views),
        ("product_shared", Views),
        ("cart_item_added", Carts),
        ("cart_item_removed", Carts),
        ("cart_item_updated", Carts),
        ("cart_viewed", Carts),
        ("checkout_started", Carts),
        ("order_placed", Orders),
        ("order_paid", Orders),
        ("order_status_changed", Orders),
        ("order_cancelled", Orders),
        ("order_refunded", Orders),
        ("identify", Identities),
        ("consent_changed", Identities),
        ("oa_followed", Identities),
        ("oa_unfollowed", Identities),
        ("oa_interacted", Identities),
        ("minigame_played", Engagement),
        ("voucher_claimed", Engagement),
        ("points_earned", Engagement),
        ("points_redeemed", Engagement),
        ("review_submitted", Engagement),
        ("referral_completed", Engagement),
    ]
};

macro_rules! type_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

type_names!(ViewType {
    PageViewed => "page_viewed", ProductViewed => "product_viewed",
    ProductClicked => "product_clicked", Search => "search", ProductShared => "product_shared",
});
type_names!(CartType {
    CartItemAdded => "cart_item_added", CartItemRemoved => "cart_item_removed",
    CartItemUpdated => "cart_item_updated", CartViewed => "cart_viewed",
    CheckoutStarted => "checkout_started",
});
type_names!(OrderType {
    OrderPlaced => "order_placed", OrderPaid => "order_paid",
    OrderStatusChanged => "order_status_changed", OrderCancelled => "order_cancelled",
    OrderRefunded => "order_refunded",
});
type_names!(IdentityType {
    Identify => "identify", ConsentChanged => "consent_changed", OaFollowed => "oa_followed",
    OaUnfollowed => "oa_unfollowed", OaInteracted => "oa_interacted", UserForgotten => "user_forgotten",
});
impl IdentityType {
    /// Types zcdp writes itself; the gateway refuses them from clients.
    pub fn is_internal(self) -> bool {
        self == IdentityType::UserForgotten
    }
}

/// Who vouched for an input event: what a processor or sink may believe of it
/// (docs/security.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// A client with the app's public write key and no session: what it saw, not who it is.
    #[default]
    Unverified,
    /// A client under a Zalo-verified session of the user the event names.
    Session,
    /// The shop's own server (its secret or admin key), or zcdp itself.
    Server,
    /// Zalo: a signed webhook, or the Graph API's phone exchange.
    Zalo,
}

impl Trust {
    /// Whether the shop's server or Zalo said it: who a user is, which phone and OA id are
    /// theirs, that an order happened.
    pub fn is_trusted(self) -> bool {
        matches!(self, Trust::Server | Trust::Zalo)
    }

    pub fn name(self) -> &'static str {
        match self {
            Trust::Unverified => "unverified",
            Trust::Session => "session",
            Trust::Server => "server",
            Trust::Zalo => "zalo",
        }
    }

    /// The Avro enum symbol's index.
    pub fn symbol(self) -> u8 {
        self as u8
    }
}

crate::avro_enum!(Trust);

/// An erasure request for `user_key` of `app`: every processor forgets the user when it reads it.
pub fn forget_request(app: &str, user_key: &str, now_ms: i64) -> InputEvent {
    InputEvent::Identity(IdentityEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        app_id: app.to_string(),
        kind: IdentityType::UserForgotten,
        user: User { key: user_key.to_string(), zalo_id: None, anonymous_id: None, oa_user_id: None },
        event_time: now_ms,
        sent_at: None,
        received_at: now_ms,
        corrected_time: now_ms,
        clock_skew_ms: 0,
        future_clamped: false,
        stale: false,
        context: Context::default(),
        properties: IdentityProperties::default(),
        trust: Trust::Server,
    })
}

impl InputEvent {
    /// Whether this is an erasure request ([`forget_request`]).
    pub fn is_forget(&self) -> bool {
        matches!(self, InputEvent::Identity(e) if e.kind == IdentityType::UserForgotten)
    }
}

type_names!(EngagementType {
    MinigamePlayed => "minigame_played", VoucherClaimed => "voucher_claimed",
    PointsEarned => "points_earned", PointsRedeemed => "points_redeemed",
    ReviewSubmitted => "review_submitted", ReferralCompleted => "referral_completed",
});

// ---- Avro binary writers, fields in schema order ------------------------------------------

crate::avro_enum!(ViewType, CartType, OrderType, IdentityType, EngagementType);
crate::avro_record!(User { key, zalo_id, anonymous_id, oa_user_id });
crate::avro_record!(Context {
    screen,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    affiliate_id,
    referrer,
    app_version,
    zalo_version,
    platform,
    os_version,
    device_model,
    locale,
    library,
});
crate::avro_record!(Item { product_id, product_name, category, quantity, price });
crate::avro_record!(ViewProperties {
    page_title,
    product_id,
    product_name,
    category,
    price,
    dwell_ms,
    query,
    results_count,
    share_channel,
    list_id,
    custom,
});
crate::avro_record!(CartProperties { cart_id, product_id, product_name, category, quantity, price, cart_value, items[array], custom });
crate::avro_record!(OrderProperties {
    order_id, cart_id, items[array], total, shipping_fee, discount, payment_method, voucher_code, points_used, status,
    refund_amount, reason, custom,
});
crate::avro_record!(Traits { name, gender, birthday, email, city, custom });
crate::avro_record!(IdentityProperties { traits, phone, purpose, granted, policy_version, oa_id, interaction, custom });
crate::avro_record!(EngagementProperties {
    game_id,
    result,
    reward,
    voucher_code,
    points,
    reason,
    order_id,
    product_id,
    rating,
    referral_code,
    custom,
});
macro_rules! input_event_writer {
    ($($t:ty),*) => {$(
        crate::avro_record!($t {
            event_id, app_id, kind, user, event_time, sent_at, received_at, corrected_time, clock_skew_ms, future_clamped,
            stale, context, properties, trust,
        });
    )*};
}
input_event_writer!(ViewEvent, CartEvent, OrderEvent, IdentityEvent, EngagementEvent);
crate::avro_record!(DeadLetter { received_at, source, app_id, event_id, event_type, index, reason_code, reason, raw });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::Topic;

    /// The table and the enums must name the same types: a type added to one and not the
    /// other would be accepted by the gateway and then fail to encode. Internal types (written
    /// by zcdp, never posted) are the one exception.
    #[test]
    fn event_type_table_matches_the_enums() {
        let mut from_enums: Vec<(&str, Topic)> = Vec::new();
        from_enums.extend(ViewType::ALL.iter().map(|t| (t.name(), Topic::Views)));
        from_enums.extend(CartType::ALL.iter().map(|t| (t.name(), Topic::Carts)));
        from_enums.extend(OrderType::ALL.iter().map(|t| (t.name(), Topic::Orders)));
        from_enums.extend(IdentityType::ALL.iter().filter(|t| !t.is_internal()).map(|t| (t.name(), Topic::Identities)));
        from_enums.extend(EngagementType::ALL.iter().map(|t| (t.name(), Topic::Engagement)));
        assert_eq!(from_enums, EVENT_TYPES.to_vec());
    }
}
