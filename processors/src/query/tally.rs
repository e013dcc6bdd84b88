//! An app's engagement kept up to date one record at a time. Each profile's (and each user's
//! interests') contribution is added when its record arrives and taken out when a newer record
//! replaces it or an erasure removes it, so a refresh costs the number of days, cohorts and
//! products the app has, never the number of its users. [`super::summaries::engagement`], which reads
//! every profile, is the definition; a test holds the two equal.
//!
//! Why each figure can be kept so, with `today` the day of the latest `as_of` among the app's
//! profiles (no profile's active days come after its own `as_of`, so none after `today`):
//! - DAU and the daily actives: users per active day.
//! - WAU, MAU: a user is active within the last N days exactly when their *latest* active day is;
//!   so users per latest active day, summed over the window.
//! - Retention: per first-seen day, the users and those active on days 1, 7 and 30.
//! - The funnel: users with a product view, a cart add, a checkout, an order.
//! - Trending: every user's scores decayed to the latest interests' time `now`, summed. With one
//!   half-life `h`, `score · 2^−(now − as_of)/h = 2^−(now − r)/h · score · 2^(as_of − r)/h` for any
//!   reference time `r`: the sum of `score · 2^(as_of − r)/h` is kept per product (per half-life),
//!   and scaled by `2^−(now − r)/h` at the refresh. `r` moves forward when the exponent grows large.

use std::collections::{BTreeMap, HashMap};

use schemas::derived::{Profile, UserInterests};
use schemas::time::vn_day;

use super::summaries::{COHORTS, Cohort, DayCount, Engagement, Funnel, Scored, day_name, top_trending};

/// Adds `by` to a count of a multiset; a count that reaches zero is removed.
fn bump(m: &mut BTreeMap<i64, i64>, k: i64, by: i64) {
    let n = m.entry(k).or_default();
    *n += by;
    if *n == 0 {
        m.remove(&k);
    }
}

/// Sums of decayed scores of one half-life, relative to a reference time.
#[derive(Default)]
struct Trend {
    reference: i64,
    /// Product or category → (Σ score · 2^(as_of − reference)/h, users contributing).
    products: HashMap<String, (f64, i64)>,
    categories: HashMap<String, (f64, i64)>,
}

/// The largest exponent kept before the reference moves (2^±600 is far inside f64's range).
const MAX_EXPONENT: f64 = 600.0;

impl Trend {
    fn factor(&self, at: i64, half_life: i64) -> f64 {
        if half_life > 0 { ((at - self.reference) as f64 / half_life as f64).exp2() } else { 1.0 }
    }

    fn add(&mut self, i: &UserInterests, sign: i64) {
        if i.half_life_ms > 0 && ((i.as_of - self.reference) as f64) / i.half_life_ms as f64 > MAX_EXPONENT {
            // Move the reference forward to this record's time, rescaling what is kept (by at
            // most 2^−exponent: sums only shrink). A record far older than the reference is not
            // a reason to move it back: its weight underflows towards 0, as its decayed score
            // does at `now`.
            let scale = ((self.reference - i.as_of) as f64 / i.half_life_ms as f64).exp2();
            for (s, _) in self.products.values_mut().chain(self.categories.values_mut()) {
                *s *= scale;
            }
            self.reference = i.as_of;
        }
        let f = self.factor(i.as_of, i.half_life_ms);
        for (map, scores) in [(&mut self.products, &i.products), (&mut self.categories, &i.categories)] {
            for s in scores {
                let e = map.entry(s.id.clone()).or_insert((0.0, 0));
                e.0 += sign as f64 * s.score * f;
                e.1 += sign;
                if e.1 == 0 {
                    map.remove(&s.id);
                }
            }
        }
    }
}

/// One app's engagement, kept by contributions.
#[derive(Default)]
pub struct Tally {
    /// Profiles' `as_of`, as a multiset (the latest is `today`'s source).
    as_of: BTreeMap<i64, i64>,
    /// Active day → users active that day.
    active_on: BTreeMap<i64, i64>,
    /// A user's latest active day → users.
    last_active: BTreeMap<i64, i64>,
    /// First-seen day → [users, active on day 1, day 7, day 30].
    cohorts: BTreeMap<i64, [i64; 4]>,
    /// [users, viewed a product, added to cart, started checkout, ordered].
    funnel: [i64; 5],
    /// Interests' `as_of`, as a multiset (the latest is trending's `now`).
    interests_as_of: BTreeMap<i64, i64>,
    /// By half-life.
    trends: HashMap<i64, Trend>,
}

