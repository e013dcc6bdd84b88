//! The profile rules of docs/profiles.md, case by case, through the processor.

use super::*;
use crate::runtime::processor::Output;
use crate::runtime::timers::Timers;
use schemas::derived::Profile;
use schemas::testing::build::{cart_add, order, page};
use schemas::time::{DAY_MS, vn_day};

const D: i64 = DAY_MS;
/// 2026-01-01T00:00:00+07:00.
const T0: i64 = 1_767_200_400_000;
const GAP: i64 = 30 * 60 * 1000;

struct Harness {
    _dir: tempfile::TempDir,
    db: TaskDb,
    timers: Timers,
    outputs: Vec<Output>,
    profiles: Profiles,
}

impl Harness {
    fn new() -> Harness {
        Self::with_segments(Segments::default())
    }

    fn with_segments(segments: Segments) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &[STORE]).unwrap();
        let profiles = Profiles::new(GAP, 3600 * 1000, crate::segments::Source::Fixed(Arc::new(segments)));
        Harness { _dir: dir, db, timers: Timers::default(), outputs: Vec::new(), profiles }
    }

    /// The audience changes emitted so far, as (segment, member, at), and forgets them.
    fn audience(&mut self) -> Vec<(String, bool, i64)> {
        let mut out = Vec::new();
        self.outputs.retain(|o| {
            if o.topic != schemas::topics::Topic::Audiences {
                return true;
            }
            let c = schemas::codec::decode::<AudienceChange>(o.payload.as_ref().unwrap()).unwrap();
            assert_eq!(o.key, c.key());
            out.push((c.segment, c.member, c.at));
            false
        });
        out
    }

    /// Fires the timers due by `t` (as the task does when its stream time passes them),
    /// then processes the event.
    fn feed(&mut self, e: InputEvent) {
        self.advance(e.time());
        let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: 0, task: 0 };
        self.profiles.process(&mut ctx, &e).unwrap();
    }

    fn advance(&mut self, to: i64) {
        while let Some(t) = self.timers.pop_due(to) {
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: 0, task: 0 };
            self.profiles.on_timer(&mut ctx, &t.key, t.deadline).unwrap();
        }
    }

    /// Commits, and returns the profile the commit emitted for `user`.
    fn profile(&mut self, user: &str) -> Profile {
        let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: 0, task: 0 };
        self.profiles.before_commit(&mut ctx).unwrap();
        let mut changes = Vec::new();
        self.profiles.take_dirty(&mut changes).unwrap();
        self.db.write(&changes, None, false).unwrap();
        let out = self
            .outputs
            .drain(..)
            .rfind(|o| o.key == schemas::topics::app_user_key("demo", user) && o.topic == schemas::topics::Topic::Profiles)
            .expect("a profile was emitted");
        schemas::codec::decode::<Profile>(out.payload.as_ref().expect("not a tombstone")).unwrap()
    }
}

fn with_context(mut e: InputEvent, source: &str, campaign: &str) -> InputEvent {
    if let InputEvent::View(v) = &mut e {
        v.context.utm_source = Some(source.into());
        v.context.utm_campaign = Some(campaign.into());
    }
    e
}

fn identity(user: &str, anonymous: Option<&str>, t: i64, kind: IdentityType, properties: IdentityProperties) -> InputEvent {
    InputEvent::Identity(IdentityEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        app_id: "demo".into(),
        kind,
        user: User { key: user.into(), zalo_id: Some(user.into()), anonymous_id: anonymous.map(Into::into), oa_user_id: None },
        event_time: t,
        sent_at: None,
        received_at: t,
        corrected_time: t,
        clock_skew_ms: 0,
        future_clamped: false,
        stale: false,
        context: Context::default(),
        properties,
        trust: Trust::Server,
    })
}

