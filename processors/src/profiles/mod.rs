//! Customer profiles: one per user, from every input topic, to the compacted `zmp.profiles.v1`
//! (key `app/user`) at each commit for the users that changed, and the user's segment entries
//! and exits to `zmp.audiences.v1`.
//!
//! - `state`: the profile's state and its update rules and scores, the code twin of
//!   docs/profiles.md;
//! - `facts`: a profile's facts for the segments' rules;
//! - this file: the processor — the store, segment evaluation, and the timers.
//!
//! Stages that change with time alone (a quiet user becomes at risk, then churned; recency falls)
//! have a timer at the next boundary, so a profile changes without a new event.

mod facts;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use schemas::derived::AudienceChange;
use schemas::event::*;
use schemas::topics::{Topic, app_user_key};

use crate::runtime::processor::{Ctx, Processor, split_user_key, user_key};
use crate::runtime::store::{Change, KvCache, TaskDb};
use crate::segments::{Segments, Source};
use facts::ProfileFacts;
use state::{ProfileState, next_change, next_month_start, sha256_hex};

pub use state::{
    AT_RISK_AFTER_MS, CHURNED_AFTER_MS, FREQUENCY_ORDERS, LOYAL_ORDERS, MONETARY_VND, NEW_FOR_MS, NEXT_PURCHASE_MIN_ORDERS, RECENCY_DAYS,
    RECENT_DAYS, RETENTION_DAYS, RETURNING_FOR_MS, frequency_score, monetary_score, recency_score,
};

pub const STORE: &str = "profiles";

pub struct Profiles {
    session_gap_ms: i64,
    cart_timeout_ms: i64,
    segments: Source,
    /// The segments' generation last evaluated against: when it moves (an admin changed a
    /// segment), every user of the task is evaluated again at the next commit.
    evaluated_generation: u64,
    cache: KvCache<ProfileState>,
    /// Each user's pending timer. It may be earlier than the user's next boundary (most events
    /// move the boundaries later, and moving the timer on every event would cost more than an
    /// early timer that only finds the real one); never later. Timers listed at a task's start
    /// ([`Processor::timers`]) are not in it: a user may then have two, and the extra one finds
    /// nothing to do.
    scheduled: HashMap<Vec<u8>, i64>,
}

impl Profiles {
    pub fn new(session_gap_ms: i64, cart_timeout_ms: i64, segments: Source) -> Profiles {
        // Followed live, the definitions may have changed while this task was elsewhere or
        // stopped (nothing records what its users were evaluated against): its first commit
        // evaluates every user again. A file does not change.
        let evaluated_generation = match &segments {
            Source::Fixed(_) => segments.generation(),
            Source::Live(_) => u64::MAX,
        };
        Profiles { session_gap_ms, cart_timeout_ms, segments, evaluated_generation, cache: KvCache::new(STORE), scheduled: HashMap::new() }
    }

    /// The segments in force for the user of `key`.
    fn segments_of(&self, key: &[u8]) -> Arc<Segments> {
        self.segments.for_app(split_user_key(key).map_or("", |(app, _)| app))
    }

    /// The next boundary after the state's evaluation time, the segments' included.
    fn next_change(&self, key: &[u8], s: &ProfileState) -> Option<i64> {
        let segments = self.segments_of(key);
        let facts = ProfileFacts { s, cart_timeout_ms: self.cart_timeout_ms };
        let mut more = Vec::new();
        for seg in segments.list.iter().filter(|g| !g.paused) {
            for r in &seg.rules {
                r.boundaries(&facts, &mut more);
            }
        }
        if s.birthday.is_some() && segments.list.iter().any(|g| g.uses_birthday()) {
            more.push(next_month_start(s.as_of));
        }
        next_change(s, s.as_of, &more)
    }

