//! Interest scores per user × product, × category and × search term, exponentially decayed in
//! event time: an interest worth `w` at time `t` is worth `w · 2^(−(now − t) / half-life)` later.
//! The top N of each go to the compacted `zmp.interests.v1` (key `app/user`) at each commit, for the
//! users whose scores changed.
//!
//! Weights (see docs/processors.md):
//!
//! | event | product | its category | search term |
//! |---|---|---|---|
//! | `product_viewed` | 1 + dwell seconds / 10, at most 4 | same | |
//! | `product_clicked` | 0.5 | same | |
//! | `product_shared` | 3 | same | |
//! | `search` | | | 2 |
//! | `cart_item_added` | 5 | same | |
//! | `order_placed` | 10 per line | same | |

use serde::{Deserialize, Serialize};

use schemas::derived::{Score, UserInterests};
use schemas::event::*;
use schemas::topics::{Topic, app_user_key};

use crate::runtime::processor::{Ctx, Processor, split_user_key, user_key};
use crate::runtime::store::{Change, KvCache};

pub const STORE: &str = "interests";

pub const W_VIEW: f64 = 1.0;
pub const W_VIEW_DWELL_PER_10S: f64 = 1.0;
pub const W_VIEW_MAX: f64 = 4.0;
pub const W_CLICK: f64 = 0.5;
pub const W_SHARE: f64 = 3.0;
pub const W_SEARCH: f64 = 2.0;
pub const W_CART_ADD: f64 = 5.0;
pub const W_PURCHASE: f64 = 10.0;

/// Entries kept per list; the rest (the weakest) are forgotten.
const KEEP_PRODUCTS: usize = 100;
const KEEP_OTHERS: usize = 30;
/// Scores below this are forgotten.
const FORGET_BELOW: f64 = 0.01;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterestState {
    /// Scores are decayed to this time.
    pub as_of: i64,
    pub products: Vec<(String, f64)>,
    pub categories: Vec<(String, f64)>,
    pub terms: Vec<(String, f64)>,
}

impl InterestState {
    /// Adds `weight` observed at time `t` to `id` in `list` (0 products, 1 categories, 2 terms).
    pub fn add(&mut self, list: usize, id: &str, weight: f64, t: i64, half_life_ms: i64) {
        let factor = |dt: i64| 0.5f64.powf(dt as f64 / half_life_ms as f64);
        let weight = if t >= self.as_of {
            if self.as_of != 0 && t > self.as_of {
                let f = factor(t - self.as_of);
                for l in [&mut self.products, &mut self.categories, &mut self.terms] {
                    for (_, s) in l.iter_mut() {
                        *s *= f;
                    }
                }
            }
            self.as_of = t;
            weight
        } else {
            weight * factor(self.as_of - t)
        };
        let (l, keep) = match list {
            0 => (&mut self.products, KEEP_PRODUCTS),
            1 => (&mut self.categories, KEEP_OTHERS),
            _ => (&mut self.terms, KEEP_OTHERS),
        };
        match l.iter_mut().find(|(k, _)| k == id) {
            Some((_, s)) => *s += weight,
            None => l.push((id.to_string(), weight)),
        }
        if l.len() > keep + keep / 5 {
            sort_desc(l);
            l.truncate(keep);
        }
    }

    fn forget_faint(&mut self) {
        for l in [&mut self.products, &mut self.categories, &mut self.terms] {
            l.retain(|(_, s)| *s >= FORGET_BELOW);
        }
    }
}

