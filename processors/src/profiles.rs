//! Customer profiles: one per user, from every input topic, to the compacted `zmp.profiles.v1`
//! (key = user key) at each commit for the users that changed. Every definition — RFM
//! thresholds, lifecycle and funnel stages, the next-purchase estimate, attribution — is in
//! docs/profiles.md; the constants below are those numbers.
//!
//! Stages that change with time alone (a quiet user becomes at risk, then churned; recency falls)
//! have a timer at the next boundary, so a profile changes without a new event. Everything is
//! evaluated at an event time or a timer deadline, never the wall clock: a replay gives the same
//! profiles.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use schemas::derived::{AudienceChange, Consent, Profile, Touch};
use schemas::event::*;

use crate::processor::{Ctx, Processor, split_user_key, user_key};
use crate::segments::{Facts, Segments, Since};
use crate::store::{Change, KvCache, TaskDb};

pub const STORE: &str = "profiles";

pub const DAY_MS: i64 = 24 * 3600 * 1000;
/// Vietnam's offset from UTC (no daylight saving): days are counted in Asia/Ho_Chi_Minh.
const VN_OFFSET_MS: i64 = 7 * 3600 * 1000;

/// A user is new for this long after their first event.
pub const NEW_FOR_MS: i64 = 7 * DAY_MS;
/// Without an event for this long a user is at risk…
pub const AT_RISK_AFTER_MS: i64 = 30 * DAY_MS;
/// …and for this long, churned.
pub const CHURNED_AFTER_MS: i64 = 90 * DAY_MS;
/// A user who comes back after at least `AT_RISK_AFTER_MS` away is returning for this long.
pub const RETURNING_FOR_MS: i64 = 30 * DAY_MS;
/// Orders (net of cancellations) that make an active user loyal.
pub const LOYAL_ORDERS: i64 = 3;
/// Recency score 5, 4, 3, 2 while the last order is younger than these; 1 after, or without one.
pub const RECENCY_DAYS: [i64; 4] = [7, 30, 90, 180];
/// Frequency score 5, 4, 3, 2 from at least these many orders; 1 below.
pub const FREQUENCY_ORDERS: [i64; 4] = [10, 5, 3, 2];
/// Monetary score 5, 4, 3, 2 from at least this revenue (VND); 1 below.
pub const MONETARY_VND: [i64; 4] = [10_000_000, 3_000_000, 1_000_000, 300_000];
/// Orders needed before a next purchase is estimated (two intervals between them).
pub const NEXT_PURCHASE_MIN_ORDERS: usize = 3;

