//! What the query API answers, computed from records alone — pure functions, tested on known
//! histories: an app's engagement (DAU/WAU/MAU, retention cohorts, the funnel), trending
//! products and categories, recommendations, activity by minute, campaign results summed over
//! partitions.

use std::collections::HashMap;

use serde::Serialize;

use schemas::derived::{Activity, CampaignResult, Profile, UserInterests};
use schemas::time::{DAY_MS, vn_day};

/// Trending products and categories kept per app.
pub(crate) const TRENDING: usize = 100;
/// Cohorts (first-seen days) the retention table reports, newest first.
pub(crate) const COHORTS: i64 = 60;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub id: String,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayCount {
    pub day: String,
    pub users: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cohort {
    /// The first-seen day (Vietnam time).
    pub cohort: String,
    pub users: usize,
    /// Share of the cohort active on the 1st, 7th, 30th day after it; null until that day has come.
    pub day1: Option<f64>,
    pub day7: Option<f64>,
    pub day30: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Funnel {
    pub users: usize,
    pub viewed_product: usize,
    pub added_to_cart: usize,
    pub started_checkout: usize,
    pub ordered: usize,
}

/// App-wide engagement, as of the latest event in the app's profiles.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Engagement {
    pub app_id: String,
    pub as_of: i64,
    pub day: String,
    pub users: usize,
    pub dau: usize,
    pub wau: usize,
    pub mau: usize,
    /// DAU / MAU (0 without monthly users).
    pub stickiness: f64,
    /// Users active on each of the last 30 days, oldest first.
    pub daily_active: Vec<DayCount>,
    pub retention: Vec<Cohort>,
    pub funnel: Funnel,
    pub top_products: Vec<Scored>,
    pub top_categories: Vec<Scored>,
}

/// The day (Vietnam time) of a day number, as YYYY-MM-DD.
pub(crate) fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// Computes an app's engagement from its profiles and interests.
pub fn engagement(app: &str, profiles: &[&Profile], interests: &[&UserInterests]) -> Engagement {
    let as_of = profiles.iter().map(|p| p.as_of).max().unwrap_or(0);
    let today = vn_day(as_of);
    let active_within = |p: &Profile, days: i64| p.recent_active_days.iter().any(|d| *d > today - days && *d <= today);
    let dau = profiles.iter().filter(|p| active_within(p, 1)).count();
    let wau = profiles.iter().filter(|p| active_within(p, 7)).count();
    let mau = profiles.iter().filter(|p| active_within(p, 30)).count();
    let daily_active = (today - 29..=today)
        .map(|d| DayCount { day: day_name(d), users: profiles.iter().filter(|p| p.recent_active_days.contains(&d)).count() })
        .collect();
    let mut cohorts: HashMap<i64, [usize; 4]> = HashMap::new();
    for p in profiles {
        let c = vn_day(p.first_seen);
        if c > today - COHORTS {
            let e = cohorts.entry(c).or_default();
            e[0] += 1;
            e[1] += usize::from(p.active_on_day1);
            e[2] += usize::from(p.active_on_day7);
            e[3] += usize::from(p.active_on_day30);
        }
    }
    let mut days: Vec<i64> = cohorts.keys().copied().collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    let retention = days
        .into_iter()
        .map(|c| {
            let [users, d1, d7, d30] = cohorts[&c];
            let share = |n: usize, after: i64| (c + after <= today).then(|| n as f64 / users as f64);
            Cohort { cohort: day_name(c), users, day1: share(d1, 1), day7: share(d7, 7), day30: share(d30, 30) }
        })
        .collect();
    let funnel = Funnel {
        users: profiles.len(),
        viewed_product: profiles.iter().filter(|p| p.product_views > 0).count(),
        added_to_cart: profiles.iter().filter(|p| p.cart_adds > 0).count(),
        started_checkout: profiles.iter().filter(|p| p.checkouts > 0).count(),
        ordered: profiles.iter().filter(|p| p.orders > 0).count(),
    };
    let (top_products, top_categories) = trending(interests);
    Engagement {
        app_id: app.to_string(),
        as_of,
        day: day_name(today),
        users: profiles.len(),
        dau,
        wau,
        mau,
        stickiness: if mau > 0 { dau as f64 / mau as f64 } else { 0.0 },
        daily_active,
        retention,
        funnel,
        top_products,
        top_categories,
    }
}

/// Every user's interest scores, decayed to the latest time among them and summed.
pub fn trending(interests: &[&UserInterests]) -> (Vec<Scored>, Vec<Scored>) {
    let now = interests.iter().map(|i| i.as_of).max().unwrap_or(0);
    let mut products: HashMap<&str, f64> = HashMap::new();
    let mut categories: HashMap<&str, f64> = HashMap::new();
    for i in interests {
        let f = if i.half_life_ms > 0 { 0.5f64.powf((now - i.as_of) as f64 / i.half_life_ms as f64) } else { 1.0 };
        for s in &i.products {
            *products.entry(&s.id).or_default() += s.score * f;
        }
        for s in &i.categories {
            *categories.entry(&s.id).or_default() += s.score * f;
        }
    }
    (top_trending(products), top_trending(categories))
}

/// The [`TRENDING`] best of summed scores, best first, equal scores by id.
pub(crate) fn top_trending(scores: HashMap<&str, f64>) -> Vec<Scored> {
    let mut v: Vec<Scored> = scores.into_iter().map(|(id, score)| Scored { id: id.to_string(), score }).collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    v.truncate(TRENDING);
    v
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendation {
    pub product_id: String,
    pub score: f64,
    /// `interest` (the user's own) or `trending` (the app's, to fill the list).
    pub reason: &'static str,
}

/// The user's top products, then the app's trending ones they do not already have.
pub fn recommend(user: Option<&UserInterests>, trending: &[Scored], limit: usize) -> Vec<Recommendation> {
    let mut out: Vec<Recommendation> = user
        .map(|u| {
            u.products.iter().take(limit).map(|s| Recommendation { product_id: s.id.clone(), score: s.score, reason: "interest" }).collect()
        })
        .unwrap_or_default();
    for t in trending {
        if out.len() >= limit {
            break;
        }
        if !out.iter().any(|r| r.product_id == t.id) {
            out.push(Recommendation { product_id: t.id.clone(), score: t.score, reason: "trending" });
        }
    }
    out
}

/// An app's events by type (`GET /v1/activity`), summed over partitions.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ActivitySummary {
    pub as_of: i64,
    /// One entry per minute of the last hour up to `as_of`, oldest first, with the counts by type
    /// (minutes without events are there, with none).
    pub minutes: Vec<MinuteSummary>,
    pub totals: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MinuteSummary {
    pub minute: i64,
    pub counts: std::collections::BTreeMap<String, i64>,
}

/// A campaign's results over every partition (`GET /v1/campaigns`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CampaignSummary {
    pub campaign: String,
    pub sent: i64,
    pub deferred: i64,
    pub suppressed: std::collections::BTreeMap<String, i64>,
    pub suppressed_total: i64,
    pub failed: i64,
    pub unknown: i64,
    pub delivered: i64,
    pub cost_vnd: i64,
    pub conversions: i64,
    pub revenue_vnd: i64,
    /// Revenue per VND spent; null while nothing was spent (free messages).
    pub revenue_per_vnd: Option<f64>,
    /// Credited orders per message sent (above 1 when users order more than once in the window).
    pub conversion_rate: Option<f64>,
    pub carts_triggered: i64,
    pub carts_recovered: i64,
    pub recovered_revenue_vnd: i64,
    pub recovery_rate: Option<f64>,
    /// Entrants held out (the control group): nothing sent.
    pub held_out: i64,
    pub window_ms: i64,
    pub as_of: i64,
    /// The treatment and control groups and what the campaign adds (docs/messaging.md,
    /// *Lift*); null before anyone entered.
    pub lift: Option<LiftSummary>,
}

/// A campaign's treatment group (entrants not held out, whatever the policy then decided) against
/// its control group (held out): conversion rates, the lift with a 95 % interval, and what the
/// campaign added in orders and revenue. Rates and lifts are fractions (0.05 = 5 %); a figure
/// that cannot be computed yet (an empty group, no control conversions) is null.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LiftSummary {
    pub entrants: i64,
    pub treatment: i64,
    pub control: i64,
    pub treatment_converted: i64,
    pub control_converted: i64,
    pub treatment_conversion_rate: Option<f64>,
    pub control_conversion_rate: Option<f64>,
    /// Treatment rate − control rate.
    pub absolute_lift: Option<f64>,
    /// Its 95 % interval (normal approximation, unpooled standard error).
    pub absolute_lift_ci95: Option<[f64; 2]>,
    /// (Treatment rate − control rate) / control rate.
    pub relative_lift: Option<f64>,
    /// Its 95 % interval (on the log of the rate ratio: Katz).
    pub relative_lift_ci95: Option<[f64; 2]>,
    /// Whether the absolute interval leaves out zero.
    pub significant: bool,
    pub treatment_orders: i64,
    pub control_orders: i64,
    pub treatment_revenue_vnd: i64,
    pub control_revenue_vnd: i64,
    /// Conversions, orders and revenue beyond what the treatment group would have done without
    /// the campaign: its figure − the control's scaled to the treatment's size.
    pub incremental_conversions: Option<f64>,
    pub incremental_orders: Option<f64>,
    pub incremental_revenue_vnd: Option<f64>,
    /// The campaign's cost over its incremental orders (null unless some were added).
    pub cost_per_incremental_order_vnd: Option<f64>,
}

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The lift of a campaign from its two groups' counts, and its cost (see [`LiftSummary`]).
#[allow(clippy::too_many_arguments)]
pub fn lift(
    treatment: i64,
    treatment_converted: i64,
    control: i64,
    control_converted: i64,
    orders: [i64; 2],
    revenue_vnd: [i64; 2],
    cost_vnd: i64,
) -> LiftSummary {
    let (nt, xt, nc, xc) = (treatment as f64, treatment_converted as f64, control as f64, control_converted as f64);
    let pt = (treatment > 0).then(|| xt / nt);
    let pc = (control > 0).then(|| xc / nc);
    let mut l = LiftSummary {
        entrants: treatment + control,
        treatment,
        control,
        treatment_converted,
        control_converted,
        treatment_conversion_rate: pt,
        control_conversion_rate: pc,
        treatment_orders: orders[0],
        control_orders: orders[1],
        treatment_revenue_vnd: revenue_vnd[0],
        control_revenue_vnd: revenue_vnd[1],
        ..Default::default()
    };
    let (Some(pt), Some(pc)) = (pt, pc) else { return l };
    let diff = pt - pc;
    let se = (pt * (1.0 - pt) / nt + pc * (1.0 - pc) / nc).sqrt();
    l.absolute_lift = Some(diff);
    l.absolute_lift_ci95 = Some([diff - Z95 * se, diff + Z95 * se]);
    l.significant = se > 0.0 && (diff - Z95 * se > 0.0 || diff + Z95 * se < 0.0);
    if pc > 0.0 {
        l.relative_lift = Some(diff / pc);
        if pt > 0.0 {
            let log_rr = (pt / pc).ln();
            let se_log = ((1.0 - pt) / xt + (1.0 - pc) / xc).sqrt();
            l.relative_lift_ci95 = Some([(log_rr - Z95 * se_log).exp() - 1.0, (log_rr + Z95 * se_log).exp() - 1.0]);
        }
    }
    let scale = nt / nc;
    l.incremental_conversions = Some(xt - xc * scale);
    let orders = orders[0] as f64 - orders[1] as f64 * scale;
    l.incremental_orders = Some(orders);
    l.incremental_revenue_vnd = Some(revenue_vnd[0] as f64 - revenue_vnd[1] as f64 * scale);
    l.cost_per_incremental_order_vnd = (orders > 0.0).then(|| cost_vnd as f64 / orders);
    l
}