fn sort_desc(l: &mut [(String, f64)]) {
    l.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

fn top(l: &[(String, f64)], n: usize) -> Vec<Score> {
    let mut v = l.to_vec();
    sort_desc(&mut v);
    v.into_iter().take(n).map(|(id, score)| Score { id, score }).collect()
}

pub struct Interests {
    half_life_ms: i64,
    top_n: usize,
    cache: KvCache<InterestState>,
}

impl Interests {
    pub fn new(half_life_ms: i64, top_n: usize) -> Interests {
        Interests { half_life_ms, top_n, cache: KvCache::new(STORE) }
    }
}

/// The weight of a product view: 1, plus 1 for every 10 s the user stayed, at most 4.
pub fn view_weight(dwell_ms: Option<i64>) -> f64 {
    (W_VIEW + dwell_ms.unwrap_or(0).max(0) as f64 / 10_000.0 * W_VIEW_DWELL_PER_10S).min(W_VIEW_MAX)
}

impl Processor for Interests {
    fn store(&self) -> &'static str {
        STORE
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        if event.is_forget() {
            // Erased; the commit writes the tombstone.
            *self.cache.entry(ctx.db, &user_key(event.app_id(), &event.user().key))? = None;
            return Ok(());
        }
        // (product, category, weight) pairs and search terms this event contributes.
        let mut products: Vec<(&str, Option<&str>, f64)> = Vec::new();
        let mut term: Option<String> = None;
        match event {
            InputEvent::View(v) => {
                let p = &v.properties;
                let w = match v.kind {
                    ViewType::ProductViewed => Some(view_weight(p.dwell_ms)),
                    ViewType::ProductClicked => Some(W_CLICK),
                    ViewType::ProductShared => Some(W_SHARE),
                    ViewType::Search => {
                        term = p
                            .query
                            .as_deref()
                            .map(|q| q.trim().to_lowercase().chars().take(64).collect())
                            .filter(|q: &String| !q.is_empty());
                        None
                    }
                    ViewType::PageViewed => None,
                };
                if let (Some(w), Some(id)) = (w, &p.product_id) {
                    products.push((id, p.category.as_deref(), w));
                }
            }
            InputEvent::Cart(c) if c.kind == CartType::CartItemAdded => {
                if let Some(id) = &c.properties.product_id {
                    products.push((id, c.properties.category.as_deref(), W_CART_ADD));
                }
            }
            InputEvent::Order(o) if o.kind == OrderType::OrderPlaced => {
                for item in &o.properties.items {
                    products.push((&item.product_id, item.category.as_deref(), W_PURCHASE));
                }
            }
            InputEvent::Cart(_) | InputEvent::Order(_) | InputEvent::Identity(_) | InputEvent::Engagement(_) | InputEvent::Message(_) => {}
        }
        if products.is_empty() && term.is_none() {
            return Ok(());
        }
        let key = user_key(event.app_id(), &event.user().key);
        let t = event.time();
        let state = self.cache.entry(ctx.db, &key)?.get_or_insert_with(InterestState::default);
        for (id, category, w) in products {
            state.add(0, id, w, t, self.half_life_ms);
            if let Some(c) = category {
                state.add(1, c, w, t, self.half_life_ms);
            }
        }
        if let Some(term) = term {
            state.add(2, &term, W_SEARCH, t, self.half_life_ms);
        }
        Ok(())
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _key: &[u8], _deadline: i64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Emits the current top N of every user whose scores changed in this epoch.
    fn before_commit(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        self.emit_changed(ctx)
    }

    fn emit_changed(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        let (half_life_ms, top_n) = (self.half_life_ms, self.top_n);
        self.cache.emit_changed(|key, state| {
            let Some((app, user)) = split_user_key(key) else { return Ok(()) };
            let Some(s) = state else {
                ctx.tombstone(Topic::Interests, &app_user_key(app, user)); // forgotten
                return Ok(());
            };
            let mut s = s.clone();
            s.forget_faint();
            let record = UserInterests {
                app_id: app.to_string(),
                user_key: user.to_string(),
                as_of: s.as_of,
                half_life_ms,
                products: top(&s.products, top_n),
                categories: top(&s.categories, top_n),
                terms: top(&s.terms, top_n),
            };
            ctx.emit(&app_user_key(app, user), &record)
        })
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

    const DAY: i64 = 24 * 3600 * 1000;

    #[test]
    fn scores_halve_every_half_life() {
        let mut s = InterestState::default();
        s.add(0, "p", 8.0, DAY, 7 * DAY);
        s.add(0, "q", 1.0, 8 * DAY, 7 * DAY);
        let p = s.products.iter().find(|(k, _)| k == "p").unwrap().1;
        assert!((p - 4.0).abs() < 1e-9, "{p}");
        // An older event counts less, decayed to the current time.
        s.add(0, "r", 2.0, DAY, 7 * DAY);
        let r = s.products.iter().find(|(k, _)| k == "r").unwrap().1;
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        assert_eq!(top(&s.products, 2).iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), vec!["p", "q"]);
    }

    #[test]
    fn dwell_time_raises_a_view_up_to_a_cap() {
        assert_eq!(view_weight(None), 1.0);
        assert_eq!(view_weight(Some(10_000)), 2.0);
        assert_eq!(view_weight(Some(600_000)), 4.0);
    }
}
