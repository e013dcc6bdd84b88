//! Sessions: a user's activity without a gap longer than `--session-gap` (default 30 min). When
//! a session closes — its gap passes in event time, or a later event arrives after the gap — its
//! summary goes to `zmp.sessions.v1`.

use serde::{Deserialize, Serialize};

use schemas::derived::{Session, stable_id};
use schemas::event::*;

use crate::runtime::metrics::METRICS;
use crate::runtime::processor::{Ctx, Processor, split_user_key, user_key};
use crate::runtime::store::{Change, KvCache, TaskDb};

pub const STORE: &str = "sessions";
/// At most this many distinct products are listed in a session summary.
const MAX_PRODUCTS: usize = 50;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OpenSession {
    user: User,
    start: i64,
    end: i64,
    events: i64,
    screens: i64,
    product_views: i64,
    products: Vec<String>,
    searches: i64,
    cart_adds: i64,
    orders: i64,
    revenue: i64,
    landing_screen: Option<String>,
    exit_screen: Option<String>,
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    affiliate_id: Option<String>,
    referrer: Option<String>,
}

pub struct Sessions {
    gap_ms: i64,
    cache: KvCache<OpenSession>,
}

impl Sessions {
    pub fn new(gap_ms: i64) -> Sessions {
        Sessions { gap_ms, cache: KvCache::new(STORE) }
    }
}

fn summary(app: &str, key: &str, s: &OpenSession) -> Session {
    Session {
        session_id: stable_id(&[app, key, &s.start.to_string()]),
        app_id: app.to_string(),
        user: s.user.clone(),
        start: s.start,
        end: s.end,
        duration_ms: s.end - s.start,
        events: s.events,
        screens: s.screens,
        product_views: s.product_views,
        products_viewed: s.products.clone(),
        searches: s.searches,
        cart_adds: s.cart_adds,
        orders: s.orders,
        revenue: s.revenue,
        landing_screen: s.landing_screen.clone(),
        exit_screen: s.exit_screen.clone(),
        utm_source: s.utm_source.clone(),
        utm_medium: s.utm_medium.clone(),
        utm_campaign: s.utm_campaign.clone(),
        affiliate_id: s.affiliate_id.clone(),
        referrer: s.referrer.clone(),
        converted: s.orders > 0,
    }
}

fn merge_ids(into: &mut User, from: &User) {
    for (slot, v) in
        [(&mut into.zalo_id, &from.zalo_id), (&mut into.anonymous_id, &from.anonymous_id), (&mut into.oa_user_id, &from.oa_user_id)]
    {
        if slot.is_none() {
            slot.clone_from(v);
        }
    }
}

impl Processor for Sessions {
    fn store(&self) -> &'static str {
        STORE
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        let t = event.time();
        let app = event.app_id();
        let key = user_key(app, &event.user().key);
        let gap = self.gap_ms;
        let slot = self.cache.entry(ctx.db, &key)?;
        if event.is_forget() {
            // Erased: the open session is dropped, not summarised (its timer finds nothing).
            *slot = None;
            return Ok(());
        }
        if let Some(s) = slot.as_ref() {
            if t > s.end + gap {
                // The old session ended before this event: close it now, in event time.
                ctx.emit(&event.user().key, &summary(app, &event.user().key, s))?;
                ctx.cancel(s.end + gap, &key);
                *slot = None;
            } else if t < s.start - gap {
                // Belongs to a session that is already closed.
                METRICS.late_events.with_label_values(&[STORE]).inc();
                return Ok(());
            }
        }
        let is_new = slot.is_none();
        let s = slot.get_or_insert_with(|| OpenSession { user: event.user().clone(), start: t, end: t, ..Default::default() });
        let old_deadline = s.end + gap;
        merge_ids(&mut s.user, event.user());
        let ctx_of = event.context();
        if is_new || t < s.start {
            s.start = t;
            s.landing_screen.clone_from(&ctx_of.screen);
            s.utm_source.clone_from(&ctx_of.utm_source);
            s.utm_medium.clone_from(&ctx_of.utm_medium);
            s.utm_campaign.clone_from(&ctx_of.utm_campaign);
            s.affiliate_id.clone_from(&ctx_of.affiliate_id);
            s.referrer.clone_from(&ctx_of.referrer);
        }
        if is_new || t >= s.end {
            s.end = t;
            if ctx_of.screen.is_some() {
                s.exit_screen.clone_from(&ctx_of.screen);
            }
        }
        s.events += 1;
        match event {
            InputEvent::View(v) => match v.kind {
                ViewType::PageViewed => s.screens += 1,
                ViewType::ProductViewed => {
                    s.screens += 1;
                    s.product_views += 1;
                    if let Some(p) = &v.properties.product_id
                        && s.products.len() < MAX_PRODUCTS
                        && !s.products.contains(p)
                    {
                        s.products.push(p.clone());
                    }
                }
                ViewType::Search => s.searches += 1,
                ViewType::ProductClicked | ViewType::ProductShared => {}
            },
            InputEvent::Cart(c) if c.kind == CartType::CartItemAdded => s.cart_adds += 1,
            InputEvent::Order(o) if o.kind == OrderType::OrderPlaced => {
                s.orders += 1;
                s.revenue = s.revenue.saturating_add(o.properties.total.unwrap_or(0));
            }
            InputEvent::Cart(_) | InputEvent::Order(_) | InputEvent::Identity(_) | InputEvent::Engagement(_) | InputEvent::Message(_) => {}
        }
        let new_deadline = s.end + gap;
        if is_new {
            ctx.schedule(new_deadline, key);
        } else if new_deadline != old_deadline {
            ctx.cancel(old_deadline, &key);
            ctx.schedule(new_deadline, key);
        }
        Ok(())
    }

    fn timers(&self, db: &TaskDb, out: &mut Vec<(i64, Vec<u8>)>) -> anyhow::Result<()> {
        for (key, s) in self.cache.committed(db)? {
            out.push((s.end + self.gap_ms, key));
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: &[u8], deadline: i64) -> anyhow::Result<()> {
        let slot = self.cache.entry(ctx.db, key)?;
        let Some(s) = slot.as_ref() else { return Ok(()) };
        if s.end + self.gap_ms != deadline {
            return Ok(());
        }
        let (app, user) = split_user_key(key).ok_or_else(|| anyhow::anyhow!("bad session key"))?;
        ctx.emit(user, &summary(app, user, s))?;
        *slot = None;
        Ok(())
    }

    fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
        self.cache.take_dirty(out)
    }

    fn trim(&mut self, max_cached: usize) {
        self.cache.trim(max_cached);
    }
}