/// Sums a campaign's partitions.
pub fn summarise(campaign: &str, parts: &[&CampaignResult]) -> CampaignSummary {
    let mut s = CampaignSummary { campaign: campaign.to_string(), ..Default::default() };
    for r in parts {
        s.sent += r.sent;
        s.deferred += r.deferred;
        for rc in &r.suppressed {
            *s.suppressed.entry(rc.reason.clone()).or_default() += rc.count;
            s.suppressed_total += rc.count;
        }
        s.failed += r.failed;
        s.unknown += r.unknown;
        s.delivered += r.delivered;
        s.cost_vnd = s.cost_vnd.saturating_add(r.cost_vnd);
        s.conversions += r.conversions;
        s.revenue_vnd = s.revenue_vnd.saturating_add(r.revenue_vnd);
        s.carts_triggered += r.carts_triggered;
        s.carts_recovered += r.carts_recovered;
        s.recovered_revenue_vnd = s.recovered_revenue_vnd.saturating_add(r.recovered_revenue_vnd);
        s.held_out += r.held_out;
        s.window_ms = s.window_ms.max(r.window_ms);
        s.as_of = s.as_of.max(r.as_of);
    }
    let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
    s.revenue_per_vnd = ratio(s.revenue_vnd, s.cost_vnd);
    s.conversion_rate = ratio(s.conversions, s.sent);
    s.recovery_rate = ratio(s.carts_recovered, s.carts_triggered);
    let sum = |f: fn(&CampaignResult) -> i64| parts.iter().fold(0i64, |a, r| a.saturating_add(f(r)));
    let (nt, nc) = (sum(|r| r.entrants_treatment), sum(|r| r.entrants_control));
    if nt + nc > 0 {
        s.lift = Some(lift(
            nt,
            sum(|r| r.converted_treatment),
            nc,
            sum(|r| r.converted_control),
            [sum(|r| r.orders_treatment), sum(|r| r.orders_control)],
            [sum(|r| r.revenue_treatment_vnd), sum(|r| r.revenue_control_vnd)],
            s.cost_vnd,
        ));
    }
    s
}

