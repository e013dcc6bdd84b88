//! Triggers: what starts a campaign, one file per kind. Each kind's file says what its source
//! record carries into an [`Occurrence`] and which template variables it fills, next to each
//! other; `campaigns.rs` checks templates against the same lists.
//!
//! - `cart`: an abandoned cart (`zmp.cart-triggers.v1`);
//! - `order`: an order's status (`zmp.orders.v1`), transactional;
//! - `audience`: a user entering a segment (`zmp.audiences.v1`);
//! - `profile`: what a profile implies (`zmp.profiles.v1`): welcome and new follower at once,
//!   birthday and expected next purchase as timers.

pub mod audience;
pub mod cart;
pub mod order;
pub mod profile;

use serde::Deserialize;
use serde_json::{Map, Value};

/// What starts a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cart abandoned (`zmp.cart-triggers.v1`).
    CartAbandoned,
    /// A user's first session (a new profile).
    Welcome,
    /// A new OA follower.
    OaFollowed,
    /// The user's birthday (from the `birthday` trait), at 09:00 Vietnam time.
    Birthday,
    /// An order paid, changed status, cancelled or refunded (`zmp.orders.v1`): transactional.
    OrderStatus,
    /// The profile's expected next purchase was reached without an order.
    NextPurchase,
    /// The user entered a segment (`segment = "…"`).
    SegmentEntered,
}

impl Trigger {
    pub const ALL: [Trigger; 7] = [
        Trigger::CartAbandoned,
        Trigger::Welcome,
        Trigger::OaFollowed,
        Trigger::Birthday,
        Trigger::OrderStatus,
        Trigger::NextPurchase,
        Trigger::SegmentEntered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Trigger::CartAbandoned => "cart_abandoned",
            Trigger::Welcome => "welcome",
            Trigger::OaFollowed => "oa_followed",
            Trigger::Birthday => "birthday",
            Trigger::OrderStatus => "order_status",
            Trigger::NextPurchase => "next_purchase",
            Trigger::SegmentEntered => "segment_entered",
        }
    }

    /// The variables its template may use, beyond the profile's ([`PROFILE_VARIABLES`]).
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Trigger::CartAbandoned => cart::VARIABLES,
            Trigger::OrderStatus => order::VARIABLES,
            Trigger::SegmentEntered => audience::VARIABLES,
            Trigger::Welcome => profile::WELCOME_VARIABLES,
            Trigger::OaFollowed => profile::OA_FOLLOWED_VARIABLES,
            Trigger::Birthday => profile::BIRTHDAY_VARIABLES,
            Trigger::NextPurchase => profile::NEXT_PURCHASE_VARIABLES,
        }
    }
}

/// Variables every template may use, filled from the profile when the campaign runs.
pub const PROFILE_VARIABLES: &[&str] = &["name", "user_key", "points_balance", "orders", "campaign"];

/// One trigger that happened to one user, ready for its campaigns.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub app: String,
    pub user: String,
    pub trigger: Trigger,
    /// Stable across replays: the same occurrence read twice has the same id, so it is decided
    /// once.
    pub id: String,
    /// When it happened (event time): for the age check and the profile wait.
    pub at: i64,
    /// The trigger's template variables ([`Trigger::variables`]).
    pub vars: Map<String, Value>,
    /// For `segment_entered`: the segment entered.
    pub segment: Option<String>,
    /// Who vouched for what started it: an order's own `trust`; what zcdp derived (carts,
    /// profiles, segments) is the server's.
    pub trust: schemas::event::Trust,
}

/// Longest text a variable takes from an event, in characters: free text (an order's status, a
/// product's name) goes into messages the shop pays for and signs.
pub const MAX_VARIABLE_CHARS: usize = 100;

/// A JSON object literal as template variables, each text cut to [`MAX_VARIABLE_CHARS`].
fn vars(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) if s.chars().count() > MAX_VARIABLE_CHARS => {
                    (k, Value::String(s.chars().take(MAX_VARIABLE_CHARS).collect()))
                }
                v => (k, v),
            })
            .collect(),
        _ => Map::new(),
    }
}