/// Bounds on what a profile remembers in detail (the counters are exact regardless).
const KEEP_ANONYMOUS_IDS: usize = 20;
const KEEP_ORDERS: usize = 100;
const KEEP_ORDER_TIMES: usize = 20;
const KEEP_DAYS: usize = 400;
const KEEP_CATEGORIES: usize = 30;
/// Days of activity a profile record lists (for DAU, WAU and MAU).
pub const RECENT_DAYS: i64 = 30;
/// Retention is reported for these days after the first day.
pub const RETENTION_DAYS: [i64; 3] = [1, 7, 30];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ConsentState {
    granted: bool,
    at: i64,
    policy_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct OrderState {
    at: i64,
    total: i64,
    /// What cancellations and refunds took back.
    taken_back: i64,
    cancelled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ProfileState {
    zalo_id: Option<String>,
    oa_user_id: Option<String>,
    anonymous_ids: Vec<String>,
    consents: BTreeMap<String, ConsentState>,
    name: Option<String>,
    gender: Option<String>,
    birthday: Option<String>,
    phone: Option<String>,
    oa_following: bool,
    oa_followed_at: Option<i64>,
    oa_last_interaction: Option<i64>,
    first_seen: i64,
    last_seen: i64,
    /// Evaluation time: the latest event or passed timer deadline.
    as_of: i64,
    returned_at: Option<i64>,
    sessions: i64,
    active_days: i64,
    /// The most recent active days (day numbers in Vietnam time), ascending.
    days: Vec<i64>,
    /// Active on the 1st, 7th, 30th day after `retained_from` (the first day): kept apart from
    /// `days`, which forgets its oldest entries.
    retained: [bool; 3],
    retained_from: i64,
    orders: i64,
    revenue: i64,
    /// Recent orders by id, for cancellations and refunds.
    recent_orders: BTreeMap<String, OrderState>,
    /// Times of the recent orders not cancelled, ascending.
    order_times: Vec<i64>,
    last_order_at: Option<i64>,
    product_views: i64,
    cart_adds: i64,
    checkouts: i64,
    shares: i64,
    reviews: i64,
    referrals: i64,
    vouchers_claimed: i64,
    vouchers_used: i64,
    points_earned: i64,
    points_redeemed: i64,
    first_touch: Option<Touch>,
    last_touch: Option<Touch>,
    last_product_view: Option<i64>,
    /// Last view per category (the 30 most recent categories).
    category_views: Vec<(String, i64)>,
    last_cart_activity: Option<i64>,
    /// The segments the user is in, sorted.
    segments: Vec<String>,
}

fn granted(s: &ProfileState, purpose: &str) -> bool {
    s.consents.get(purpose).is_some_and(|c| c.granted)
}

/// The day number of a time, in Vietnam.
pub fn vn_day(t: i64) -> i64 {
    (t + VN_OFFSET_MS).div_euclid(DAY_MS)
}

pub fn recency_score(last_order_at: Option<i64>, at: i64) -> i32 {
    let Some(last) = last_order_at else { return 1 };
    let age = at - last;
    match RECENCY_DAYS.iter().position(|d| age < d * DAY_MS) {
        Some(i) => 5 - i as i32,
        None => 1,
    }
}

fn score_from(value: i64, thresholds: &[i64; 4]) -> i32 {
    match thresholds.iter().position(|t| value >= *t) {
        Some(i) => 5 - i as i32,
        None => 1,
    }
}

pub fn frequency_score(orders: i64) -> i32 {
    score_from(orders, &FREQUENCY_ORDERS)
}

pub fn monetary_score(revenue: i64) -> i32 {
    score_from(revenue, &MONETARY_VND)
}

fn lifecycle(s: &ProfileState, at: i64) -> &'static str {
    let away = at - s.last_seen;
    if away >= CHURNED_AFTER_MS {
        "churned"
    } else if away >= AT_RISK_AFTER_MS {
        "at_risk"
    } else if at - s.first_seen < NEW_FOR_MS {
        "new"
    } else if s.orders >= LOYAL_ORDERS {
        "loyal"
    } else if s.returned_at.is_some_and(|r| at - r < RETURNING_FOR_MS) {
        "returning"
    } else {
        "active"
    }
}

fn funnel_stage(s: &ProfileState) -> &'static str {
    if s.orders >= 1 && s.shares + s.reviews + s.referrals > 0 {
        "advocacy"
    } else if s.orders >= 2 {
        "retention"
    } else if s.orders >= 1 {
        "purchase"
    } else if s.cart_adds + s.checkouts > 0 {
        "consideration"
    } else {
        "awareness"
    }
}

/// Last order + the mean interval between the recent orders, with at least
/// `NEXT_PURCHASE_MIN_ORDERS` of them; otherwise none, and why.
fn next_purchase(s: &ProfileState) -> (Option<i64>, String) {
    let t = &s.order_times;
    if t.len() < NEXT_PURCHASE_MIN_ORDERS {
        return (None, "too_little_history".into());
    }
    let (first, last) = (t[0], t[t.len() - 1]);
    let mean = (last - first) / (t.len() as i64 - 1);
    (Some(last + mean), format!("mean_interval_of_last_{}_orders", t.len()))
}