fn consent(user: &str, t: i64, purpose: &str, granted: bool) -> InputEvent {
    let p = IdentityProperties {
        purpose: Some(purpose.into()),
        granted: Some(granted),
        policy_version: Some("2026-09".into()),
        ..Default::default()
    };
    identity(user, None, t, IdentityType::ConsentChanged, p)
}

fn identify(user: &str, t: i64, name: &str, phone: &str) -> InputEvent {
    let p = IdentityProperties {
        traits: Some(Traits { name: Some(name.into()), birthday: Some("1990-11-02".into()), ..Default::default() }),
        phone: Some(phone.into()),
        ..Default::default()
    };
    identity(user, Some("anon-7"), t, IdentityType::Identify, p)
}

fn cancel(user: &str, t: i64, id: &str) -> InputEvent {
    let InputEvent::Order(mut o) = order(user, t, id, None, 0) else { unreachable!() };
    o.kind = OrderType::OrderCancelled;
    o.properties.total = None;
    InputEvent::Order(o)
}

#[test]
fn rfm_scores_order_value_and_next_purchase_from_a_known_history() {
    let mut h = Harness::new();
    h.feed(order("u", T0, "o1", None, 200_000));
    h.feed(order("u", T0 + 10 * D, "o2", None, 300_000));
    let p = h.profile("u");
    assert_eq!((p.orders, p.revenue, p.average_order_value), (2, 500_000, 250_000));
    // Two orders: no estimate, and the profile says why.
    assert_eq!((p.next_purchase_expected, p.next_purchase_basis.as_str()), (None, "too_little_history"));
    assert_eq!((p.recency_score, p.frequency_score, p.monetary_score), (5, 2, 2));

    h.feed(order("u", T0 + 20 * D, "o3", None, 500_000));
    let p = h.profile("u");
    // 1,000,000 VND over 3 orders; intervals 10 and 10 days: the next is due 10 days after the last.
    assert_eq!((p.orders, p.revenue, p.average_order_value), (3, 1_000_000, 333_333));
    assert_eq!((p.recency_score, p.frequency_score, p.monetary_score), (5, 3, 3));
    assert_eq!(p.next_purchase_expected, Some(T0 + 30 * D));
    assert_eq!(p.next_purchase_basis, "mean_interval_of_last_3_orders");

    // Recency falls as days pass without an order: 4 from day 7 after it, 3 from day 30.
    h.advance(T0 + 27 * D);
    assert_eq!(h.profile("u").recency_score, 4);
    h.advance(T0 + 50 * D);
    let p = h.profile("u");
    assert_eq!((p.recency_score, p.as_of), (3, T0 + 50 * D));

    // A cancelled order leaves the counts, the revenue and the estimate.
    h.feed(cancel("u", T0 + 51 * D, "o2"));
    let p = h.profile("u");
    assert_eq!((p.orders, p.revenue, p.frequency_score, p.monetary_score), (2, 700_000, 2, 2));
    assert_eq!(p.next_purchase_expected, None);
    assert_eq!(frequency_score(10), 5);
    assert_eq!(monetary_score(10_000_000), 5);
    assert_eq!(monetary_score(299_999), 1);
    assert_eq!(recency_score(None, T0), 1);
}

