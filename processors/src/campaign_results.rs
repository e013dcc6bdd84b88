//! Campaign results: what each campaign sent, what the policy held back and why, what was
//! delivered and what it cost — and what it earned. An order placed within `--attribution-window`
//! (default 72 h) after a message was sent to the same user is credited to that message's
//! campaign (the latest message sent before the order: last touch; order-status updates are
//! never credited, they answer an order); an abandoned cart the sinks
//! decided on, followed by the user's order within the window, counts as recovered — whatever the
//! message's outcome, so a shop sees the recovery rate of carts nobody could be messaged about
//! too.
//!
//! It reads `zmp.messages.v1` beside the Mini App's topics: the sinks write a message to its
//! user's partition, so a task sees a user's messages and orders together, in event-time order.
//! Each message id counts once per status (the runtime drops replayed records by
//! `message id:status`; a message's state here stops a `sent` after `sending` being counted
//! twice). ZNS delivery receipts carry a 16-hex prefix of the message id; they are matched to the
//! user's recent messages, and not counted when none matches.
//!
//! Lift (docs/messaging.md, *Lift*): the first record of a campaign's decision on an occurrence
//! is the user's entry, in the control group when it is `held_out` and in the treatment group
//! otherwise (whatever the policy decided: intention to treat). An order within the window
//! converts the latest entry of each campaign before it (once) and counts as one of its group's
//! orders. Entries are kept per user under their own key, the groups' counts per campaign under
//! theirs (state written before them still reads).
//!
//! Per campaign, the task's totals are a state of their own; at each commit the changed ones go
//! to the compacted `zmp.campaign-results.v1`, key `app/campaign/partition`. Readers (the query
//! API) sum over partitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use schemas::derived::{CampaignResult, MessageEvent, MessageStatus, ReasonCount};
use schemas::event::*;
use schemas::time::DAY_MS;

use crate::runtime::processor::{Ctx, Processor, user_key};
use crate::runtime::store::{Change, KvCache};

pub const STORE: &str = "campaign_results";
/// Most messages and orders remembered per user (the newest).
const MEMORY: usize = 100;
/// The trigger name the sinks give abandoned carts.
const CART_TRIGGER: &str = "cart_abandoned";
/// Order updates answer an order: they are counted, but never credited with the next one.
const ORDER_STATUS_TRIGGER: &str = "order_status";

/// What a user's state remembers of one message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    message_id: String,
    campaign: String,
    at: i64,
    sent_at: Option<i64>,
    delivered: bool,
    /// Whether an order after it may be credited to it.
    credits: bool,
}

/// An abandoned cart a campaign decided on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CartSeen {
    campaign: String,
    trigger_id: String,
    at: i64,
    recovered: bool,
}

/// One entry of the user into a campaign (a trigger occurrence the campaign decided on), in the
/// treatment group or held out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entered {
    campaign: String,
    trigger_id: String,
    at: i64,
    control: bool,
    converted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserState {
    messages: Vec<Seen>,
    carts: Vec<CartSeen>,
    /// Orders already looked at (order id, time): placed and paid are one order.
    orders: Vec<(String, i64)>,
    latest: i64,
}

impl UserState {
    /// Forgets what no later event can use: older than the window (and a day), and beyond the
    /// memory's size.
    fn prune(&mut self, window: i64) {
        let horizon = self.latest.saturating_sub(window + DAY_MS);
        self.messages.retain(|m| m.at >= horizon);
        self.carts.retain(|c| c.at >= horizon);
        self.orders.retain(|(_, t)| *t >= horizon);
        keep_newest(&mut self.messages);
        keep_newest(&mut self.carts);
        keep_newest(&mut self.orders);
    }
}

/// Keeps the last [`MEMORY`] entries of a list kept oldest first.
fn keep_newest<T>(list: &mut Vec<T>) {
    let excess = list.len().saturating_sub(MEMORY);
    list.drain(..excess);
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Totals {
    as_of: i64,
    sent: i64,
    deferred: i64,
    suppressed: BTreeMap<String, i64>,
    failed: i64,
    unknown: i64,
    delivered: i64,
    cost_vnd: i64,
    conversions: i64,
    revenue_vnd: i64,
    carts_triggered: i64,
    carts_recovered: i64,
    recovered_revenue_vnd: i64,
}

/// A campaign's two groups (docs/messaging.md, *Lift*).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Lift {
    held_out: i64,
    entrants: [i64; 2],
    converted: [i64; 2],
    orders: [i64; 2],
    revenue_vnd: [i64; 2],
}