/// The next time the profile changes with time alone, after `at`: a lifecycle or recency
/// boundary, or one of `more` (the segments' rules).
fn next_change(s: &ProfileState, at: i64, more: &[i64]) -> Option<i64> {
    let mut candidates = vec![s.first_seen + NEW_FOR_MS, s.last_seen + AT_RISK_AFTER_MS, s.last_seen + CHURNED_AFTER_MS];
    candidates.extend_from_slice(more);
    if let Some(r) = s.returned_at {
        candidates.push(r + RETURNING_FOR_MS);
    }
    if let Some(o) = s.last_order_at {
        candidates.extend(RECENCY_DAYS.iter().map(|d| o + d * DAY_MS));
    }
    candidates.into_iter().filter(|c| *c > at).min()
}

fn touch_of(ctx: &Context, t: i64) -> Option<Touch> {
    if ctx.utm_source.is_none() && ctx.utm_campaign.is_none() && ctx.affiliate_id.is_none() {
        return None;
    }
    Some(Touch {
        utm_source: ctx.utm_source.clone(),
        utm_medium: ctx.utm_medium.clone(),
        utm_campaign: ctx.utm_campaign.clone(),
        affiliate_id: ctx.affiliate_id.clone(),
        at: t,
        conversions: 0,
        revenue: 0,
    })
}

fn same_campaign(a: &Touch, b: &Touch) -> bool {
    (&a.utm_source, &a.utm_medium, &a.utm_campaign, &a.affiliate_id) == (&b.utm_source, &b.utm_medium, &b.utm_campaign, &b.affiliate_id)
}

impl ProfileState {
    /// What every event does: identity, times, sessions, days, attribution.
    fn seen(&mut self, event: &InputEvent, session_gap_ms: i64) {
        let t = event.time();
        let user = event.user();
        if user.zalo_id.is_some() {
            self.zalo_id.clone_from(&user.zalo_id);
        }
        if user.oa_user_id.is_some() {
            self.oa_user_id.clone_from(&user.oa_user_id);
        }
        if self.first_seen == 0 && self.last_seen == 0 {
            self.first_seen = t;
            self.last_seen = t;
            self.sessions = 1;
        } else {
            if t - self.last_seen >= AT_RISK_AFTER_MS {
                self.returned_at = Some(t);
            }
            if t - self.last_seen > session_gap_ms {
                self.sessions += 1;
            }
            self.first_seen = self.first_seen.min(t);
            self.last_seen = self.last_seen.max(t);
        }
        self.as_of = self.as_of.max(t);
        let day = vn_day(t);
        if let Err(i) = self.days.binary_search(&day) {
            self.days.insert(i, day);
            self.active_days += 1;
            if self.days.len() > KEEP_DAYS {
                self.days.remove(0);
            }
        }
        let first_day = vn_day(self.first_seen);
        if first_day != self.retained_from {
            // A first event (or a late one earlier than it): retention counts from the new day.
            self.retained_from = first_day;
            self.retained = RETENTION_DAYS.map(|n| self.days.binary_search(&(first_day + n)).is_ok());
        } else if let Some(i) = RETENTION_DAYS.iter().position(|n| first_day + n == day) {
            self.retained[i] = true;
        }
        if let Some(touch) = touch_of(event.context(), t) {
            if self.first_touch.as_ref().is_none_or(|f| t < f.at) {
                self.first_touch = Some(touch.clone());
            }
            match &mut self.last_touch {
                Some(l) if same_campaign(l, &touch) => l.at = l.at.max(t),
                Some(l) if t < l.at => {}
                _ => self.last_touch = Some(touch),
            }
        }
    }

