//! The append-once markers of `xadd_once`, evicted once expired.
//!
//! Redis deletes a key whose `PX` time passed; a marker kept here after its
//! window would only cost memory, and a long test run or simulation sets
//! one per task. Markers are indexed by expiry as well as by key, so each
//! `xadd_once` call drops the expired ones from the front of that index:
//! every marker is evicted once, at `O(log n)`, and what is held stays
//! bounded by the markers set within one window.

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::StreamId;

/// Markers by key, and the same markers by expiry (ms).
#[derive(Clone, Debug, Default)]
pub(crate) struct Markers {
    by_key: BTreeMap<String, (StreamId, u64)>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl Markers {
    /// The id recorded by `key`'s marker, if it has not expired at `now_ms`
    /// (Redis expires a key once its time is reached).
    pub fn live(&self, key: &str, now_ms: u64) -> Option<StreamId> {
        self.by_key
            .get(key)
            .filter(|&&(_, expires_ms)| expires_ms > now_ms)
            .map(|&(id, _)| id)
    }

    /// Sets `key`'s marker to `id` until `expires_ms`, replacing any.
    pub fn set(&mut self, key: String, id: StreamId, expires_ms: u64) {
        if let Some((_, old)) = self.by_key.insert(key.clone(), (id, expires_ms)) {
            self.by_expiry.remove(&(old, key.clone()));
        }
        self.by_expiry.insert((expires_ms, key));
    }

    /// Drops every marker expired at `now_ms`.
    pub fn evict_expired(&mut self, now_ms: u64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.by_key.remove(&key);
            }
        }
    }

    /// How many markers are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crewq_core::{Broker, Fields, NewEntry, OnceEntry, TokioClock};

    use super::*;
    use crate::MemoryBroker;

    #[test]
    fn a_marker_set_again_is_indexed_once() {
        let mut markers = Markers::default();
        markers.set("m".into(), StreamId::new(1, 0), 10);
        markers.set("m".into(), StreamId::new(2, 0), 20);
        assert_eq!(markers.live("m", 15), Some(StreamId::new(2, 0)));
        markers.evict_expired(15);
        assert_eq!(markers.len(), 1, "the old expiry no longer evicts it");
        markers.evict_expired(20);
        assert_eq!(markers.len(), 0);
        assert_eq!(markers.by_expiry.len(), 0);
    }

    /// A long run of appends-once holds only the markers of one window,
    /// not one per task ever dispatched (finding 13).
    #[tokio::test(start_paused = true)]
    async fn expired_markers_are_evicted_so_memory_stays_bounded() {
        const PER_ROUND: usize = 10;
        let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
        let window = Duration::from_secs(1);
        let step = Duration::from_millis(200);
        let mut most = 0;
        for round in 0..500 {
            let batch = (0..PER_ROUND)
                .map(|i| {
                    let entry = NewEntry::new("tasks", Fields::new().with("n", "1"));
                    OnceEntry::new(entry, format!("m:{round}:{i}"), window)
                })
                .collect();
            let added = broker.xadd_once(batch).await.expect("xadd_once");
            assert!(added.iter().all(Result::is_ok));
            most = most.max(broker.held_markers());
            tokio::time::sleep(step).await;
        }
        // One window spans 5 rounds; the round that sets markers at the
        // instant the oldest expire adds one more.
        assert!(most <= 6 * PER_ROUND, "held up to {most} markers");
    }
}