/// Index of a group in [`Lift`]'s pairs.
fn group(control: bool) -> usize {
    usize::from(control)
}

/// One store, four kinds of keys: users (`app 0x1F user`), campaigns (`0x00 app 0x1F
/// campaign`), users' campaign entries (`0x01 app 0x1F user`) and campaigns' groups (`0x02 app
/// 0x1F campaign`). (The last two came with holdout groups; kept apart so the state written
/// before them still reads: new variants go at the end.)
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Entry {
    User(UserState),
    Campaign(Totals),
    Entries(Vec<Entered>),
    Lift(Lift),
}

fn campaign_key(app: &str, campaign: &str) -> Vec<u8> {
    prefixed(0, app, campaign)
}

fn entries_key(app: &str, user: &str) -> Vec<u8> {
    prefixed(1, app, user)
}

fn lift_key(app: &str, campaign: &str) -> Vec<u8> {
    prefixed(2, app, campaign)
}

fn prefixed(kind: u8, app: &str, name: &str) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(&user_key(app, name));
    k
}

pub struct CampaignResults {
    window_ms: i64,
    cache: KvCache<Entry>,
}

impl CampaignResults {
    pub fn new(window_ms: i64) -> CampaignResults {
        CampaignResults { window_ms, cache: KvCache::new(STORE) }
    }

    fn user(&mut self, ctx: &Ctx<'_>, app: &str, user: &str) -> anyhow::Result<UserState> {
        Ok(match self.cache.entry(ctx.db, &user_key(app, user))?.take() {
            Some(Entry::User(u)) => u,
            _ => UserState::default(),
        })
    }

    fn put_user(&mut self, ctx: &Ctx<'_>, app: &str, user: &str, state: UserState) -> anyhow::Result<()> {
        *self.cache.entry(ctx.db, &user_key(app, user))? = Some(Entry::User(state));
        Ok(())
    }

    fn entries(&mut self, ctx: &Ctx<'_>, app: &str, user: &str) -> anyhow::Result<Vec<Entered>> {
        Ok(match self.cache.entry(ctx.db, &entries_key(app, user))?.take() {
            Some(Entry::Entries(e)) => e,
            _ => Vec::new(),
        })
    }

    /// Keeps a user's entries that an order can still be credited to (the window, a day, and
    /// the newest [`MEMORY`]); none left: the key goes.
    fn put_entries(&mut self, ctx: &Ctx<'_>, app: &str, user: &str, mut entries: Vec<Entered>, latest: i64) -> anyhow::Result<()> {
        let horizon = latest.saturating_sub(self.window_ms + DAY_MS);
        entries.retain(|e| e.at >= horizon);
        keep_newest(&mut entries);
        *self.cache.entry(ctx.db, &entries_key(app, user))? = (!entries.is_empty()).then_some(Entry::Entries(entries));
        Ok(())
    }

    fn lift(&mut self, ctx: &Ctx<'_>, app: &str, campaign: &str, at: i64) -> anyhow::Result<&mut Lift> {
        // The campaign's totals carry `as_of`, and make it written at the next commit.
        self.totals(ctx, app, campaign, at)?;
        let slot = self.cache.entry(ctx.db, &lift_key(app, campaign))?;
        if !matches!(slot, Some(Entry::Lift(_))) {
            *slot = Some(Entry::Lift(Lift::default()));
        }
        let Some(Entry::Lift(l)) = slot else { unreachable!("just set") };
        Ok(l)
    }

    fn totals(&mut self, ctx: &Ctx<'_>, app: &str, campaign: &str, at: i64) -> anyhow::Result<&mut Totals> {
        let slot = self.cache.entry(ctx.db, &campaign_key(app, campaign))?;
        if !matches!(slot, Some(Entry::Campaign(_))) {
            *slot = Some(Entry::Campaign(Totals::default()));
        }
        let Some(Entry::Campaign(t)) = slot else { unreachable!("just set") };
        t.as_of = t.as_of.max(at);
        Ok(t)
    }