    fn identity(&mut self, e: &IdentityEvent) {
        let t = e.corrected_time;
        let p = &e.properties;
        match e.kind {
            IdentityType::ConsentChanged => {
                let (Some(purpose), Some(granted_now)) = (&p.purpose, p.granted) else { return };
                let slot = self.consents.entry(purpose.clone()).or_default();
                if t < slot.at {
                    return; // an older decision than the one kept
                }
                *slot = ConsentState { granted: granted_now, at: t, policy_version: p.policy_version.clone() };
                if !granted_now {
                    self.forget_purpose(purpose);
                }
            }
            IdentityType::Identify => {
                if let Some(anon) = &e.user.anonymous_id
                    && e.user.key != *anon
                    && !self.anonymous_ids.contains(anon)
                {
                    self.anonymous_ids.push(anon.clone());
                    if self.anonymous_ids.len() > KEEP_ANONYMOUS_IDS {
                        self.anonymous_ids.remove(0);
                    }
                }
                if let Some(traits) = &p.traits
                    && granted(self, PURPOSE_PROFILE)
                {
                    let keep = |new: &Option<String>, old: &mut Option<String>| {
                        if new.is_some() {
                            old.clone_from(new);
                        }
                    };
                    keep(&traits.name, &mut self.name);
                    keep(&traits.gender, &mut self.gender);
                    keep(&traits.birthday, &mut self.birthday);
                }
                if p.phone.is_some() && granted(self, PURPOSE_PHONE) {
                    self.phone.clone_from(&p.phone);
                }
            }
            IdentityType::OaFollowed => {
                self.oa_following = true;
                self.oa_followed_at = Some(t);
                self.oa_last_interaction = Some(self.oa_last_interaction.unwrap_or(t).max(t));
            }
            IdentityType::OaUnfollowed => self.oa_following = false,
            IdentityType::OaInteracted => self.oa_last_interaction = Some(self.oa_last_interaction.unwrap_or(t).max(t)),
            IdentityType::UserForgotten => {} // handled before any state is touched
        }
    }

    /// Nothing is kept for a purpose the user has withdrawn from.
    fn forget_purpose(&mut self, purpose: &str) {
        if purpose == PURPOSE_PROFILE {
            self.name = None;
            self.gender = None;
            self.birthday = None;
        } else if purpose == PURPOSE_PHONE {
            self.phone = None;
        }
    }

    fn order(&mut self, e: &OrderEvent) {
        let t = e.corrected_time;
        let p = &e.properties;
        match e.kind {
            OrderType::OrderPlaced => {
                if self.recent_orders.contains_key(&p.order_id) {
                    return; // the same order placed twice counts once
                }
                let total = p.total.unwrap_or_else(|| p.items.iter().map(|i| i.quantity * i.price).sum());
                self.recent_orders.insert(p.order_id.clone(), OrderState { at: t, total, taken_back: 0, cancelled: false });
                if self.recent_orders.len() > KEEP_ORDERS
                    && let Some(oldest) = self.recent_orders.iter().min_by_key(|(id, o)| (o.at, (*id).clone())).map(|(id, _)| id.clone())
                {
                    self.recent_orders.remove(&oldest);
                }
                self.orders += 1;
                self.revenue += total;
                let i = self.order_times.partition_point(|x| *x <= t);
                self.order_times.insert(i, t);
                if self.order_times.len() > KEEP_ORDER_TIMES {
                    self.order_times.remove(0);
                }
                self.last_order_at = Some(self.last_order_at.unwrap_or(t).max(t));
                if p.voucher_code.is_some() {
                    self.vouchers_used += 1;
                }
                for touch in [&mut self.first_touch, &mut self.last_touch].into_iter().flatten() {
                    touch.conversions += 1;
                    touch.revenue += total;
                }
            }
            OrderType::OrderCancelled => {
                let Some(o) = self.recent_orders.get_mut(&p.order_id) else { return };
                if o.cancelled {
                    return;
                }
                o.cancelled = true;
                let back = o.total - o.taken_back;
                o.taken_back = o.total;
                let at = o.at;
                self.orders -= 1;
                self.revenue -= back;
                if let Some(i) = self.order_times.iter().position(|x| *x == at) {
                    self.order_times.remove(i);
                }
                self.last_order_at = self.recent_orders.values().filter(|o| !o.cancelled).map(|o| o.at).max();
            }
            OrderType::OrderRefunded => {
                let Some(o) = self.recent_orders.get_mut(&p.order_id) else { return };
                let back = p.refund_amount.unwrap_or(o.total).clamp(0, o.total - o.taken_back);
                o.taken_back += back;
                self.revenue -= back;
            }
            OrderType::OrderPaid | OrderType::OrderStatusChanged => {}
        }
    }

