//! A profile's state and how each event changes it: the code twin of docs/profiles.md. The
//! constants are that document's numbers (RFM thresholds, lifecycle and funnel stages, the
//! next-purchase estimate, attribution, what a profile remembers); the rules below apply them.
//! Days are Vietnam's ([`schemas::time::vn_day`]). Everything is evaluated at an event time or a
//! timer deadline, never the wall clock: a replay gives the same profiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use schemas::derived::{Consent, Profile, Touch};
use schemas::event::*;
use schemas::time::{DAY_MS, VN_OFFSET_MS, vn_day};

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
pub(super) struct ConsentState {
    pub(super) granted: bool,
    pub(super) at: i64,
    pub(super) policy_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct OrderState {
    pub(super) at: i64,
    pub(super) total: i64,
    /// What cancellations and refunds took back.
    pub(super) taken_back: i64,
    pub(super) cancelled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ProfileState {
    pub(super) zalo_id: Option<String>,
    pub(super) oa_user_id: Option<String>,
    pub(super) anonymous_ids: Vec<String>,
    pub(super) consents: BTreeMap<String, ConsentState>,
    pub(super) name: Option<String>,
    pub(super) gender: Option<String>,
    pub(super) birthday: Option<String>,
    pub(super) phone: Option<String>,
    pub(super) oa_following: bool,
    pub(super) oa_followed_at: Option<i64>,
    pub(super) oa_last_interaction: Option<i64>,
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    /// Evaluation time: the latest event or passed timer deadline.
    pub(super) as_of: i64,
    pub(super) returned_at: Option<i64>,
    pub(super) sessions: i64,
    pub(super) active_days: i64,
    /// The most recent active days (day numbers in Vietnam time), ascending.
    pub(super) days: Vec<i64>,
    /// Active on the 1st, 7th, 30th day after `retained_from` (the first day): kept apart from
    /// `days`, which forgets its oldest entries.
    pub(super) retained: [bool; 3],
    pub(super) retained_from: i64,
    pub(super) orders: i64,
    pub(super) revenue: i64,
    /// Recent orders by id, for cancellations and refunds.
    pub(super) recent_orders: BTreeMap<String, OrderState>,
    /// Times of the recent orders not cancelled, ascending.
    pub(super) order_times: Vec<i64>,
    pub(super) last_order_at: Option<i64>,
    pub(super) product_views: i64,
    pub(super) cart_adds: i64,
    pub(super) checkouts: i64,
    pub(super) shares: i64,
    pub(super) reviews: i64,
    pub(super) referrals: i64,
    pub(super) vouchers_claimed: i64,
    pub(super) vouchers_used: i64,
    pub(super) points_earned: i64,
    pub(super) points_redeemed: i64,
    pub(super) first_touch: Option<Touch>,
    pub(super) last_touch: Option<Touch>,
    pub(super) last_product_view: Option<i64>,
    /// Last view per category (the 30 most recent categories).
    pub(super) category_views: Vec<(String, i64)>,
    pub(super) last_cart_activity: Option<i64>,
    /// The segments the user is in, sorted.
    pub(super) segments: Vec<String>,
}

pub(super) fn granted(s: &ProfileState, purpose: &str) -> bool {
    s.consents.get(purpose).is_some_and(|c| c.granted)
}

pub fn recency_score(last_order_at: Option<i64>, at: i64) -> i32 {
    let Some(last) = last_order_at else { return 1 };
    let age = at - last;
    match RECENCY_DAYS.iter().position(|d| age < d * DAY_MS) {
        Some(i) => 5 - i as i32,
        None => 1,
    }
}

pub(super) fn score_from(value: i64, thresholds: &[i64; 4]) -> i32 {
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

pub(super) fn lifecycle(s: &ProfileState, at: i64) -> &'static str {
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

pub(super) fn funnel_stage(s: &ProfileState) -> &'static str {
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
pub(super) fn next_purchase(s: &ProfileState) -> (Option<i64>, String) {
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
pub(super) fn next_change(s: &ProfileState, at: i64, more: &[i64]) -> Option<i64> {
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

pub(super) fn touch_of(ctx: &Context, t: i64) -> Option<Touch> {
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

pub(super) fn same_campaign(a: &Touch, b: &Touch) -> bool {
    (&a.utm_source, &a.utm_medium, &a.utm_campaign, &a.affiliate_id) == (&b.utm_source, &b.utm_medium, &b.utm_campaign, &b.affiliate_id)
}

impl ProfileState {
    /// What an event does to the profile: what every event does ([`ProfileState::seen`]), then
    /// what its type does.
    pub(super) fn update(&mut self, event: &InputEvent, session_gap_ms: i64) {
        self.seen(event, session_gap_ms);
        if let InputEvent::Cart(c) = event {
            let t = c.corrected_time;
            self.last_cart_activity = Some(self.last_cart_activity.unwrap_or(t).max(t));
        }
        match event {
            InputEvent::View(v) => match v.kind {
                ViewType::ProductViewed => {
                    let t = v.corrected_time;
                    self.product_views += 1;
                    self.last_product_view = Some(self.last_product_view.unwrap_or(t).max(t));
                    if let Some(c) = &v.properties.category {
                        match self.category_views.iter_mut().find(|(k, _)| k == c) {
                            Some((_, at)) => *at = (*at).max(t),
                            None => self.category_views.push((c.clone(), t)),
                        }
                        if self.category_views.len() > KEEP_CATEGORIES
                            && let Some(i) =
                                self.category_views.iter().enumerate().min_by_key(|(_, (k, at))| (*at, k.clone())).map(|(i, _)| i)
                        {
                            self.category_views.remove(i);
                        }
                    }
                }
                ViewType::ProductShared => self.shares += 1,
                ViewType::PageViewed | ViewType::ProductClicked | ViewType::Search => {}
            },
            InputEvent::Cart(c) => match c.kind {
                CartType::CartItemAdded => self.cart_adds += 1,
                CartType::CheckoutStarted => self.checkouts += 1,
                CartType::CartItemRemoved | CartType::CartItemUpdated | CartType::CartViewed => {}
            },
            InputEvent::Order(o) => self.order(o),
            InputEvent::Identity(i) => self.identity(i),
            InputEvent::Engagement(e) => {
                let points = e.properties.points.unwrap_or(0).max(0);
                match e.kind {
                    EngagementType::VoucherClaimed => self.vouchers_claimed += 1,
                    EngagementType::PointsEarned => self.points_earned = self.points_earned.saturating_add(points),
                    EngagementType::PointsRedeemed => self.points_redeemed = self.points_redeemed.saturating_add(points),
                    EngagementType::ReviewSubmitted => self.reviews += 1,
                    EngagementType::ReferralCompleted => self.referrals += 1,
                    EngagementType::MinigamePlayed => {}
                }
            }
            // Only the campaign-results processor is given messages (see `Processor::reads_messages`).
            InputEvent::Message(_) => {}
        }
    }

    /// What every event does: identity, times, sessions, days, attribution.
    pub(super) fn seen(&mut self, event: &InputEvent, session_gap_ms: i64) {
        let t = event.time();
        let user = event.user();
        if user.zalo_id.is_some() {
            self.zalo_id.clone_from(&user.zalo_id);
        }
        // An OA user id is what the shop's messages go to: only Zalo's word or the shop's server
        // sets it, never a client's (docs/security.md).
        if user.oa_user_id.is_some() && event.trust().is_trusted() {
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

    pub(super) fn identity(&mut self, e: &IdentityEvent) {
        let t = e.corrected_time;
        let p = &e.properties;
        // The device ids a Zalo user identified or consented from: the gateway may keep their
        // consent under one, so erasure must know it (the 20 most recent).
        if matches!(e.kind, IdentityType::Identify | IdentityType::ConsentChanged)
            && let Some(anon) = &e.user.anonymous_id
            && e.user.key != *anon
            && !self.anonymous_ids.contains(anon)
        {
            self.anonymous_ids.push(anon.clone());
            if self.anonymous_ids.len() > KEEP_ANONYMOUS_IDS {
                self.anonymous_ids.remove(0);
            }
        }
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
                // A phone only from Zalo's exchange or the shop's server: ZNS goes to it.
                if p.phone.is_some() && granted(self, PURPOSE_PHONE) && e.trust.is_trusted() {
                    self.phone.clone_from(&p.phone);
                }
            }
            // Follows and interactions set who may be messaged by OA id, and when: Zalo's word
            // (the signed webhook) or the shop's server only.
            _ if !e.trust.is_trusted() => {}
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
    pub(super) fn forget_purpose(&mut self, purpose: &str) {
        if purpose == PURPOSE_PROFILE {
            self.name = None;
            self.gender = None;
            self.birthday = None;
        } else if purpose == PURPOSE_PHONE {
            self.phone = None;
        }
    }

    pub(super) fn order(&mut self, e: &OrderEvent) {
        let t = e.corrected_time;
        let p = &e.properties;
        match e.kind {
            OrderType::OrderPlaced => {
                if self.recent_orders.contains_key(&p.order_id) {
                    return; // the same order placed twice counts once
                }
                let total = p.total.unwrap_or_else(|| Item::total(&p.items));
                self.recent_orders.insert(p.order_id.clone(), OrderState { at: t, total, taken_back: 0, cancelled: false });
                if self.recent_orders.len() > KEEP_ORDERS
                    && let Some(oldest) = self.recent_orders.iter().min_by_key(|(id, o)| (o.at, (*id).clone())).map(|(id, _)| id.clone())
                {
                    self.recent_orders.remove(&oldest);
                }
                self.orders += 1;
                self.revenue = self.revenue.saturating_add(total);
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
                    touch.revenue = touch.revenue.saturating_add(total);
                }
            }
            OrderType::OrderCancelled => {
                let Some(o) = self.recent_orders.get_mut(&p.order_id) else { return };
                if o.cancelled {
                    return;
                }
                o.cancelled = true;
                let back = o.total.saturating_sub(o.taken_back);
                o.taken_back = o.total;
                let at = o.at;
                self.orders -= 1;
                self.revenue = self.revenue.saturating_sub(back);
                if let Some(i) = self.order_times.iter().position(|x| *x == at) {
                    self.order_times.remove(i);
                }
                self.last_order_at = self.recent_orders.values().filter(|o| !o.cancelled).map(|o| o.at).max();
            }
            OrderType::OrderRefunded => {
                let Some(o) = self.recent_orders.get_mut(&p.order_id) else { return };
                let back = p.refund_amount.unwrap_or(o.total).max(0).min(o.total.saturating_sub(o.taken_back).max(0));
                o.taken_back = o.taken_back.saturating_add(back);
                self.revenue = self.revenue.saturating_sub(back);
            }
            OrderType::OrderPaid | OrderType::OrderStatusChanged => {}
        }
    }

    /// Whether the user had an event on the `n`th day after their first day (1, 7 or 30).
    pub(super) fn active_on_day(&self, n: i64) -> bool {
        RETENTION_DAYS.iter().position(|d| *d == n).is_some_and(|i| self.retained[i])
    }

    pub(super) fn record(&self, app: &str, user: &str) -> Profile {
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
            // Only a trusted source sets either (`update`): what is kept is verified.
            phone_verified: self.phone.is_some(),
            oa_user_id_verified: self.oa_user_id.is_some(),
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

pub(super) fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The first instant of the month after `t`'s, in Vietnam time.
pub(super) fn next_month_start(t: i64) -> i64 {
    use chrono::Datelike;
    let local = chrono::DateTime::from_timestamp_millis(t + VN_OFFSET_MS).unwrap_or_default().date_naive();
    let (y, m) = if local.month() == 12 { (local.year() + 1, 1) } else { (local.year(), local.month() + 1) };
    let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(local).and_hms_opt(0, 0, 0).unwrap_or_default();
    first.and_utc().timestamp_millis() - VN_OFFSET_MS
}