    fn message(&mut self, ctx: &Ctx<'_>, m: &MessageEvent) -> anyhow::Result<()> {
        let mut state = self.user(ctx, &m.app_id, &m.user_key)?;
        state.latest = state.latest.max(m.at);
        let app = m.app_id.as_str();
        if m.is(MessageStatus::Delivered) {
            // Receipts name the message by a prefix of its id, and no campaign.
            if let Some(seen) =
                state.messages.iter_mut().rev().find(|s| !m.message_id.is_empty() && s.message_id.starts_with(&m.message_id))
                && !seen.delivered
            {
                seen.delivered = true;
                let campaign = seen.campaign.clone();
                self.totals(ctx, app, &campaign, m.at)?.delivered += 1;
            }
            return self.put_user(ctx, app, &m.user_key, state);
        }
        let i = match state.messages.iter().position(|s| s.message_id == m.message_id) {
            Some(i) => i,
            None => {
                state.messages.push(Seen {
                    message_id: m.message_id.clone(),
                    campaign: m.campaign.clone(),
                    at: m.at,
                    credits: m.trigger != ORDER_STATUS_TRIGGER,
                    ..Default::default()
                });
                state.messages.len() - 1
            }
        };
        // The first record of a campaign's decision on an occurrence is the user's entry; a
        // held_out record puts it in the control group. Order updates answer an order: no entry.
        let control = m.is(MessageStatus::HeldOut);
        // A journey's later steps are recorded under `<trigger id>#step<n>`: one entry, one cart.
        let trigger_id = m.trigger_id.rsplit_once("#step").map_or(m.trigger_id.as_str(), |(base, _)| base);
        // Suppressed whole before the campaign ran (too old, or no OA for the app): no entry in
        // either group (the holdout is decided after those).
        let whole = matches!(m.reason.as_deref(), Some("stale_trigger" | "no_oa_for_app"));
        if m.trigger != ORDER_STATUS_TRIGGER && m.status().is_some() && !whole {
            let mut entries = self.entries(ctx, app, &m.user_key)?;
            if !entries.iter().any(|e| e.trigger_id == trigger_id && e.campaign == m.campaign) {
                entries.push(Entered {
                    campaign: m.campaign.clone(),
                    trigger_id: trigger_id.to_string(),
                    at: m.at,
                    control,
                    converted: false,
                });
                let lift = self.lift(ctx, app, &m.campaign, m.at)?;
                lift.entrants[group(control)] += 1;
                // Counted with the entry: a replayed held_out record is not another.
                lift.held_out += i64::from(control);
            }
            self.put_entries(ctx, app, &m.user_key, entries, state.latest)?;
        }
        if m.trigger == CART_TRIGGER && !state.carts.iter().any(|c| c.trigger_id == trigger_id && c.campaign == m.campaign) {
            state.carts.push(CartSeen { campaign: m.campaign.clone(), trigger_id: trigger_id.to_string(), at: m.at, recovered: false });
            self.totals(ctx, app, &m.campaign, m.at)?.carts_triggered += 1;
        }
        let newly_sent = m.is(MessageStatus::Sent) && state.messages[i].sent_at.is_none();
        if newly_sent {
            state.messages[i].sent_at = Some(m.at);
        }
        let t = self.totals(ctx, app, &m.campaign, m.at)?;
        match m.status() {
            Some(MessageStatus::Sent) if newly_sent => {
                t.sent += 1;
                t.cost_vnd = t.cost_vnd.saturating_add(m.cost_vnd);
            }
            Some(MessageStatus::Deferred) => t.deferred += 1,
            Some(MessageStatus::Suppressed) => *t.suppressed.entry(m.reason.clone().unwrap_or_default()).or_default() += 1,
            Some(MessageStatus::Failed) => t.failed += 1,
            Some(MessageStatus::Unknown) => t.unknown += 1,
            _ => {}
        }
        state.prune(self.window_ms);
        self.put_user(ctx, app, &m.user_key, state)
    }