#[test]
fn lifecycle_moves_over_simulated_weeks_without_new_events() {
    let mut h = Harness::new();
    h.feed(page("u", T0));
    assert_eq!(h.profile("u").lifecycle, "new");
    // A week later, by the timer alone.
    h.advance(T0 + 7 * D);
    let p = h.profile("u");
    assert_eq!((p.lifecycle.as_str(), p.as_of), ("active", T0 + 7 * D));
    for (i, day) in [8, 9, 10].into_iter().enumerate() {
        h.feed(order("u", T0 + day * D, &format!("o{i}"), None, 100_000));
    }
    assert_eq!(h.profile("u").lifecycle, "loyal");
    // Quiet for 30 days: at risk; for 90: churned.
    h.advance(T0 + 40 * D - 1);
    assert_eq!(h.profile("u").lifecycle, "loyal");
    h.advance(T0 + 40 * D);
    assert_eq!(h.profile("u").lifecycle, "at_risk");
    h.advance(T0 + 100 * D);
    assert_eq!(h.profile("u").lifecycle, "churned");
    // Back after a month or more away: returning for 30 days, then active.
    h.feed(page("v", T0));
    h.feed(order("v", T0 + D, "v1", None, 50_000));
    h.feed(page("v", T0 + 45 * D));
    let p = h.profile("v");
    assert_eq!((p.lifecycle.as_str(), p.sessions), ("returning", 3));
    h.feed(page("v", T0 + 60 * D));
    h.advance(T0 + 75 * D);
    assert_eq!(h.profile("v").lifecycle, "active");
    // A loyal customer who comes back is loyal again (loyal ranks above returning).
    h.feed(page("u", T0 + 130 * D));
    assert_eq!(h.profile("u").lifecycle, "loyal");
}

#[test]
fn sessions_active_days_and_funnel_stage() {
    let mut h = Harness::new();
    h.feed(page("u", T0));
    h.feed(page("u", T0 + 10 * 60 * 1000)); // same session
    h.feed(page("u", T0 + 2 * 3600 * 1000)); // a new one, same day
    let p = h.profile("u");
    assert_eq!((p.sessions, p.active_days, p.funnel_stage.as_str()), (2, 1, "awareness"));
    h.feed(cart_add("u", T0 + D, "c1", "p1", 1, 35_000));
    let p = h.profile("u");
    assert_eq!((p.sessions, p.active_days, p.funnel_stage.as_str()), (3, 2, "consideration"));
    h.feed(order("u", T0 + D + 60_000, "o1", Some("c1"), 35_000));
    assert_eq!(h.profile("u").funnel_stage, "purchase");
    h.feed(order("u", T0 + 2 * D, "o2", None, 35_000));
    assert_eq!(h.profile("u").funnel_stage, "retention");
    let InputEvent::View(mut share) = page("u", T0 + 3 * D) else { unreachable!() };
    share.kind = ViewType::ProductShared;
    h.feed(InputEvent::View(share));
    assert_eq!(h.profile("u").funnel_stage, "advocacy");
    // A late event (earlier than the last) on a new day still counts that day once.
    h.feed(page("u", T0 - D));
    h.feed(page("u", T0 - D + 1000));
    let p = h.profile("u");
    assert_eq!(p.active_days, 5);
    // First day is now T0 - 1 day: active on its next day (T0), not on its 7th or 30th.
    assert_eq!((p.active_on_day1, p.active_on_day7, p.active_on_day30), (true, false, false));
    let d0 = vn_day(T0);
    assert_eq!(p.recent_active_days, vec![d0 - 1, d0, d0 + 1, d0 + 2, d0 + 3]);
    h.feed(page("u", T0 + 6 * D));
    let p = h.profile("u");
    assert_eq!((p.active_on_day1, p.active_on_day7, p.active_on_day30), (true, true, false));
    // Thirty days on, only the last 30 days are listed.
    h.feed(page("u", T0 + 40 * D));
    assert_eq!(h.profile("u").recent_active_days, vec![d0 + 40]);
}

#[test]
fn first_and_last_touch_are_credited_with_the_orders_after_them() {
    let mut h = Harness::new();
    h.feed(page("u", T0)); // no campaign
    h.feed(with_context(page("u", T0 + 1000), "zalo_oa", "tet"));
    h.feed(order("u", T0 + D, "o1", None, 100_000));
    h.feed(with_context(page("u", T0 + 2 * D), "facebook", "sale"));
    h.feed(order("u", T0 + 3 * D, "o2", None, 250_000));
    let p = h.profile("u");
    let (first, last) = (p.first_touch.unwrap(), p.last_touch.unwrap());
    assert_eq!((first.utm_campaign.as_deref(), first.at, first.conversions, first.revenue), (Some("tet"), T0 + 1000, 2, 350_000));
    assert_eq!((last.utm_campaign.as_deref(), last.at, last.conversions, last.revenue), (Some("sale"), T0 + 2 * D, 1, 250_000));
}