/// An app's events by type from its partitions' records: per minute over the hour up to the
/// latest event, and in all.
pub fn activity(parts: &[&Activity]) -> ActivitySummary {
    let as_of = parts.iter().map(|a| a.as_of).max().unwrap_or(0);
    let last = as_of - as_of.rem_euclid(60_000);
    let first = last - (Activity::MINUTES - 1) * 60_000;
    let mut minutes: Vec<MinuteSummary> =
        (0..Activity::MINUTES).map(|i| MinuteSummary { minute: first + i * 60_000, ..Default::default() }).collect();
    let mut totals = std::collections::BTreeMap::new();
    for a in parts {
        for m in a.minutes.iter().filter(|m| m.minute >= first && m.minute <= last) {
            *minutes[((m.minute - first) / 60_000) as usize].counts.entry(m.event_type.clone()).or_default() += m.count;
        }
        for t in &a.totals {
            *totals.entry(t.event_type.clone()).or_default() += t.count;
        }
    }
    if as_of == 0 {
        minutes.clear();
    }
    ActivitySummary { as_of, minutes, totals }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::derived::Score;

    /// 2026-01-01T00:00:00+07:00.
    const T0: i64 = 1_767_200_400_000;
    const D: i64 = DAY_MS;

    fn profile(user: &str, first: i64, active: &[i64], retained: [bool; 3], funnel: [i64; 4]) -> Profile {
        let days: Vec<i64> = active.iter().map(|t| vn_day(*t)).collect();
        Profile {
            app_id: "demo".into(),
            user_key: user.into(),
            first_seen: first,
            last_seen: *active.last().unwrap(),
            as_of: *active.last().unwrap(),
            recent_active_days: days,
            active_on_day1: retained[0],
            active_on_day7: retained[1],
            active_on_day30: retained[2],
            product_views: funnel[0],
            cart_adds: funnel[1],
            checkouts: funnel[2],
            orders: funnel[3],
            ..Default::default()
        }
    }

    /// A small known history: four users over ten days.
    #[test]
    fn dau_mau_retention_and_funnel_of_a_known_history() {
        let a = profile("a", T0, &[T0, T0 + D, T0 + 9 * D], [true, false, false], [3, 1, 1, 1]);
        let b = profile("b", T0, &[T0], [false, false, false], [1, 0, 0, 0]);
        let c = profile("c", T0 + 3 * D, &[T0 + 3 * D, T0 + 4 * D, T0 + 8 * D], [true, false, false], [2, 2, 0, 0]);
        let d = profile("d", T0 + 9 * D, &[T0 + 9 * D + 3600_000], [false, false, false], [0, 0, 0, 0]);
        let e = engagement("demo", &[&a, &b, &c, &d], &[]);
        // Day 9 is "today" (the latest event): a and d; the week (days 3-9): a, c, d; the month: all.
        assert_eq!((e.dau, e.wau, e.mau, e.users), (2, 3, 4, 4));
        assert!((e.stickiness - 0.5).abs() < 1e-9);
        assert_eq!(e.day, "2026-01-10");
        assert_eq!(e.daily_active.len(), 30);
        assert_eq!(e.daily_active.last().unwrap(), &DayCount { day: "2026-01-10".into(), users: 2 });
        assert_eq!(e.daily_active[29 - 9], DayCount { day: "2026-01-01".into(), users: 2 });
        // Cohorts newest first: day 9 (d: day 1 not yet come), day 3 (c), day 0 (a, b).
        let cohorts: Vec<(&str, usize, Option<f64>, Option<f64>)> =
            e.retention.iter().map(|c| (c.cohort.as_str(), c.users, c.day1, c.day7)).collect();
        assert_eq!(
            cohorts,
            vec![("2026-01-10", 1, None, None), ("2026-01-04", 1, Some(1.0), None), ("2026-01-01", 2, Some(0.5), Some(0.0))]
        );
        assert_eq!(e.funnel, Funnel { users: 4, viewed_product: 3, added_to_cart: 2, started_checkout: 1, ordered: 1 });
    }

    #[test]
    fn recommendations_fill_with_trending_products_the_user_does_not_have() {
        let scores = |v: &[(&str, f64)]| v.iter().map(|(id, s)| Score { id: id.to_string(), score: *s }).collect::<Vec<_>>();
        let half = 7 * D;
        let u1 = UserInterests {
            app_id: "demo".into(),
            user_key: "u1".into(),
            as_of: T0 + half,
            half_life_ms: half,
            products: scores(&[("tea", 4.0)]),
            ..Default::default()
        };
        // u2's scores are a half-life older: they count half.
        let u2 = UserInterests {
            app_id: "demo".into(),
            user_key: "u2".into(),
            as_of: T0,
            half_life_ms: half,
            products: scores(&[("cake", 10.0), ("tea", 2.0)]),
            ..Default::default()
        };
        let (top, _) = trending(&[&u1, &u2]);
        // Equal scores: by id.
        assert_eq!(top, vec![Scored { id: "cake".into(), score: 5.0 }, Scored { id: "tea".into(), score: 5.0 }]);
        let r = recommend(Some(&u1), &top, 3);
        assert_eq!(
            r.iter().map(|r| (r.product_id.as_str(), r.reason)).collect::<Vec<_>>(),
            vec![("tea", "interest"), ("cake", "trending")]
        );
        let r = recommend(None, &top, 1);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, "trending");
    }

    /// The worked example of docs/messaging.md (*Lift*), figures computed by hand.
    #[test]
    fn lift_on_numbers_worked_by_hand() {
        // 1,000 entrants, 10 % held out: 900 treated of whom 90 ordered (10 %), 100 held out of
        // whom 5 ordered (5 %). Orders 120 / 6, revenue 36,000,000 / 1,500,000 VND; cost 49,500.
        let l = lift(900, 90, 100, 5, [120, 6], [36_000_000, 1_500_000], 49_500);
        let close = |a: f64, b: f64| (a - b).abs() < 5e-6;
        assert_eq!((l.entrants, l.treatment, l.control), (1000, 900, 100));
        assert!(close(l.treatment_conversion_rate.unwrap(), 0.10) && close(l.control_conversion_rate.unwrap(), 0.05));
        // 0.10 − 0.05; SE = √(0.1·0.9/900 + 0.05·0.95/100) = √0.000575 = 0.0239792;
        // 1.959964 × SE = 0.0469983: [0.0030017, 0.0969983].
        assert!(close(l.absolute_lift.unwrap(), 0.05));
        let [lo, hi] = l.absolute_lift_ci95.unwrap();
        assert!(close(lo, 0.0030017) && close(hi, 0.0969983), "{lo} {hi}");
        assert!(l.significant);
        // 0.05 / 0.05 = +100 %; ln 2 ± 1.959964 × √(0.9/90 + 0.95/5) = 0.693147 ± 0.876523:
        // e^−0.183375 − 1 = −0.167544, e^1.569670 − 1 = 3.805061.
        assert!(close(l.relative_lift.unwrap(), 1.0));
        let [lo, hi] = l.relative_lift_ci95.unwrap();
        assert!(close(lo, -0.167544) && close(hi, 3.805061), "{lo} {hi}");
        // The control scaled to the treatment's size (× 9): 90 − 45, 120 − 54, 36.0M − 13.5M;
        // 49,500 / 66 = 750 VND an incremental order.
        assert!(close(l.incremental_conversions.unwrap(), 45.0));
        assert!(close(l.incremental_orders.unwrap(), 66.0));
        assert!(close(l.incremental_revenue_vnd.unwrap(), 22_500_000.0));
        assert!(close(l.cost_per_incremental_order_vnd.unwrap(), 750.0));
    }

    #[test]
    fn lift_says_nothing_it_cannot_compute() {
        // No control group: rates, no lift.
        let l = lift(50, 5, 0, 0, [5, 0], [100, 0], 0);
        assert_eq!((l.treatment_conversion_rate, l.control_conversion_rate, l.absolute_lift), (Some(0.1), None, None));
        // No control conversions: an absolute lift, no relative one; no orders added, no cost per.
        let l = lift(10, 0, 10, 0, [0, 0], [0, 0], 500);
        assert_eq!((l.absolute_lift, l.relative_lift, l.significant, l.cost_per_incremental_order_vnd), (Some(0.0), None, false, None));
    }
}