    fn order(&mut self, ctx: &Ctx<'_>, o: &OrderEvent) -> anyhow::Result<()> {
        if !matches!(o.kind, OrderType::OrderPlaced | OrderType::OrderPaid) {
            return Ok(());
        }
        let (app, user, t) = (o.app_id.as_str(), o.user.key.as_str(), o.corrected_time);
        let mut state = self.user(ctx, app, user)?;
        let id = &o.properties.order_id;
        if state.orders.iter().any(|(seen, _)| seen == id) {
            return self.put_user(ctx, app, user, state);
        }
        state.orders.push((id.clone(), t));
        state.latest = state.latest.max(t);
        let total = o.properties.total.unwrap_or_else(|| Item::total(&o.properties.items));
        let window = self.window_ms;
        let within = |at: i64| at <= t && t - at <= window;
        let credited = state
            .messages
            .iter()
            .filter(|m| m.credits && m.sent_at.is_some_and(within))
            .max_by_key(|m| m.sent_at)
            .map(|m| m.campaign.clone());
        if let Some(campaign) = credited {
            let totals = self.totals(ctx, app, &campaign, t)?;
            totals.conversions += 1;
            totals.revenue_vnd = totals.revenue_vnd.saturating_add(total);
        }
        // Each campaign's latest entry within the window before the order: its group gets the
        // order (and, the first time, the conversion).
        let mut entries = self.entries(ctx, app, user)?;
        let mut campaigns: Vec<String> = entries.iter().filter(|e| within(e.at)).map(|e| e.campaign.clone()).collect();
        campaigns.sort();
        campaigns.dedup();
        for campaign in campaigns {
            let Some(entry) = entries.iter_mut().filter(|e| e.campaign == campaign && within(e.at)).max_by_key(|e| e.at) else {
                continue;
            };
            let (g, first) = (group(entry.control), !entry.converted);
            entry.converted = true;
            let lift = self.lift(ctx, app, &campaign, t)?;
            lift.orders[g] += 1;
            lift.revenue_vnd[g] = lift.revenue_vnd[g].saturating_add(total);
            if first {
                lift.converted[g] += 1;
            }
        }
        self.put_entries(ctx, app, user, entries, state.latest)?;
        if let Some(cart) = state.carts.iter_mut().filter(|c| !c.recovered && within(c.at)).max_by_key(|c| c.at) {
            cart.recovered = true;
            let campaign = cart.campaign.clone();
            let totals = self.totals(ctx, app, &campaign, t)?;
            totals.carts_recovered += 1;
            totals.recovered_revenue_vnd = totals.recovered_revenue_vnd.saturating_add(total);
        }
        state.prune(window);
        self.put_user(ctx, app, user, state)
    }
}