#[test]
fn traits_and_phone_are_kept_only_while_consented() {
    let mut h = Harness::new();
    h.feed(identify("u", T0, "Lan", "84901234567"));
    let p = h.profile("u");
    assert_eq!((p.name, p.phone), (None, None));
    assert_eq!(p.anonymous_ids, vec!["anon-7".to_string()]);
    h.feed(consent("u", T0 + 1, PURPOSE_PROFILE, true));
    h.feed(consent("u", T0 + 2, PURPOSE_PHONE, true));
    h.feed(identify("u", T0 + 3, "Lan", "84901234567"));
    let p = h.profile("u");
    assert_eq!((p.name.as_deref(), p.birthday.as_deref(), p.phone.as_deref()), (Some("Lan"), Some("1990-11-02"), Some("84901234567")));
    assert_eq!(p.consents.len(), 2);
    h.feed(consent("u", T0 + 4, PURPOSE_PROFILE, false));
    let p = h.profile("u");
    assert_eq!((p.name, p.birthday, p.phone.as_deref()), (None, None, Some("84901234567")));
    assert!(!p.consents.iter().find(|c| c.purpose == PURPOSE_PROFILE).unwrap().granted);
    h.feed(consent("u", T0 + 5, PURPOSE_PHONE, false));
    assert_eq!(h.profile("u").phone, None);
}

#[test]
fn segments_are_entered_and_left_by_events_time_and_consent() {
    let mut h = Harness::with_segments(Segments::load(None).unwrap());
    let name = |v: &[(String, bool, i64)]| v.iter().map(|(s, m, t)| (s.clone(), *m, *t)).collect::<Vec<_>>();
    h.feed(cart_add("u", T0, "c1", "p1", 1, 35_000));
    // New at once; no marketing consent, so no marketing segment.
    assert_eq!(name(&h.audience()), vec![("new_first_week".to_string(), true, T0)]);
    h.feed(consent("u", T0 + 1000, "marketing", true));
    // Consent alone enters nothing: no product viewed, the cart not abandoned yet.
    assert_eq!(h.audience(), vec![]);
    // The cart is abandoned an hour after its last activity (the cart timeout): in for 24 h.
    h.advance(T0 + 3600 * 1000);
    assert_eq!(h.audience(), vec![("cart_abandoned_24h".to_string(), true, T0 + 3600 * 1000)]);
    h.advance(T0 + 25 * 3600 * 1000);
    assert_eq!(h.audience(), vec![("cart_abandoned_24h".to_string(), false, T0 + 25 * 3600 * 1000)]);
    // A product view enters the "viewed, no order" segment; revoking consent leaves it.
    h.feed(schemas::testing::build::product_view("u", T0 + 2 * D, "p1", "coffee", 1000));
    assert_eq!(h.audience(), vec![("viewed_no_order_7d".to_string(), true, T0 + 2 * D)]);
    h.feed(consent("u", T0 + 2 * D + 1000, "marketing", false));
    assert_eq!(h.audience(), vec![("viewed_no_order_7d".to_string(), false, T0 + 2 * D + 1000)]);
    // Seven days after the first event, no longer new.
    h.advance(T0 + 7 * D);
    assert_eq!(h.audience(), vec![("new_first_week".to_string(), false, T0 + 7 * D)]);
    // An order of 3,500,000 VND: high value.
    h.feed(order("u", T0 + 8 * D, "o1", None, 3_500_000));
    assert_eq!(h.audience(), vec![("high_value".to_string(), true, T0 + 8 * D)]);
}