/// 350000 → "350.000" (Vietnamese thousands separator).
pub fn vnd(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::derived::{AudienceChange, CartTrigger, Profile};
    use schemas::event::InputEvent;
    use schemas::time::DAY_MS;

    fn names(o: &Occurrence) -> Vec<&str> {
        let mut v: Vec<&str> = o.vars.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn sorted(v: &[&'static str]) -> Vec<&'static str> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    /// A template that campaigns.rs accepts renders every variable it names: each kind fills
    /// exactly the variables it declares.
    #[test]
    fn every_kind_fills_the_variables_it_declares() {
        let cart = cart::occurrence(&CartTrigger { trigger_id: "t".into(), ..Default::default() });
        assert_eq!(names(&cart), sorted(Trigger::CartAbandoned.variables()));
        let InputEvent::Order(o) = schemas::testing::build::order("u", 1, "o1", None, 350_000) else { unreachable!() };
        let order = order::occurrence(&o);
        assert_eq!(order.vars["order_total"], "350.000");
        assert_eq!(names(&order), sorted(Trigger::OrderStatus.variables()));
        let audience = audience::occurrence(&AudienceChange { member: true, segment: "vip".into(), ..Default::default() }).unwrap();
        assert_eq!(names(&audience), sorted(Trigger::SegmentEntered.variables()));
        let now = 1_795_402_800_000;
        let p = Profile {
            sessions: 1,
            first_seen: now,
            oa_following: true,
            oa_followed_at: Some(now),
            next_purchase_expected: Some(now),
            ..Default::default()
        };
        let immediate = profile::immediate(&p, "u", now, DAY_MS);
        assert_eq!(immediate.iter().map(|o| o.trigger).collect::<Vec<_>>(), vec![Trigger::Welcome, Trigger::OaFollowed]);
        for o in immediate {
            assert_eq!(names(&o), sorted(o.trigger.variables()), "{:?}", o.trigger);
        }
        let birthday = profile::on_timer(profile::ProfileTimer::Birthday, now, &p, "u").unwrap();
        assert_eq!(names(&birthday), sorted(Trigger::Birthday.variables()));
        let next = profile::on_timer(profile::ProfileTimer::NextPurchase, now, &p, "u").unwrap();
        assert_eq!(names(&next), sorted(Trigger::NextPurchase.variables()));
    }

    /// Occurrence ids are what the sink dedups by across restarts (they are in every
    /// `zmp.messages.v1` record): a new formula would act on every recent trigger again after an
    /// upgrade. Pinned to the values of the first release.
    #[test]
    fn occurrence_ids_do_not_change() {
        let now = 1_795_402_800_000;
        let p = Profile {
            app_id: "demo".into(),
            sessions: 1,
            first_seen: now,
            oa_following: true,
            oa_followed_at: Some(now),
            next_purchase_expected: Some(now),
            ..Default::default()
        };
        let ids: Vec<String> = profile::immediate(&p, "u", now, DAY_MS).into_iter().map(|o| o.id).collect();
        assert_eq!(ids, ["a077abb4b87acb76b75c18c8322edd89", "e6eef3d6a22d807d0a878177e3f5d343"]);
        assert_eq!(profile::on_timer(profile::ProfileTimer::Birthday, now, &p, "u").unwrap().id, "578c7c9c1d5d01b98a5cd707f443336b");
        assert_eq!(profile::on_timer(profile::ProfileTimer::NextPurchase, now, &p, "u").unwrap().id, "bd0bd7e7bb4b56d8df0faeb912ca9377");
        let a = AudienceChange {
            app_id: "demo".into(),
            user_key: "u".into(),
            segment: "vip".into(),
            member: true,
            at: now,
            ..Default::default()
        };
        assert_eq!(audience::occurrence(&a).unwrap().id, "c3cbd799077090d272c273c9bdbaf4e8");
        assert_eq!(audience::occurrence(&AudienceChange { member: false, ..a }), None, "leaving a segment starts nothing");
    }

    #[test]
    fn free_text_in_a_message_is_cut_short() {
        let InputEvent::Order(mut o) = schemas::testing::build::order("u", 1, "o1", None, 1) else { unreachable!() };
        o.kind = schemas::event::OrderType::OrderStatusChanged;
        o.properties.status = Some("Nhấn vào đây ".repeat(50));
        let v = order::occurrence(&o).vars;
        assert_eq!(v["order_status"].as_str().unwrap().chars().count(), MAX_VARIABLE_CHARS);
    }

    #[test]
    fn money_in_vietnamese() {
        assert_eq!(vnd(350_000), "350.000");
        assert_eq!(vnd(1_250_000), "1.250.000");
        assert_eq!(vnd(999), "999");
        assert_eq!(vnd(-1_000), "-1.000");
    }
}