    /// Whether the user had an event on the `n`th day after their first day (1, 7 or 30).
    fn active_on_day(&self, n: i64) -> bool {
        RETENTION_DAYS.iter().position(|d| *d == n).is_some_and(|i| self.retained[i])
    }

    fn record(&self, app: &str, user: &str) -> Profile {
        let at = self.as_of;
        let (next_purchase_expected, next_purchase_basis) = next_purchase(self);
        Profile {
            app_id: app.to_string(),
            user_key: user.to_string(),
            zalo_id: self.zalo_id.clone(),
            oa_user_id: self.oa_user_id.clone(),
            anonymous_ids: self.anonymous_ids.clone(),
            as_of: at,
            consents: self
                .consents
                .iter()
                .map(|(purpose, c)| Consent {
                    purpose: purpose.clone(),
                    granted: c.granted,
                    changed_at: c.at,
                    policy_version: c.policy_version.clone(),
                })
                .collect(),
            name: self.name.clone(),
            gender: self.gender.clone(),
            birthday: self.birthday.clone(),
            phone: self.phone.clone(),
            oa_following: self.oa_following,
            oa_followed_at: self.oa_followed_at,
            oa_last_interaction: self.oa_last_interaction,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            sessions: self.sessions,
            active_days: self.active_days,
            recent_active_days: self.days.iter().copied().filter(|d| *d > vn_day(at) - RECENT_DAYS && *d <= vn_day(at)).collect(),
            active_on_day1: self.active_on_day(1),
            active_on_day7: self.active_on_day(7),
            active_on_day30: self.active_on_day(30),
            product_views: self.product_views,
            cart_adds: self.cart_adds,
            checkouts: self.checkouts,
            orders: self.orders,
            revenue: self.revenue,
            average_order_value: if self.orders > 0 { self.revenue / self.orders } else { 0 },
            last_order_at: self.last_order_at,
            recency_score: recency_score(self.last_order_at, at),
            frequency_score: frequency_score(self.orders),
            monetary_score: monetary_score(self.revenue),
            lifecycle: lifecycle(self, at).to_string(),
            funnel_stage: funnel_stage(self).to_string(),
            next_purchase_expected,
            next_purchase_basis,
            vouchers_claimed: self.vouchers_claimed,
            vouchers_used: self.vouchers_used,
            points_balance: self.points_earned - self.points_redeemed,
            first_touch: self.first_touch.clone(),
            last_touch: self.last_touch.clone(),
        }
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The first instant of the month after `t`'s, in Vietnam time.
fn next_month_start(t: i64) -> i64 {
    use chrono::Datelike;
    let local = chrono::DateTime::from_timestamp_millis(t + VN_OFFSET_MS).unwrap_or_default().date_naive();
    let (y, m) = if local.month() == 12 { (local.year() + 1, 1) } else { (local.year(), local.month() + 1) };
    let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(local).and_hms_opt(0, 0, 0).unwrap_or_default();
    first.and_utc().timestamp_millis() - VN_OFFSET_MS
}

/// A profile's facts for the segments' rules.
struct Eval<'a> {
    s: &'a ProfileState,
    cart_timeout_ms: i64,
}

impl Facts for Eval<'_> {
    fn since(&self, what: &Since) -> Option<i64> {
        let s = self.s;
        match what {
            Since::FirstSeen => Some(s.first_seen),
            Since::LastSeen => Some(s.last_seen),
            Since::LastOrder => s.last_order_at,
            Since::ProductView => s.last_product_view,
            Since::CategoryView(c) => s.category_views.iter().find(|(k, _)| k == c).map(|(_, t)| *t),
            // A cart is abandoned when its timeout passes after the last cart activity with no
            // order since.
            Since::CartAbandoned => {
                s.last_cart_activity.filter(|c| s.last_order_at.is_none_or(|o| o < *c)).map(|c| c + self.cart_timeout_ms)
            }
        }
    }