#[test]
fn a_forgotten_user_leaves_every_segment_and_their_profile_is_tombstoned() {
    let mut h = Harness::with_segments(Segments::load(None).unwrap());
    h.feed(consent("u", T0, "marketing", true));
    h.feed(schemas::testing::build::product_view("u", T0 + 1000, "p1", "coffee", 1000));
    let mut entered: Vec<String> = h.audience().into_iter().map(|(s, _, _)| s).collect();
    entered.sort();
    assert_eq!(entered, vec!["new_first_week", "viewed_no_order_7d"]);
    h.profile("u");
    h.feed(schemas::event::forget_request("demo", "u", T0 + 2000));
    let mut ctx = Ctx { db: &h.db, timers: &mut h.timers, outputs: &mut h.outputs, kind: 0, task: 0 };
    h.profiles.before_commit(&mut ctx).unwrap();
    let mut got: Vec<(schemas::topics::Topic, String, bool)> =
        h.outputs.iter().map(|o| (o.topic, o.key.clone(), o.payload.is_none())).collect();
    got.sort();
    use schemas::topics::Topic::{Audiences, Consents, Profiles};
    // Tombstones only, under keys that name the app: the profile, the user's key in each
    // segment they were in, and their consent decisions (zmp.consents.v1, which the gateways'
    // consent views are rebuilt from).
    let mut want = vec![(Profiles, "demo/u".into(), true)];
    for segment in ["new_first_week", "viewed_no_order_7d"] {
        want.push((Audiences, format!("demo/{segment}/u"), true));
    }
    for purpose in ["analytics", "marketing", "personalization", "phone", "profile"] {
        want.push((Consents, format!("demo/u/{purpose}"), true));
    }
    want.sort();
    assert_eq!(got, want);
    // The store keeps nothing of the user.
    let mut changes = Vec::new();
    h.profiles.take_dirty(&mut changes).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].value, None);
}

#[test]
fn birthday_segment_follows_the_calendar_month() {
    let mut h = Harness::with_segments(Segments::load(None).unwrap());
    for (i, purpose) in ["profile", "phone", "marketing"].into_iter().enumerate() {
        h.feed(consent("u", T0 + i as i64, purpose, true));
    }
    // Born 2 November; it is 1 January: not this month.
    h.feed(identify("u", T0 + 10, "Lan", "84901234567"));
    let in_birthday = |v: Vec<(String, bool, i64)>| v.into_iter().filter(|(s, _, _)| s == "birthday_this_month").collect::<Vec<_>>();
    assert_eq!(in_birthday(h.audience()), vec![]);
    // 1 November (Vietnam time) comes with no event: in; 1 December: out.
    let nov1 = 1_793_466_000_000; // 2026-11-01T00:00:00+07:00
    let dec1 = nov1 + 30 * D;
    h.feed(page("u", nov1 - D));
    h.advance(dec1 + D);
    assert_eq!(
        in_birthday(h.audience()),
        vec![("birthday_this_month".to_string(), true, nov1), ("birthday_this_month".to_string(), false, dec1)]
    );
}

#[test]
fn oa_follow_status_and_last_interaction() {
    let mut h = Harness::new();
    h.feed(identity("u", None, T0, IdentityType::OaFollowed, IdentityProperties::default()));
    h.feed(identity("u", None, T0 + D, IdentityType::OaInteracted, IdentityProperties::default()));
    let p = h.profile("u");
    assert_eq!((p.oa_following, p.oa_followed_at, p.oa_last_interaction), (true, Some(T0), Some(T0 + D)));
    h.feed(identity("u", None, T0 + 2 * D, IdentityType::OaUnfollowed, IdentityProperties::default()));
    assert!(!h.profile("u").oa_following);
}

