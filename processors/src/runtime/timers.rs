//! Timers: "call processor K back about key X at time D", kept in memory, ordered, so finding
//! the due ones costs nothing while none is due.
//!
//! Timers are not stored: each is a function of its processor's state (a session's deadline is
//! its last event plus the gap; a cart's, its last activity plus the timeout), so when a task
//! starts, each processor lists its timers from its restored store ([`super::processor::Processor::timers`]).
//! They survive crashes and move with the task through the state's changelogs, and cost no write
//! of their own: moving a deadline on every event would otherwise double the changelog traffic.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    pub deadline: i64,
    /// Which processor owns the timer.
    pub kind: u8,
    /// The processor's key (usually the store key of a user) and any discriminator it adds.
    pub key: Vec<u8>,
}

#[derive(Default)]
pub struct Timers {
    pending: BTreeSet<TimerKey>,
}

impl Timers {
    pub fn schedule(&mut self, key: TimerKey) {
        self.pending.insert(key);
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        self.pending.remove(key);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn earliest(&self) -> Option<i64> {
        self.pending.first().map(|k| k.deadline)
    }

    /// Removes and returns the earliest timer if it is due at `time`.
    pub fn pop_due(&mut self, time: i64) -> Option<TimerKey> {
        let first = self.pending.first()?;
        if first.deadline > time {
            return None;
        }
        self.pending.pop_first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_order() {
        let mut t = Timers::default();
        t.schedule(TimerKey { deadline: 20, kind: 0, key: b"u2".to_vec() });
        t.schedule(TimerKey { deadline: 10, kind: 0, key: b"u1".to_vec() });
        t.schedule(TimerKey { deadline: 30, kind: 1, key: b"u3".to_vec() });
        t.cancel(&TimerKey { deadline: 30, kind: 1, key: b"u3".to_vec() });
        assert_eq!(t.earliest(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(15).map(|k| k.key), Some(b"u1".to_vec()));
        assert_eq!(t.pop_due(25).map(|k| k.key), Some(b"u2".to_vec()));
        assert_eq!(t.pop_due(i64::MAX), None);
        assert!(t.is_empty());
    }
}