    fn number(&self, name: &str) -> f64 {
        let s = self.s;
        (match name {
            "orders" => s.orders,
            "revenue" => s.revenue,
            "average_order_value" => {
                if s.orders > 0 {
                    s.revenue / s.orders
                } else {
                    0
                }
            }
            "sessions" => s.sessions,
            "active_days" => s.active_days,
            "points_balance" => s.points_earned - s.points_redeemed,
            "vouchers_used" => s.vouchers_used,
            "vouchers_claimed" => s.vouchers_claimed,
            "recency_score" => i64::from(recency_score(s.last_order_at, s.as_of)),
            "frequency_score" => i64::from(frequency_score(s.orders)),
            "monetary_score" => i64::from(monetary_score(s.revenue)),
            "cart_adds" => s.cart_adds,
            _ => 0,
        }) as f64
    }

    fn text(&self, name: &str) -> &str {
        match name {
            "lifecycle" => lifecycle(self.s, self.s.as_of),
            "funnel_stage" => funnel_stage(self.s),
            _ => "",
        }
    }

    fn flag(&self, name: &str, at: i64) -> bool {
        let s = self.s;
        match name {
            "oa_following" => s.oa_following,
            "has_phone" => s.phone.is_some(),
            "birthday_this_month" => s.birthday.as_deref().and_then(birthday_month).is_some_and(|m| {
                use chrono::Datelike;
                chrono::DateTime::from_timestamp_millis(at + VN_OFFSET_MS).is_some_and(|d| d.month() == m)
            }),
            _ => false,
        }
    }

    fn granted(&self, purpose: &str) -> bool {
        granted(self.s, purpose)
    }
}

/// The month of a birthday given as YYYY-MM-DD or --MM-DD.
fn birthday_month(b: &str) -> Option<u32> {
    let parts: Vec<&str> = b.trim_start_matches('-').split('-').collect();
    let m = if parts.len() == 3 { parts[1] } else { parts.first()? };
    m.parse().ok().filter(|m| (1..=12).contains(m))
}

pub struct Profiles {
    session_gap_ms: i64,
    cart_timeout_ms: i64,
    segments: Arc<Segments>,
    cache: KvCache<ProfileState>,
    /// Each user's pending timer. It may be earlier than the user's next boundary (most events
    /// move the boundaries later, and moving the timer on every event would cost more than an
    /// early timer that only finds the real one); never later. Timers listed at a task's start
    /// ([`Processor::timers`]) are not in it: a user may then have two, and the extra one finds
    /// nothing to do.
    scheduled: HashMap<Vec<u8>, i64>,
}

impl Profiles {
    pub fn new(session_gap_ms: i64, cart_timeout_ms: i64, segments: Arc<Segments>) -> Profiles {
        Profiles { session_gap_ms, cart_timeout_ms, segments, cache: KvCache::new(STORE), scheduled: HashMap::new() }
    }

    /// The next boundary after the state's evaluation time, the segments' included.
    fn next_change(&self, s: &ProfileState) -> Option<i64> {
        let facts = Eval { s, cart_timeout_ms: self.cart_timeout_ms };
        let mut more = Vec::new();
        for seg in &self.segments.list {
            for r in &seg.rules {
                r.boundaries(&facts, &mut more);
            }
        }
        if s.birthday.is_some() && self.segments.list.iter().any(|g| g.uses_birthday()) {
            more.push(next_month_start(s.as_of));
        }
        next_change(s, s.as_of, &more)
    }

