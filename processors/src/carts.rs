//! Abandoned carts. Each cart keeps its lines, its value and a version that grows with every
//! change; a deadline `--cart-timeout` (default 60 min) after its last activity. When the deadline
//! passes with the cart still open and not empty, one trigger for that version goes to
//! `zmp.cart-triggers.v1`.
//!
//! An order closes its cart (by `cart_id`; without one, every open cart started before the
//! order). Closing is remembered, so cart events that arrive after the order but happened before
//! it — the topics are read independently — do not reopen the cart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use schemas::derived::{CartTrigger, ViewedProduct, stable_id};
use schemas::event::*;

use crate::runtime::metrics::METRICS;
use crate::runtime::processor::{Ctx, Processor, split_user_key, user_key};
use crate::runtime::store::{Change, KvCache, TaskDb};

pub const STORE: &str = "carts";
/// How long a closed cart id is remembered, and how many.
const CLOSED_MEMORY_MS: i64 = 30 * 24 * 3600 * 1000;
const CLOSED_MEMORY_COUNT: usize = 50;
/// Open carts a user may have: a new one past this pushes out the least recently active, without
/// a trigger. A Mini App has one cart a user; the rest is room for ids that change.
pub const MAX_OPEN_CARTS: usize = 5;
/// Distinct products a cart may hold: a new product past this is not added (counted).
pub const MAX_LINES: usize = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cart {
    lines: BTreeMap<String, Item>,
    version: i64,
    first_activity: i64,
    last_activity: i64,
    triggered_version: Option<i64>,
}

impl Cart {
    fn deadline(&self, timeout: i64) -> i64 {
        self.last_activity + timeout
    }
    fn value(&self) -> i64 {
        self.lines.values().fold(0i64, |sum, i| sum.saturating_add(i.value()))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserCarts {
    user: User,
    open: BTreeMap<String, Cart>,
    /// cart id → when its order happened.
    closed: BTreeMap<String, i64>,
    last_viewed: Option<ViewedProduct>,
}

pub struct Carts {
    timeout_ms: i64,
    cache: KvCache<UserCarts>,
}

impl Carts {
    pub fn new(timeout_ms: i64) -> Carts {
        Carts { timeout_ms, cache: KvCache::new(STORE) }
    }
}

fn timer_key(key: &[u8], cart_id: &str) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0x1e);
    k.extend_from_slice(cart_id.as_bytes());
    k
}