impl Tally {
    /// Adds (`sign` 1) or takes out (`sign` −1) a profile's contribution.
    pub fn profile(&mut self, p: &Profile, sign: i64) {
        bump(&mut self.as_of, p.as_of, sign);
        let mut days = p.recent_active_days.clone();
        days.sort_unstable();
        days.dedup();
        for d in &days {
            bump(&mut self.active_on, *d, sign);
        }
        if let Some(last) = days.last() {
            bump(&mut self.last_active, *last, sign);
        }
        let c = vn_day(p.first_seen);
        let e = self.cohorts.entry(c).or_default();
        for (n, flag) in e.iter_mut().zip([true, p.active_on_day1, p.active_on_day7, p.active_on_day30]) {
            *n += sign * i64::from(flag);
        }
        if e[0] == 0 {
            self.cohorts.remove(&c);
        }
        for (n, flag) in self.funnel.iter_mut().zip([true, p.product_views > 0, p.cart_adds > 0, p.checkouts > 0, p.orders > 0]) {
            *n += sign * i64::from(flag);
        }
    }

    /// Adds (`sign` 1) or takes out (`sign` −1) a user's interests.
    pub fn interests(&mut self, i: &UserInterests, sign: i64) {
        bump(&mut self.interests_as_of, i.as_of, sign);
        let reference = i.as_of;
        self.trends.entry(i.half_life_ms).or_insert_with(|| Trend { reference, ..Trend::default() }).add(i, sign);
    }

    /// Whether nothing of the app is left.
    pub fn is_empty(&self) -> bool {
        self.funnel[0] == 0 && self.interests_as_of.is_empty()
    }

    /// The app's engagement now: the same as [`super::summaries::engagement`] of its records.
    pub fn snapshot(&self, app: &str) -> Engagement {
        let as_of = self.as_of.keys().next_back().copied().unwrap_or(0);
        let today = vn_day(as_of);
        let n = |v: i64| v.max(0) as usize;
        let within = |days: i64| n(self.last_active.range(today - days + 1..=today).map(|(_, c)| *c).sum());
        let (dau, wau, mau) = (n(self.active_on.get(&today).copied().unwrap_or(0)), within(7), within(30));
        let daily_active =
            (today - 29..=today).map(|d| DayCount { day: day_name(d), users: n(self.active_on.get(&d).copied().unwrap_or(0)) }).collect();
        let retention = self
            .cohorts
            .range(today - COHORTS + 1..)
            .rev()
            .map(|(c, [users, d1, d7, d30])| {
                let share = |k: i64, after: i64| (c + after <= today).then(|| k as f64 / *users as f64);
                Cohort { cohort: day_name(*c), users: n(*users), day1: share(*d1, 1), day7: share(*d7, 7), day30: share(*d30, 30) }
            })
            .collect();
        let [users, viewed_product, added_to_cart, started_checkout, ordered] = self.funnel.map(n);
        let (top_products, top_categories) = self.trending();
        Engagement {
            app_id: app.to_string(),
            as_of,
            day: day_name(today),
            users,
            dau,
            wau,
            mau,
            stickiness: if mau > 0 { dau as f64 / mau as f64 } else { 0.0 },
            daily_active,
            retention,
            funnel: Funnel { users, viewed_product, added_to_cart, started_checkout, ordered },
            top_products,
            top_categories,
        }
    }

    fn trending(&self) -> (Vec<Scored>, Vec<Scored>) {
        let now = self.interests_as_of.keys().next_back().copied().unwrap_or(0);
        let mut products: HashMap<&str, f64> = HashMap::new();
        let mut categories: HashMap<&str, f64> = HashMap::new();
        for (half_life, t) in &self.trends {
            // `s · 2^−(now − r)/h`, taken in the log domain so that neither factor can overflow
            // on its own (a client's far-off `event_time` can put `now` and `r` far apart); a
            // sum that float residue left at or below 0 is 0.
            let shift = if *half_life > 0 { (now - t.reference) as f64 / *half_life as f64 } else { 0.0 };
            let at_now = |s: f64| if s > 0.0 { (s.log2() - shift).exp2() } else { 0.0 };
            for (id, (s, _)) in &t.products {
                *products.entry(id).or_default() += at_now(*s);
            }
            for (id, (s, _)) in &t.categories {
                *categories.entry(id).or_default() += at_now(*s);
            }
        }
        (top_trending(products), top_trending(categories))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::summaries::engagement;
    use rand::{Rng, SeedableRng};
    use schemas::derived::Score;
    use schemas::time::DAY_MS;

    /// 2026-01-01T00:00:00+07:00.
    const T0: i64 = 1_767_200_400_000;

    fn random_profile(rng: &mut impl Rng, user: usize) -> Profile {
        let first = T0 + rng.random_range(0..90) * DAY_MS + rng.random_range(0..DAY_MS);
        let mut days: Vec<i64> = (0..rng.random_range(1..6)).map(|_| vn_day(first) + rng.random_range(0..40)).collect();
        days.push(vn_day(first));
        days.sort_unstable();
        days.dedup();
        let last = *days.last().unwrap();
        Profile {
            app_id: "demo".into(),
            user_key: format!("u{user}"),
            first_seen: first,
            as_of: last * DAY_MS + rng.random_range(0..DAY_MS),
            recent_active_days: days,
            active_on_day1: rng.random_bool(0.4),
            active_on_day7: rng.random_bool(0.2),
            active_on_day30: rng.random_bool(0.1),
            product_views: rng.random_range(0..3),
            cart_adds: rng.random_range(0..2),
            checkouts: rng.random_range(0..2),
            orders: rng.random_range(0..2),
            ..Default::default()
        }
    }

    fn random_interests(rng: &mut impl Rng, user: usize) -> UserInterests {
        let scores = |rng: &mut dyn rand::RngCore, prefix: &str| -> Vec<Score> {
            (0..rng.random_range(0..4))
                .map(|_| Score { id: format!("{prefix}{}", rng.random_range(0..12)), score: rng.random_range(0.1..10.0) })
                .collect()
        };
        UserInterests {
            app_id: "demo".into(),
            user_key: format!("u{user}"),
            as_of: T0 + rng.random_range(0..60) * DAY_MS,
            half_life_ms: 7 * DAY_MS,
            products: scores(rng, "p"),
            categories: scores(rng, "c"),
            terms: Vec::new(),
        }
    }

    fn close(a: &[Scored], b: &[Scored]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.id == y.id && (x.score - y.score).abs() <= 1e-6 * x.score.abs().max(1.0))
    }