    /// Evaluates the user's segments at the state's time and emits entries and exits.
    fn evaluate(&self, ctx: &mut Ctx<'_>, key: &[u8], s: &mut ProfileState) -> anyhow::Result<()> {
        if self.segments.is_empty() {
            return Ok(());
        }
        let Some((app, user)) = split_user_key(key) else { return Ok(()) };
        let at = s.as_of;
        let now: Vec<String> = {
            let facts = Eval { s, cart_timeout_ms: self.cart_timeout_ms };
            self.segments.list.iter().filter(|g| g.holds(&facts, at)).map(|g| g.name.clone()).collect()
        };
        if now == s.segments {
            return Ok(());
        }
        let (sha, sha_e164) = match &s.phone {
            Some(p) => (Some(sha256_hex(p)), Some(sha256_hex(&format!("+{p}")))),
            None => (None, None),
        };
        for g in &self.segments.list {
            let (was, is) = (s.segments.contains(&g.name), now.contains(&g.name));
            if was != is {
                let change = AudienceChange {
                    app_id: app.to_string(),
                    segment: g.name.clone(),
                    user_key: user.to_string(),
                    member: is,
                    at,
                    zalo_id: s.zalo_id.clone(),
                    oa_user_id: s.oa_user_id.clone(),
                    phone_sha256: sha.clone(),
                    phone_sha256_e164: sha_e164.clone(),
                };
                ctx.emit(&change.key(), &change)?;
            }
        }
        s.segments = now;
        Ok(())
    }

    /// Makes sure a timer fires no later than the user's next boundary after `at`.
    fn ensure_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], next: Option<i64>) {
        let Some(next) = next else { return };
        match self.scheduled.get(key) {
            Some(t) if *t <= next => {}
            Some(t) => {
                ctx.cancel(*t, key);
                ctx.schedule(next, key.to_vec());
                self.scheduled.insert(key.to_vec(), next);
            }
            None => {
                ctx.schedule(next, key.to_vec());
                self.scheduled.insert(key.to_vec(), next);
            }
        }
    }
}