impl Processor for Carts {
    fn store(&self) -> &'static str {
        STORE
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        if event.is_forget() {
            // Erased: open carts go without a trigger (their timers find nothing).
            *self.cache.entry(ctx.db, &user_key(event.app_id(), &event.user().key))? = None;
            return Ok(());
        }
        let relevant = match event {
            InputEvent::View(v) => v.kind == ViewType::ProductViewed,
            InputEvent::Cart(_) => true,
            InputEvent::Order(o) => matches!(o.kind, OrderType::OrderPlaced | OrderType::OrderPaid),
            InputEvent::Identity(_) | InputEvent::Engagement(_) | InputEvent::Message(_) => false,
        };
        if !relevant {
            return Ok(());
        }
        let t = event.time();
        let key = user_key(event.app_id(), &event.user().key);
        let timeout = self.timeout_ms;
        let state = self.cache.entry(ctx.db, &key)?.get_or_insert_with(|| UserCarts { user: event.user().clone(), ..Default::default() });
        for (slot, v) in [
            (&mut state.user.zalo_id, &event.user().zalo_id),
            (&mut state.user.oa_user_id, &event.user().oa_user_id),
            (&mut state.user.anonymous_id, &event.user().anonymous_id),
        ] {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        match event {
            InputEvent::View(v) => {
                let p = &v.properties;
                if let Some(id) = &p.product_id
                    && state.last_viewed.as_ref().is_none_or(|l| l.viewed_at <= t)
                {
                    state.last_viewed = Some(ViewedProduct {
                        product_id: id.clone(),
                        product_name: p.product_name.clone(),
                        category: p.category.clone(),
                        price: p.price,
                        viewed_at: t,
                    });
                }
            }
            InputEvent::Cart(c) => {
                let p = &c.properties;
                if state.closed.get(&p.cart_id).is_some_and(|closed_at| t <= *closed_at) {
                    // Happened before the order that closed this cart.
                    return Ok(());
                }
                if !state.open.contains_key(&p.cart_id) && state.open.len() >= MAX_OPEN_CARTS {
                    // The least recently active cart goes, without a trigger.
                    if let Some(oldest) = state.open.iter().min_by_key(|(_, c)| c.last_activity).map(|(id, _)| id.clone())
                        && let Some(gone) = state.open.remove(&oldest)
                    {
                        ctx.cancel(gone.deadline(timeout), &timer_key(&key, &oldest));
                        METRICS.bounded.with_label_values(&[STORE, "open_carts"]).inc();
                    }
                }
                let cart = state.open.entry(p.cart_id.clone()).or_insert_with(|| Cart {
                    first_activity: t,
                    last_activity: t,
                    ..Default::default()
                });
                let old_deadline = (cart.version > 0).then(|| cart.deadline(timeout));
                let before = cart.lines.clone();
                match (c.kind, &p.product_id) {
                    (CartType::CartItemAdded | CartType::CartItemUpdated, Some(id))
                        if !cart.lines.contains_key(id) && cart.lines.len() >= MAX_LINES =>
                    {
                        METRICS.bounded.with_label_values(&[STORE, "lines_per_cart"]).inc();
                    }
                    (CartType::CartItemAdded, Some(id)) => {
                        let line = cart.lines.entry(id.clone()).or_insert_with(|| Item { product_id: id.clone(), ..Default::default() });
                        line.quantity = line.quantity.saturating_add(p.quantity.unwrap_or(1));
                        line.price = p.price.unwrap_or(line.price);
                        line.product_name = p.product_name.clone().or(line.product_name.take());
                        line.category = p.category.clone().or(line.category.take());
                    }
                    (CartType::CartItemRemoved, Some(id)) => {
                        if let Some(line) = cart.lines.get_mut(id) {
                            line.quantity = line.quantity.saturating_sub(p.quantity.unwrap_or(line.quantity));
                            if line.quantity <= 0 {
                                cart.lines.remove(id);
                            }
                        }
                    }
                    (CartType::CartItemUpdated, Some(id)) => {
                        let q = p.quantity.unwrap_or(0);
                        if q <= 0 {
                            cart.lines.remove(id);
                        } else {
                            let line = cart.lines.entry(id.clone()).or_insert_with(|| Item {
                                product_id: id.clone(),
                                price: p.price.unwrap_or(0),
                                ..Default::default()
                            });
                            line.quantity = q;
                        }
                    }
                    (CartType::CartViewed | CartType::CheckoutStarted, _) => {
                        // The app's own view of the cart fills in lines we never saw added.
                        if cart.lines.is_empty() {
                            for i in &p.items {
                                if cart.lines.len() >= MAX_LINES && !cart.lines.contains_key(&i.product_id) {
                                    METRICS.bounded.with_label_values(&[STORE, "lines_per_cart"]).inc();
                                    break;
                                }
                                cart.lines.insert(i.product_id.clone(), i.clone());
                            }
                        }
                    }
                    (CartType::CartItemAdded | CartType::CartItemRemoved | CartType::CartItemUpdated, None) => {}
                }
                if cart.lines != before || cart.version == 0 {
                    cart.version += 1;
                }
                cart.first_activity = cart.first_activity.min(t);
                cart.last_activity = cart.last_activity.max(t);
                let new_deadline = cart.deadline(timeout);
                if old_deadline != Some(new_deadline) {
                    if let Some(d) = old_deadline {
                        ctx.cancel(d, &timer_key(&key, &p.cart_id));
                    }
                    ctx.schedule(new_deadline, timer_key(&key, &p.cart_id));
                }
            }
            InputEvent::Order(o) => {
                let closes: Vec<String> = match &o.properties.cart_id {
                    Some(id) => vec![id.clone()],
                    None => state.open.iter().filter(|(_, c)| c.first_activity <= t).map(|(id, _)| id.clone()).collect(),
                };
                for id in closes {
                    if let Some(cart) = state.open.remove(&id) {
                        ctx.cancel(cart.deadline(timeout), &timer_key(&key, &id));
                    }
                    let at = state.closed.entry(id).or_insert(t);
                    *at = (*at).max(t);
                }
                // Forget old closings, keeping the most recent.
                state.closed.retain(|_, at| t - *at < CLOSED_MEMORY_MS);
                while state.closed.len() > CLOSED_MEMORY_COUNT {
                    let oldest = state.closed.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        state.closed.remove(&k);
                    }
                }
            }
            InputEvent::Identity(_) | InputEvent::Engagement(_) | InputEvent::Message(_) => {}
        }
        Ok(())
    }

    fn timers(&self, db: &TaskDb, out: &mut Vec<(i64, Vec<u8>)>) -> anyhow::Result<()> {
        for (key, state) in self.cache.committed(db)? {
            for (id, cart) in state.open.iter().filter(|(_, c)| c.version > 0) {
                out.push((cart.deadline(self.timeout_ms), timer_key(&key, id)));
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], deadline: i64) -> anyhow::Result<()> {
        let Some(sep) = key.iter().rposition(|b| *b == 0x1e) else { return Ok(()) };
        let (user_part, cart_id) = (&key[..sep], String::from_utf8_lossy(&key[sep + 1..]).into_owned());
        let Some((app, user)) = split_user_key(user_part) else { return Ok(()) };
        let timeout = self.timeout_ms;
        let slot = self.cache.entry(ctx.db, user_part)?;
        let Some(state) = slot.as_mut() else { return Ok(()) };
        let Some(cart) = state.open.get_mut(&cart_id) else { return Ok(()) };
        if cart.deadline(timeout) != deadline || cart.lines.is_empty() || cart.triggered_version == Some(cart.version) {
            return Ok(());
        }
        cart.triggered_version = Some(cart.version);
        let last_viewed = state.last_viewed.clone().filter(|v| v.viewed_at <= deadline);
        let trigger = CartTrigger {
            trigger_id: stable_id(&[app, user, &cart_id, &cart.version.to_string()]),
            app_id: app.to_string(),
            user: state.user.clone(),
            cart_id: cart_id.clone(),
            cart_version: cart.version,
            items: cart.lines.values().cloned().collect(),
            value: cart.value(),
            last_activity: cart.last_activity,
            deadline,
            last_viewed_product: last_viewed,
        };
        ctx.emit(user, &trigger)
    }

    fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
        self.cache.take_dirty(out)
    }

    fn trim(&mut self, max_cached: usize) {
        self.cache.trim(max_cached);
    }
}
