//! Durable timers: "call processor K back about key X at time D". Kept in a column family keyed
//! by deadline (so they survive restarts and move with the task through the changelog), and in
//! memory, ordered, so finding the due ones costs nothing while none is due.

use std::collections::{BTreeMap, HashMap};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::store::{Change, STORE_TIMERS, TaskDb};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    pub deadline: i64,
    /// Which processor owns the timer.
    pub kind: u8,
    /// The processor's key (usually the store key of a user) and any discriminator it adds.
    pub key: Vec<u8>,
}

impl TimerKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.key.len());
        // Offset so that the byte order is the numeric order for negative times too.
        out.extend_from_slice(&((self.deadline as u64) ^ (1 << 63)).to_be_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.key);
        out
    }

    fn decode(bytes: &[u8]) -> Option<TimerKey> {
        if bytes.len() < 9 {
            return None;
        }
        let deadline = (u64::from_be_bytes(bytes[..8].try_into().ok()?) ^ (1 << 63)) as i64;
        Some(TimerKey { deadline, kind: bytes[8], key: bytes[9..].to_vec() })
    }
}

#[derive(Default)]
pub struct Timers {
    pending: BTreeMap<TimerKey, Vec<u8>>,
    changed: FastMap<TimerKey, bool>,
}

impl Timers {
    /// Loads every timer of the task.
    pub fn load(db: &TaskDb) -> anyhow::Result<Timers> {
        let mut pending = BTreeMap::new();
        for (k, v) in db.scan(STORE_TIMERS)? {
            let key = TimerKey::decode(&k).ok_or_else(|| anyhow::anyhow!("corrupt timer key"))?;
            pending.insert(key, v);
        }
        Ok(Timers { pending, changed: FastMap::default() })
    }

    pub fn schedule(&mut self, key: TimerKey, payload: Vec<u8>) {
        self.changed.insert(key.clone(), true);
        self.pending.insert(key, payload);
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if self.pending.remove(key).is_some() {
            self.changed.insert(key.clone(), false);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn earliest(&self) -> Option<i64> {
        self.pending.keys().next().map(|k| k.deadline)
    }

    /// Removes and returns the earliest timer if it is due at `time`.
    pub fn pop_due(&mut self, time: i64) -> Option<(TimerKey, Vec<u8>)> {
        let first = self.pending.first_key_value()?.0;
        if first.deadline > time {
            return None;
        }
        let (k, v) = self.pending.pop_first()?;
        self.changed.insert(k.clone(), false);
        Some((k, v))
    }

    pub fn take_dirty(&mut self, out: &mut Vec<Change>) {
        for (key, present) in self.changed.drain() {
            let value = if present { self.pending.get(&key).cloned() } else { None };
            out.push(Change { store: STORE_TIMERS, key: key.encode(), value });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_deadline_in_bytes_too() {
        let a = TimerKey { deadline: -5, kind: 1, key: b"z".to_vec() };
        let b = TimerKey { deadline: 10, kind: 0, key: b"a".to_vec() };
        assert!(a.encode() < b.encode());
        assert_eq!(TimerKey::decode(&a.encode()), Some(a));
    }

    #[test]
    fn due_timers_pop_in_order_and_changes_are_recorded() {
        let mut t = Timers::default();
        t.schedule(TimerKey { deadline: 20, kind: 0, key: b"u2".to_vec() }, b"x".to_vec());
        t.schedule(TimerKey { deadline: 10, kind: 0, key: b"u1".to_vec() }, b"y".to_vec());
        assert_eq!(t.earliest(), Some(10));
        assert!(t.pop_due(5).is_none());
        assert_eq!(t.pop_due(15).unwrap().0.key, b"u1");
        assert!(t.pop_due(15).is_none());
        let mut changes = Vec::new();
        t.take_dirty(&mut changes);
        let deleted = changes.iter().filter(|c| c.value.is_none()).count();
        assert_eq!((changes.len(), deleted), (2, 1));
    }
}