impl Processor for Profiles {
    fn store(&self) -> &'static str {
        STORE
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        let key = user_key(event.app_id(), &event.user().key);
        if event.is_forget() {
            // Erased: out of every segment (tombstones, so exports drop the user), the state
            // deleted; the commit writes the profile's tombstone.
            if let Some(old) = self.cache.entry(ctx.db, &key)?.take() {
                for segment in &old.segments {
                    ctx.tombstone(schemas::topics::Topic::Audiences, &format!("{segment}/{}", event.user().key));
                }
            }
            self.scheduled.remove(&key);
            return Ok(());
        }
        let state = self.cache.entry(ctx.db, &key)?.get_or_insert_with(ProfileState::default);
        state.seen(event, self.session_gap_ms);
        if let InputEvent::Cart(c) = event {
            let t = c.corrected_time;
            state.last_cart_activity = Some(state.last_cart_activity.unwrap_or(t).max(t));
        }
        match event {
            InputEvent::View(v) => match v.kind {
                ViewType::ProductViewed => {
                    let t = v.corrected_time;
                    state.product_views += 1;
                    state.last_product_view = Some(state.last_product_view.unwrap_or(t).max(t));
                    if let Some(c) = &v.properties.category {
                        match state.category_views.iter_mut().find(|(k, _)| k == c) {
                            Some((_, at)) => *at = (*at).max(t),
                            None => state.category_views.push((c.clone(), t)),
                        }
                        if state.category_views.len() > KEEP_CATEGORIES
                            && let Some(i) =
                                state.category_views.iter().enumerate().min_by_key(|(_, (k, at))| (*at, k.clone())).map(|(i, _)| i)
                        {
                            state.category_views.remove(i);
                        }
                    }
                }
                ViewType::ProductShared => state.shares += 1,
                ViewType::PageViewed | ViewType::ProductClicked | ViewType::Search => {}
            },
            InputEvent::Cart(c) => match c.kind {
                CartType::CartItemAdded => state.cart_adds += 1,
                CartType::CheckoutStarted => state.checkouts += 1,
                CartType::CartItemRemoved | CartType::CartItemUpdated | CartType::CartViewed => {}
            },
            InputEvent::Order(o) => state.order(o),
            InputEvent::Identity(i) => state.identity(i),
            InputEvent::Engagement(e) => {
                let points = e.properties.points.unwrap_or(0).max(0);
                match e.kind {
                    EngagementType::VoucherClaimed => state.vouchers_claimed += 1,
                    EngagementType::PointsEarned => state.points_earned += points,
                    EngagementType::PointsRedeemed => state.points_redeemed += points,
                    EngagementType::ReviewSubmitted => state.reviews += 1,
                    EngagementType::ReferralCompleted => state.referrals += 1,
                    EngagementType::MinigamePlayed => {}
                }
            }
            // Only the campaign-results processor is given messages (see `Processor::reads_messages`).
            InputEvent::Message(_) => {}
        }
        let mut state = std::mem::take(state);
        self.evaluate(ctx, &key, &mut state)?;
        let next = self.next_change(&state);
        *self.cache.entry(ctx.db, &key)?.as_mut().expect("present") = state;
        self.ensure_timer(ctx, &key, next);
        Ok(())
    }

    /// If a boundary passed, the profile is evaluated at the deadline (and so emitted); either
    /// way the timer moves to the next boundary.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], deadline: i64) -> anyhow::Result<()> {
        if self.scheduled.get(key) == Some(&deadline) {
            self.scheduled.remove(key);
        }
        let Some(state) = self.cache.get(ctx.db, key)?.cloned() else { return Ok(()) };
        let next = match self.next_change(&state) {
            Some(boundary) if boundary <= deadline => {
                let mut state = self.cache.entry(ctx.db, key)?.take().expect("present");
                state.as_of = state.as_of.max(deadline);
                self.evaluate(ctx, key, &mut state)?;
                let next = self.next_change(&state);
                *self.cache.entry(ctx.db, key)? = Some(state);
                next
            }
            other => other, // an early timer: nothing changed yet
        };
        self.ensure_timer(ctx, key, next);
        Ok(())
    }

    fn timers(&self, db: &TaskDb, out: &mut Vec<(i64, Vec<u8>)>) -> anyhow::Result<()> {
        for (key, state) in self.cache.committed(db)? {
            if let Some(t) = self.next_change(&state) {
                out.push((t, key));
            }
        }
        Ok(())
    }

    fn before_commit(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        let mut out = Vec::new();
        for (key, state) in self.cache.dirty_keys() {
            match (split_user_key(key), state) {
                (Some((app, user)), Some(s)) => out.push((user.to_string(), Some(s.record(app, user)))),
                (Some((_, user)), None) => out.push((user.to_string(), None)), // forgotten
                (None, _) => {}
            }
        }
        for (user, record) in out {
            match record {
                Some(r) => ctx.emit(&user, &r)?,
                None => ctx.tombstone(schemas::topics::Topic::Profiles, &user),
            }
        }
        Ok(())
    }

    fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
        self.cache.take_dirty(out)
    }

    fn trim(&mut self, max_cached: usize) {
        self.cache.trim(max_cached);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::Output;
    use crate::timers::Timers;
    use schemas::testing::build::{cart_add, order, page};

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
            let profiles = Profiles::new(GAP, 3600 * 1000, Arc::new(segments));
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
                .rfind(|o| o.key == user && o.topic == schemas::topics::Topic::Profiles)
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
        use schemas::topics::Topic::{Audiences, Profiles};
        // Tombstones only: the profile, and the user's key in each segment they were in.
        let want = vec![
            (Profiles, "u".into(), true),
            (Audiences, "new_first_week/u".into(), true),
            (Audiences, "viewed_no_order_7d/u".into(), true),
        ];
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
}