    /// Evaluates the user's segments at the state's time and emits entries and exits: a paused
    /// segment keeps its members as they were; one no longer defined lets its members go.
    fn evaluate(&self, ctx: &mut Ctx<'_>, key: &[u8], s: &mut ProfileState) -> anyhow::Result<()> {
        let segments = self.segments_of(key);
        if segments.is_empty() && s.segments.is_empty() {
            return Ok(());
        }
        let Some((app, user)) = split_user_key(key) else { return Ok(()) };
        let at = s.as_of;
        let mut now: Vec<String> = {
            let facts = ProfileFacts { s, cart_timeout_ms: self.cart_timeout_ms };
            segments
                .list
                .iter()
                .filter(|g| if g.paused { s.segments.contains(&g.name) } else { g.holds(&facts, at) })
                .map(|g| g.name.clone())
                .collect()
        };
        // Compared as sets: the definitions' order is not the members'.
        now.sort();
        let mut was = s.segments.clone();
        was.sort();
        if now == was {
            return Ok(());
        }
        let (sha, sha_e164) = match &s.phone {
            Some(p) => (Some(sha256_hex(p)), Some(sha256_hex(&format!("+{p}")))),
            None => (None, None),
        };
        let gone = s.segments.iter().filter(|name| !segments.list.iter().any(|g| &g.name == *name));
        let names: Vec<&String> = segments.list.iter().map(|g| &g.name).chain(gone).collect();
        for name in names {
            let (was, is) = (s.segments.contains(name), now.contains(name));
            if was != is {
                let change = AudienceChange {
                    app_id: app.to_string(),
                    segment: name.clone(),
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

    /// When the segments' definitions moved since the last look (an admin created, changed,
    /// paused or removed one), every user of the task is evaluated again at their state's time:
    /// members enter and leave within a commit, not at their next event. Only the users whose
    /// memberships change are written.
    fn reevaluate_if_redefined(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        let generation = self.segments.generation();
        if generation == self.evaluated_generation {
            return Ok(());
        }
        self.evaluated_generation = generation;
        let mut keys: Vec<Vec<u8>> = self.cache.committed(ctx.db)?.into_iter().map(|(k, _)| k).collect();
        keys.extend(self.cache.dirty_keys().map(|(k, _)| k.clone()));
        keys.sort();
        keys.dedup();
        for key in keys {
            let Some(mut state) = self.cache.get(ctx.db, &key)?.cloned() else { continue };
            let before = state.segments.clone();
            self.evaluate(ctx, &key, &mut state)?;
            let next = self.next_change(&key, &state);
            if state.segments != before {
                *self.cache.entry(ctx.db, &key)? = Some(state);
            }
            self.ensure_timer(ctx, &key, next);
        }
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
            let (app, user) = (event.app_id(), event.user().key.as_str());
            let mut ids = vec![user.to_string()];
            if let Some(old) = self.cache.entry(ctx.db, &key)?.take() {
                for segment in &old.segments {
                    ctx.tombstone(Topic::Audiences, &schemas::topics::audience_key(app, segment, user));
                }
                ids.extend(old.zalo_id.into_iter().chain(old.anonymous_ids));
            }
            // And their consent decisions, under every id the gateway may have kept them by.
            ids.sort();
            ids.dedup();
            for id in &ids {
                for purpose in CONSENT_PURPOSES {
                    ctx.tombstone(Topic::Consents, &schemas::topics::consent_key(app, id, purpose));
                }
            }
            self.scheduled.remove(&key);
            return Ok(());
        }
        let state = self.cache.entry(ctx.db, &key)?.get_or_insert_with(ProfileState::default);
        state.update(event, self.session_gap_ms);
        let mut state = std::mem::take(state);
        self.evaluate(ctx, &key, &mut state)?;
        let next = self.next_change(&key, &state);
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
        let next = match self.next_change(key, &state) {
            Some(boundary) if boundary <= deadline => {
                let mut state = self.cache.entry(ctx.db, key)?.take().expect("present");
                state.as_of = state.as_of.max(deadline);
                self.evaluate(ctx, key, &mut state)?;
                let next = self.next_change(key, &state);
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
            if let Some(t) = self.next_change(&key, &state) {
                out.push((t, key));
            }
        }
        Ok(())
    }

    fn wants_commit(&self) -> bool {
        self.segments.generation() != self.evaluated_generation
    }

    fn before_commit(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        self.reevaluate_if_redefined(ctx)?;
        self.emit_changed(ctx)
    }

    fn emit_changed(&mut self, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
        self.cache.emit_changed(|key, state| {
            let Some((app, user)) = split_user_key(key) else { return Ok(()) };
            match state {
                Some(s) => ctx.emit(&app_user_key(app, user), &s.record(app, user)),
                None => {
                    ctx.tombstone(Topic::Profiles, &app_user_key(app, user)); // forgotten
                    Ok(())
                }
            }
        })
    }

    fn take_dirty(&mut self, out: &mut Vec<Change>) -> anyhow::Result<()> {
        self.cache.take_dirty(out)
    }

    fn trim(&mut self, max_cached: usize) {
        self.cache.trim(max_cached);
    }
}
