//! Snapshots of everything a [`MemoryBroker`] holds, and restoring one: a
//! test and simulation facility for a broker that forgets its latest
//! writes, as Redis does when it restarts from an AOF written with
//! `appendfsync everysec` (up to about a second lost) or when a failover
//! promotes an asynchronous replica that lagged.

use std::fmt;

use crate::{MemoryBroker, State};

/// A deep copy of a [`MemoryBroker`]'s data at one moment: streams and
/// their ids and counters, groups with their pending entries and
/// consumers, and the append-once markers.
///
/// Restoring it is what a persistence setting that loses writes does to a
/// real Redis. Not a way to persist anything: it lives in this process.
#[derive(Clone)]
pub struct Snapshot {
    state: State,
    taken_ms: u64,
}

impl Snapshot {
    /// When it was taken, in the broker's clock's milliseconds.
    pub fn taken_ms(&self) -> u64 {
        self.taken_ms
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("taken_ms", &self.taken_ms)
            .field("streams", &self.state.streams.len())
            .field("markers", &self.state.markers.len())
            .finish()
    }
}

impl MemoryBroker {
    /// A copy of everything this broker holds now (cost: one clone of its
    /// data, under its lock).
    ///
    /// For tests and simulations of lost writes: see [`Snapshot`] and
    /// [`MemoryBroker::restore`].
    pub fn snapshot(&self) -> Snapshot {
        let taken_ms = self.now_ms();
        Snapshot {
            state: self.with_state(|state| state.clone()),
            taken_ms,
        }
    }

    /// Replaces everything this broker holds by `snapshot`'s copy: every
    /// write applied since is forgotten, as after a restart from an AOF
    /// that had not been written to disk yet, or a failover to a replica
    /// that lagged.
    ///
    /// # Behavior
    ///
    /// - Streams, entries, groups (last-delivered ids, pending entries,
    ///   delivery counts and times, consumers) and append-once markers are
    ///   those of the snapshot; keys created since are gone.
    /// - The clock is not restored: time goes on. An automatic id (`*`)
    ///   follows the restored stream's last id, so an id handed out before
    ///   the restore can be handed out again within the same millisecond,
    ///   as on a Redis restarted from its AOF.
    /// - Blocked group reads are woken and look again: an entry the
    ///   restore made unread again is delivered to them.
    pub fn restore(&self, snapshot: &Snapshot) {
        let restored = snapshot.state.clone();
        let woken = self.with_state(|state| {
            let forgotten = std::mem::replace(state, restored);
            // Readers may be blocked on a stream of either state.
            let notifies = forgotten.streams.values().chain(state.streams.values());
            notifies
                .map(|key| key.stream.appended.clone())
                .collect::<Vec<_>>()
        });
        for notify in woken {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crewq_core::{
        AddedOnce, Broker, Fields, GroupStart, NewEntry, OnceEntry, PendingQuery, ReadGroup,
        StreamId, TokioClock,
    };

    use crate::MemoryBroker;

    fn entry(n: u32) -> NewEntry {
        NewEntry::new("tasks", Fields::new().with("n", n.to_string()))
    }

    fn read(consumer: &str) -> ReadGroup {
        ReadGroup::new("tasks", "workers", consumer).count(10)
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_forgets_every_write_since_the_snapshot() {
        let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
        broker
            .group_create("tasks", "workers", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let first = broker.xadd(entry(1)).await.expect("xadd");
        let snapshot = broker.snapshot();
        assert_eq!(snapshot.taken_ms(), 1_000);

        tokio::time::sleep(Duration::from_millis(10)).await;
        broker.xadd(entry(2)).await.expect("xadd");
        assert_eq!(broker.read_group(&read("w1")).await.expect("read").len(), 2);
        broker.ack("tasks", "workers", &[first]).await.expect("ack");
        broker
            .group_create("other", "g", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let marked = OnceEntry::new(entry(3), "marker", Duration::from_secs(60));
        broker.xadd_once(vec![marked.clone()]).await.expect("once");

        broker.restore(&snapshot);
        assert_eq!(broker.xlen("tasks").await.expect("xlen"), 1);
        assert_eq!(broker.xlen("other").await.expect("xlen"), 0);
        let pending = broker
            .pending("tasks", "workers", &PendingQuery::new(10))
            .await
            .expect("pending");
        assert!(pending.is_empty(), "nothing had been delivered yet");
        let again = broker.read_group(&read("w2")).await.expect("read");
        let ids: Vec<StreamId> = again.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![first], "the acknowledged entry is unread again");
        let replies = broker.xadd_once(vec![marked]).await.expect("once");
        assert!(
            matches!(replies[0], Ok(AddedOnce::Added(_))),
            "the marker was forgotten: {replies:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_is_a_copy_that_later_writes_do_not_change() {
        let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
        broker
            .group_create("tasks", "workers", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        broker.xadd(entry(1)).await.expect("xadd");
        broker.read_group(&read("w1")).await.expect("read");
        let snapshot = broker.snapshot();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = broker.read_group(&read("w1")).await.expect("read");
        assert!(held.is_empty());
        broker.xadd(entry(2)).await.expect("xadd");
        broker.read_group(&read("w1")).await.expect("read");
        broker.restore(&snapshot);
        // Restored twice: the first restore did not consume or alter it.
        broker.xadd(entry(3)).await.expect("xadd");
        broker.restore(&snapshot);
        let pending = broker
            .pending("tasks", "workers", &PendingQuery::new(10))
            .await
            .expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].deliveries, 1);
        // Idle time runs from the restored delivery time: the clock went on.
        assert_eq!(pending[0].idle, Duration::from_millis(50));
        assert_eq!(broker.xlen("tasks").await.expect("xlen"), 1);
    }

    /// As on a Redis restarted from an AOF that lost its last second: the
    /// stream's last id is the restored one, so `*` can hand out an id
    /// again within the same millisecond.
    #[tokio::test(start_paused = true)]
    async fn ids_after_a_restore_follow_the_restored_last_id() {
        let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
        broker.xadd(entry(1)).await.expect("xadd");
        let snapshot = broker.snapshot();
        let forgotten = broker.xadd(entry(2)).await.expect("xadd");
        assert_eq!(forgotten, StreamId::new(1_000, 1));
        broker.restore(&snapshot);
        let again = broker.xadd(entry(3)).await.expect("xadd");
        assert_eq!(again, forgotten, "the same id, handed out again");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            broker.xadd(entry(4)).await.expect("xadd"),
            StreamId::new(1_005, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_read_is_woken_by_a_restore_that_makes_an_entry_unread() {
        let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
        broker
            .group_create("tasks", "workers", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let id = broker.xadd(entry(1)).await.expect("xadd");
        let snapshot = broker.snapshot();
        assert_eq!(broker.read_group(&read("w1")).await.expect("read").len(), 1);
        let blocked = {
            let broker = broker.clone();
            tokio::spawn(async move {
                let read = read("w2").block(Duration::from_secs(60));
                broker.read_group(&read).await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        broker.restore(&snapshot);
        let delivered = tokio::time::timeout(Duration::from_millis(1), blocked)
            .await
            .expect("woken at once, not at its time-out")
            .expect("joins")
            .expect("reads");
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].id, id);
    }
}
