//! Activity: the Mini App's events by type, per minute over the last hour and in all, per app —
//! the "events over time" of the report page. Counted by corrected event time, so a replay counts
//! events in the minutes they happened; a client's retry is dropped by the runtime's dedup.
//!
//! At each commit the changed apps go to the compacted `zmp.activity.v1`, key `app/partition`;
//! readers sum the partitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use schemas::derived::{Activity as ActivityRecord, MinuteCount, TypeCount};
use schemas::event::InputEvent;

use crate::runtime::processor::{Ctx, Processor};
use crate::runtime::store::{Change, KvCache};

pub const STORE: &str = "activity";
const MINUTE_MS: i64 = 60_000;
/// Minutes kept, up to the latest event.
pub const MINUTES: i64 = ActivityRecord::MINUTES;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppActivity {
    /// Minute start → event type → count.
    minutes: BTreeMap<i64, BTreeMap<String, i64>>,
    totals: BTreeMap<String, i64>,
    as_of: i64,
}

pub struct Activity {
    cache: KvCache<AppActivity>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity { cache: KvCache::new(STORE) }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Processor for Activity {
    fn store(&self) -> &'static str {
        STORE
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, event: &InputEvent) -> anyhow::Result<()> {
        if event.is_forget() {
            return Ok(());
        }
        let t = event.time();
        let kind = event.type_name();
        let slot = self.cache.entry(ctx.db, event.app_id().as_bytes())?;
        let a = slot.get_or_insert_with(AppActivity::default);
        a.as_of = a.as_of.max(t);
        *a.totals.entry(kind.to_string()).or_default() += 1;
        let minute = t - t.rem_euclid(MINUTE_MS);
        let horizon = a.as_of - a.as_of.rem_euclid(MINUTE_MS) - (MINUTES - 1) * MINUTE_MS;
        if minute >= horizon {
            *a.minutes.entry(minute).or_default().entry(kind.to_string()).or_default() += 1;
        }
        // Runs per input event: drop the minutes that fell off the hour in place.
        while a.minutes.first_key_value().is_some_and(|(m, _)| *m < horizon) {
            a.minutes.pop_first();
        }
        Ok(())
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _key: &[u8], _deadline: i64) -> anyhow::Result<()> {
        Ok(())
    }

    fn before_commit(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        let mut out = Vec::new();
        for (key, a) in self.cache.dirty_keys() {
            let Some(a) = a else { continue };
            let app = String::from_utf8_lossy(key).into_owned();
            out.push(ActivityRecord {
                partition: ctx.task as i64,
                as_of: a.as_of,
                minutes: a
                    .minutes
                    .iter()
                    .flat_map(|(m, types)| types.iter().map(|(t, n)| MinuteCount { minute: *m, event_type: t.clone(), count: *n }))
                    .collect(),
                totals: a.totals.iter().map(|(t, n)| TypeCount { event_type: t.clone(), count: *n }).collect(),
                app_id: app,
            });
        }
        for r in out {
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
    use schemas::testing::build::{order, page};

    #[test]
    fn events_are_counted_by_minute_and_type_and_old_minutes_fall_off() {
        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &[STORE]).unwrap();
        let (mut timers, mut outputs) = (Timers::default(), Vec::<Output>::new());
        let mut a = Activity::new();
        let t0 = 1_790_000_040_000; // a minute's start
        let events = [page("u", t0), page("v", t0 + 59_999), order("u", t0 + 60_000, "o", None, 1), page("u", t0 + MINUTES * MINUTE_MS)];
        for e in &events {
            let mut ctx = Ctx { db: &db, timers: &mut timers, outputs: &mut outputs, kind: 0, task: 2 };
            a.process(&mut ctx, e).unwrap();
        }
        let mut ctx = Ctx { db: &db, timers: &mut timers, outputs: &mut outputs, kind: 0, task: 2 };
        a.before_commit(&mut ctx).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].key, "demo/2");
        let r: ActivityRecord = schemas::codec::decode(outputs[0].payload.as_ref().unwrap()).unwrap();
        // The first minute (two page views) is now more than an hour before the latest event.
        let m = |minute: i64, t: &str, count: i64| MinuteCount { minute, event_type: t.into(), count };
        assert_eq!(r.minutes, vec![m(t0 + 60_000, "order_placed", 1), m(t0 + MINUTES * MINUTE_MS, "page_viewed", 1)]);
        let tc = |t: &str, count: i64| TypeCount { event_type: t.into(), count };
        assert_eq!(r.totals, vec![tc("order_placed", 1), tc("page_viewed", 3)]);
        assert_eq!(r.as_of, t0 + MINUTES * MINUTE_MS);
    }
}