impl Processor for CampaignResults {
    fn store(&self) -> &'static str {
        STORE
    }

    fn reads_messages(&self) -> bool {
        true
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        if event.is_forget() {
            // The user's trail goes; the campaigns' totals are counts without personal data.
            *self.cache.entry(ctx.db, &user_key(event.app_id(), &event.user().key))? = None;
            *self.cache.entry(ctx.db, &entries_key(event.app_id(), &event.user().key))? = None;
            return Ok(());
        }
        match event {
            InputEvent::Message(m) => self.message(ctx, &m.message),
            InputEvent::Order(o) => self.order(ctx, o),
            _ => Ok(()),
        }
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _key: &[u8], _deadline: i64) -> anyhow::Result<()> {
        Ok(())
    }

    fn before_commit(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        // Every change of a campaign's groups touches its totals too (`lift`): the dirty totals
        // are the campaigns to write.
        let mut changed = Vec::new();
        for (key, entry) in self.cache.dirty_keys() {
            let (Some(Entry::Campaign(t)), Some(rest)) = (entry, key.strip_prefix(&[0u8])) else { continue };
            let Some((app, campaign)) = crate::runtime::processor::split_user_key(rest) else { continue };
            changed.push((app.to_string(), campaign.to_string(), t.clone()));
        }
        for (app, campaign, t) in changed {
            let lift = match self.cache.get(ctx.db, &lift_key(&app, &campaign))? {
                Some(Entry::Lift(l)) => l.clone(),
                _ => Lift::default(),
            };
            let r = CampaignResult {
                app_id: app,
                campaign,
                partition: ctx.task as i64,
                as_of: t.as_of,
                window_ms: self.window_ms,
                sent: t.sent,
                deferred: t.deferred,
                suppressed: t.suppressed.iter().map(|(reason, count)| ReasonCount { reason: reason.clone(), count: *count }).collect(),
                failed: t.failed,
                unknown: t.unknown,
                delivered: t.delivered,
                cost_vnd: t.cost_vnd,
                conversions: t.conversions,
                revenue_vnd: t.revenue_vnd,
                carts_triggered: t.carts_triggered,
                carts_recovered: t.carts_recovered,
                recovered_revenue_vnd: t.recovered_revenue_vnd,
                held_out: lift.held_out,
                entrants_treatment: lift.entrants[0],
                entrants_control: lift.entrants[1],
                converted_treatment: lift.converted[0],
                converted_control: lift.converted[1],
                orders_treatment: lift.orders[0],
                orders_control: lift.orders[1],
                revenue_treatment_vnd: lift.revenue_vnd[0],
                revenue_control_vnd: lift.revenue_vnd[1],
            };
            ctx.emit(&r.key(), &r)?;
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
    use crate::runtime::processor::Output;
    use crate::runtime::store::TaskDb;
    use crate::runtime::timers::Timers;
    use schemas::testing::build::order;

    const T0: i64 = 1_790_000_000_000;
    const H: i64 = 3600 * 1000;

    struct Harness {
        _dir: tempfile::TempDir,
        db: TaskDb,
        timers: Timers,
        outputs: Vec<Output>,
        p: CampaignResults,
    }

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let db = TaskDb::open(dir.path(), &[STORE]).unwrap();
            Harness { _dir: dir, db, timers: Timers::default(), outputs: Vec::new(), p: CampaignResults::new(72 * H) }
        }
        fn feed(&mut self, e: InputEvent) {
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: 0, task: 4 };
            self.p.process(&mut ctx, &e).unwrap();
        }
        fn msg(&mut self, user: &str, campaign: &str, trigger_id: &str, status: &str, reason: Option<&str>, cost: i64, at: i64) {
            let trigger = if campaign == "order_status" { ORDER_STATUS_TRIGGER } else { CART_TRIGGER };
            let m = MessageEvent {
                message_id: format!("{campaign}-{trigger_id}-0123456789abcdef"),
                app_id: "demo".into(),
                user_key: user.into(),
                campaign: campaign.into(),
                trigger: trigger.into(),
                trigger_id: trigger_id.into(),
                channel: "oa_consultation".into(),
                status: status.into(),
                reason: reason.map(str::to_string),
                cost_vnd: cost,
                at,
                ..Default::default()
            };
            self.feed(InputEvent::Message(Box::new(MessageInput::new(m))));
        }
        /// The results written at the next commit, by campaign.
        fn results(&mut self) -> BTreeMap<String, CampaignResult> {
            let mut ctx = Ctx { db: &self.db, timers: &mut self.timers, outputs: &mut self.outputs, kind: 0, task: 4 };
            self.p.before_commit(&mut ctx).unwrap();
            let mut changes = Vec::new();
            self.p.take_dirty(&mut changes).unwrap();
            self.outputs
                .drain(..)
                .map(|o| {
                    let r: CampaignResult = schemas::codec::decode(o.payload.as_ref().unwrap()).unwrap();
                    assert_eq!(o.key, format!("demo/{}/4", r.campaign));
                    (r.campaign.clone(), r)
                })
                .collect()
        }
    }

    #[test]
    fn an_order_within_the_window_is_credited_to_the_latest_message_sent_before_it() {
        let mut h = Harness::new();
        h.msg("u", "cart", "t1", "sending", None, 0, T0);
        h.msg("u", "cart", "t1", "sent", None, 165, T0);
        // A replayed `sent` (another record, same message) is not a second send.
        h.msg("u", "cart", "t1", "sent", None, 165, T0 + 5);
        h.msg("v", "cart", "t2", "suppressed", Some("no_consent"), 0, T0);
        h.msg("w", "cart", "t3", "suppressed", Some("no_consent"), 0, T0);
        h.msg("x", "cart", "t4", "suppressed", Some("frequency_cap"), 0, T0);
        // u orders 10 h later: credited, cart recovered. Paid afterwards: the same order.
        h.feed(order("u", T0 + 10 * H, "o1", Some("c1"), 350_000));
        h.feed(schemas::testing::build::with_id(order("u", T0 + 11 * H, "o1", Some("c1"), 350_000), "paid"));
        // v was never messaged (no consent) but ordered: the cart is recovered, no conversion.
        h.feed(order("v", T0 + H, "o2", None, 100_000));
        // x orders after the window: nothing.
        h.feed(order("x", T0 + 73 * H, "o3", None, 90_000));
        let r = &h.results()["cart"];
        assert_eq!((r.sent, r.cost_vnd, r.conversions, r.revenue_vnd), (1, 165, 1, 350_000));
        assert_eq!((r.carts_triggered, r.carts_recovered, r.recovered_revenue_vnd), (4, 2, 450_000));
        assert_eq!(
            r.suppressed,
            vec![ReasonCount { reason: "frequency_cap".into(), count: 1 }, ReasonCount { reason: "no_consent".into(), count: 2 }]
        );
        assert_eq!((r.partition, r.window_ms), (4, 72 * H));
        // Nothing changed: nothing written at the next commit.
        assert!(h.results().is_empty());
    }

    #[test]
    fn the_latest_campaign_before_the_order_wins_and_receipts_count_once() {
        let mut h = Harness::new();
        h.msg("u", "welcome", "w1", "sent", None, 0, T0);
        h.msg("u", "cart", "t1", "sent", None, 330, T0 + H);
        // An order update after both answers an order: never credited with the next one.
        h.msg("u", "order_status", "s1", "sent", None, 0, T0 + H + 10);
        // A receipt names a 16-hex prefix of the id; Zalo may send it twice.
        for _ in 0..2 {
            let receipt = MessageEvent {
                message_id: "cart-t1-01234567".into(),
                app_id: "demo".into(),
                user_key: "u".into(),
                channel: "zns".into(),
                status: "delivered".into(),
                at: T0 + H + 1000,
                ..Default::default()
            };
            h.feed(InputEvent::Message(Box::new(MessageInput::new(receipt))));
        }
        // An order before any message is nobody's conversion; one after both is the cart's.
        h.feed(order("u", T0 - 1, "o0", None, 5));
        h.feed(order("u", T0 + 2 * H, "o1", None, 200_000));
        let r = h.results();
        assert_eq!((r["cart"].conversions, r["cart"].revenue_vnd, r["cart"].delivered), (1, 200_000, 1));
        assert_eq!((r["welcome"].conversions, r["welcome"].sent), (0, 1));
        assert_eq!((r["order_status"].conversions, r["order_status"].sent), (0, 1));
    }

    #[test]
    fn a_forgotten_user_leaves_the_totals_and_nothing_else() {
        let mut h = Harness::new();
        h.msg("u", "cart", "t1", "sent", None, 165, T0);
        h.feed(schemas::event::forget_request("demo", "u", T0 + 1));
        h.feed(order("u", T0 + 2, "o1", None, 1000));
        let r = &h.results()["cart"];
        assert_eq!((r.sent, r.conversions), (1, 0));
    }

    /// Each entry counts once in its group (held_out: control; any other first record:
    /// treatment, whatever the policy decided); an order within the window converts the latest
    /// entry of each campaign before it, once; a later order of the same entry is one more order.
    #[test]
    fn entries_count_in_their_group_and_orders_convert_the_latest_entry_once() {
        let mut h = Harness::new();
        // Treatment: a sent (with its sending first) and a suppressed; control: two held out.
        h.msg("t1", "cart", "a", "sending", None, 0, T0);
        h.msg("t1", "cart", "a", "sent", None, 55, T0);
        h.msg("t2", "cart", "b", "suppressed", Some("no_consent"), 0, T0);
        h.msg("c1", "cart", "c", "held_out", None, 0, T0);
        h.msg("c2", "cart", "d", "held_out", None, 0, T0);
        // A replayed held_out record is not a second entry.
        h.msg("c1", "cart", "c", "held_out", None, 0, T0 + 1);
        // t1 orders twice in the window (one conversion, two orders); c1 once; c2 after it.
        h.feed(order("t1", T0 + H, "o1", None, 100_000));
        h.feed(order("t1", T0 + 2 * H, "o2", None, 50_000));
        h.feed(order("c1", T0 + H, "o3", None, 80_000));
        h.feed(order("c2", T0 + 73 * H, "o4", None, 70_000));
        let r = &h.results()["cart"];
        assert_eq!((r.entrants_treatment, r.entrants_control, r.held_out), (2, 2, 2));
        assert_eq!((r.converted_treatment, r.converted_control), (1, 1));
        assert_eq!((r.orders_treatment, r.orders_control), (2, 1));
        assert_eq!((r.revenue_treatment_vnd, r.revenue_control_vnd), (150_000, 80_000));
        // The held-out user's order is nobody's last-touch conversion.
        assert_eq!((r.conversions, r.revenue_vnd), (2, 150_000));
    }
}