/// Money that cannot wrap (issue 19): an order whose lines are worth more than an i64 holds
/// (10⁶ items at 10¹³ VND, both at the gateway's bounds) saturates, where it used to panic in a
/// debug build (stopping the member) and wrap negative in a release build; so does the revenue
/// after it, and a cancellation takes back exactly its own total.
#[test]
fn order_values_past_what_an_i64_holds_saturate() {
    let mut h = Harness::new();
    let mut huge = order("u", T0, "o1", None, 0);
    if let InputEvent::Order(o) = &mut huge {
        o.properties.total = None;
        o.properties.items = vec![Item { product_id: "p".into(), quantity: 1_000_000, price: 10_000_000_000_000, ..Default::default() }];
    }
    h.feed(huge);
    h.feed(order("u", T0 + D, "o2", None, 10_000_000_000_000));
    let p = h.profile("u");
    assert_eq!((p.orders, p.revenue), (2, i64::MAX));
    assert!(p.average_order_value > 0);
    h.feed(cancel("u", T0 + 2 * D, "o2"));
    assert_eq!(h.profile("u").revenue, i64::MAX - 10_000_000_000_000);
}

/// Segments as data (issue 22): a segment an admin defines, pauses and removes while the member
/// runs is applied to every user of the task at the next commit — entries on definition, none
/// while paused, exits on removal — without their next event.
#[test]
fn segments_defined_paused_and_removed_live_are_applied_at_the_next_commit() {
    use schemas::derived::Definition;
    use sinks::definitions::{Catalog, SEGMENT};
    let catalog = Arc::new(Catalog::default());
    let dir = tempfile::tempdir().unwrap();
    let db = TaskDb::open(dir.path(), &[STORE]).unwrap();
    let source = crate::segments::Source::Live(Arc::new(crate::segments::LiveSegments::new(catalog.clone())));
    let mut h =
        Harness { _dir: dir, db, timers: Timers::default(), outputs: Vec::new(), profiles: Profiles::new(GAP, 3600 * 1000, source) };
    h.feed(order("buyer", T0, "o1", None, 100_000));
    h.feed(page("browser", T0));
    h.profile("buyer");
    assert!(h.audience().is_empty(), "no segment defined yet");
    let def = |version: i64, paused: bool, min_orders: i64| Definition {
        app_id: "demo".into(),
        kind: SEGMENT.into(),
        name: "buyers".into(),
        version,
        paused,
        definition: serde_json::json!({"name": "buyers", "when": [{"fact": "orders", "op": ">=", "value": min_orders}]}).to_string(),
        updated_at: T0,
        updated_by: "admin".into(),
    };
    let commit = |h: &mut Harness| {
        let mut ctx = Ctx { db: &h.db, timers: &mut h.timers, outputs: &mut h.outputs, kind: 0, task: 0 };
        h.profiles.before_commit(&mut ctx).unwrap();
        let mut changes = Vec::new();
        h.profiles.take_dirty(&mut changes).unwrap();
        h.db.write(&changes, None, false).unwrap();
    };
    // Defined: the buyer enters at the next commit, the browser does not.
    let d = def(1, false, 1);
    catalog.apply(&d.key(), Some(d));
    commit(&mut h);
    assert_eq!(h.audience(), vec![("buyers".to_string(), true, T0)]);
    // Paused and changed to need two orders: nobody leaves or enters while paused.
    let d = def(2, true, 2);
    catalog.apply(&d.key(), Some(d));
    commit(&mut h);
    assert!(h.audience().is_empty(), "paused: members stay as they were");
    // Resumed: the buyer (one order) no longer holds, and leaves.
    let d = def(3, false, 2);
    catalog.apply(&d.key(), Some(d));
    commit(&mut h);
    assert_eq!(h.audience(), vec![("buyers".to_string(), false, T0)]);
    // Back to one order, then removed: in, then out.
    let d = def(4, false, 1);
    catalog.apply(&d.key(), Some(d.clone()));
    commit(&mut h);
    assert_eq!(h.audience(), vec![("buyers".to_string(), true, T0)]);
    catalog.apply(&d.key(), None);
    commit(&mut h);
    assert_eq!(h.audience(), vec![("buyers".to_string(), false, T0)], "a segment removed lets its members go");
    // Nothing changed: a commit re-evaluates nobody.
    commit(&mut h);
    assert!(h.audience().is_empty());
}
