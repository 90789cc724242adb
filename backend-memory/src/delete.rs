//! Deleting a stream key, as Redis's `DEL` does: a test and simulation
//! facility (the [`Broker`](crewq_core::Broker) contract has no `DEL`; an
//! operator's `DEL` of a live task stream is a fault crewq must survive).

use crate::MemoryBroker;

impl MemoryBroker {
    /// Deletes the stream `key` with its entries and groups, as `DEL key`
    /// does; returns whether it existed.
    ///
    /// # Behavior
    ///
    /// - The key is gone: its entries, its consumer groups (pending lists
    ///   and last-delivered ids) and its counters. A group read or a settle
    ///   on it then finds no group.
    /// - A stream made again under the same key starts over: its automatic
    ///   ids (`*`) follow the clock alone, so within the millisecond of
    ///   the deletion they repeat ids the old stream handed out, as on
    ///   Redis.
    /// - Group reads blocked on it are woken and find the group gone.
    /// - Delayed sets and other keys are untouched.
    pub fn delete_stream(&self, key: &str) -> bool {
        let removed = self.with_keys(|keys| keys.remove(key));
        match removed {
            Some(gone) => {
                gone.stream.appended.notify_waiters();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crewq_core::{
        Broker, Error, Fields, GroupStart, NewEntry, ReadGroup, StreamId, TokioClock,
    };

    use crate::MemoryBroker;

    fn entry() -> NewEntry {
        NewEntry::new("tasks", Fields::new().with("n", "1"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_stream_takes_its_entries_and_groups_and_starts_its_ids_over() {
        let broker = MemoryBroker::with_clock(TokioClock::default());
        tokio::time::advance(Duration::from_millis(5)).await;
        broker
            .group_create("tasks", "g", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let first = broker.xadd(entry()).await.expect("add");
        let second = broker.xadd(entry()).await.expect("add");
        assert_eq!(second, StreamId::new(first.ms, first.seq + 1));
        broker
            .read_group(&ReadGroup::new("tasks", "g", "c").count(1))
            .await
            .expect("read");

        assert!(broker.delete_stream("tasks"));
        assert!(!broker.delete_stream("tasks"), "gone already");
        assert_eq!(broker.xlen("tasks").await.expect("len"), 0);
        let read = broker
            .read_group(&ReadGroup::new("tasks", "g", "c").count(1))
            .await;
        assert!(matches!(read, Err(Error::NoGroup { .. })), "{read:?}");
        // Made again in the same millisecond: ids start over.
        assert_eq!(broker.xadd(entry()).await.expect("add"), first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_blocked_on_a_deleted_stream_finds_its_group_gone() {
        let broker = MemoryBroker::with_clock(TokioClock::default());
        broker
            .group_create("tasks", "g", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let reader = broker.clone();
        let blocked = tokio::spawn(async move {
            reader
                .read_group(
                    &ReadGroup::new("tasks", "g", "c")
                        .count(1)
                        .block(Duration::from_secs(60)),
                )
                .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(broker.delete_stream("tasks"));
        let read = blocked.await.expect("joined");
        assert!(matches!(read, Err(Error::NoGroup { .. })), "{read:?}");
    }
}