    /// Users arrive, change (their records replaced many times) and are erased, in a random
    /// order: after every step the tally's engagement equals the one computed from every record.
    #[test]
    fn the_tally_equals_the_engagement_of_every_record_at_every_step() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let mut tally = Tally::default();
        let mut profiles: HashMap<usize, Profile> = HashMap::new();
        let mut interests: HashMap<usize, UserInterests> = HashMap::new();
        for step in 0..3000 {
            let user = rng.random_range(0..200);
            match rng.random_range(0..10) {
                0 => {
                    if let Some(old) = profiles.remove(&user) {
                        tally.profile(&old, -1);
                    }
                    if let Some(old) = interests.remove(&user) {
                        tally.interests(&old, -1);
                    }
                }
                1..=5 => {
                    let p = random_profile(&mut rng, user);
                    if let Some(old) = profiles.insert(user, p.clone()) {
                        tally.profile(&old, -1);
                    }
                    tally.profile(&p, 1);
                }
                _ => {
                    let i = random_interests(&mut rng, user);
                    if let Some(old) = interests.insert(user, i.clone()) {
                        tally.interests(&old, -1);
                    }
                    tally.interests(&i, 1);
                }
            }
            if step % 100 == 99 {
                let (p, i): (Vec<&Profile>, Vec<&UserInterests>) = (profiles.values().collect(), interests.values().collect());
                let want = engagement("demo", &p, &i);
                let got = tally.snapshot("demo");
                assert!(close(&got.top_products, &want.top_products) && close(&got.top_categories, &want.top_categories), "step {step}");
                let strip = |mut e: Engagement| {
                    e.top_products.clear();
                    e.top_categories.clear();
                    e
                };
                assert_eq!(strip(got), strip(want), "step {step}");
            }
        }
        for (_, p) in profiles.drain() {
            tally.profile(&p, -1);
        }
        for (_, i) in interests.drain() {
            tally.interests(&i, -1);
        }
        assert!(tally.is_empty());
        assert_eq!(tally.snapshot("demo"), engagement("demo", &[], &[]));
    }

    /// Scores months apart with a short half-life move the reference instead of overflowing;
    /// a record from the distant past (a client's `event_time` of 1 ms) counts as nothing, in
    /// any order, added or taken out.
    #[test]
    fn far_apart_times_keep_finite_scores() {
        let mut tally = Tally::default();
        let at = |days: i64, score: f64| UserInterests {
            as_of: T0 + days * DAY_MS,
            half_life_ms: 3600 * 1000,
            products: vec![Score { id: "p".into(), score }],
            ..Default::default()
        };
        tally.interests(&at(0, 1.0), 1);
        tally.interests(&at(400, 2.0), 1);
        let (top, _) = tally.trending();
        assert!(top[0].score.is_finite() && (top[0].score - 2.0).abs() < 1e-9, "{top:?}");
        let ancient = UserInterests { as_of: 1, ..at(0, 5.0) };
        for sign in [1, -1, 1] {
            tally.interests(&ancient, sign);
            let (top, _) = tally.trending();
            assert!(top.iter().all(|s| s.score.is_finite()) && (top[0].score - 2.0).abs() < 1e-9, "{top:?}");
        }
        tally.interests(&at(0, 1.0), -1);
        tally.interests(&at(500, 3.0), 1);
        let (top, _) = tally.trending();
        assert!(top.iter().all(|s| s.score.is_finite()), "{top:?}");
        // A record from the far future moves the reference there; once it is gone, `now` is far
        // behind the reference, and the scores are still numbers.
        let future = UserInterests { as_of: T0 + 100_000 * DAY_MS, ..at(0, 1.0) };
        tally.interests(&future, 1);
        tally.interests(&future, -1);
        let (top, _) = tally.trending();
        assert!(top.iter().all(|s| s.score.is_finite()), "{top:?}");
    }
}
