//! The worker's consumer group: created at the stream's start on first use,
//! and created again, at a safe position and loudly, if it goes missing.

use crate::metrics::{GROUP_RECREATED, count};
use crate::{Broker, Error, GroupStart, Result, StreamId};

use super::attempt::Shared;

/// Creates the group (and the stream) after `after` unless it exists.
/// `recreating` says it existed before in this run and was destroyed: that
/// is logged as a warning and counted ([`GROUP_RECREATED`]).
pub(crate) async fn ensure_group<B: Broker, H>(
    shared: &Shared<B, H>,
    after: StreamId,
    recreating: bool,
) -> Result<()> {
    let keys = &shared.keys;
    match shared
        .broker
        .group_create(&keys.tasks, &keys.group, GroupStart::After(after), true)
        .await
    {
        Ok(()) => {
            if recreating {
                tracing::warn!(
                    stream = %keys.tasks,
                    group = %keys.group,
                    %after,
                    "the consumer group had been destroyed; created it again"
                );
                count(GROUP_RECREATED, &shared.agent_type, 1);
            }
            Ok(())
        }
        Err(Error::GroupExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Where a destroyed group is created again: just before the oldest entry
/// this worker still holds (its outcome not yet recorded), else after the
/// newest entry it read as new.
///
/// Not `0`: that would deliver the whole retained stream again, re-running
/// every task it holds. Not `$`: entries appended since the destruction, or
/// not yet read when it happened, would never be delivered. What this
/// worker held or had read is the newest position it knows to be safe: every
/// entry after it was either not yet delivered by the old group or is
/// delivered again. Entries that other workers held when the group was
/// destroyed and that are older than this position are not delivered again:
/// those workers' settles then find them no longer pending and record
/// nothing, so a crew should not have its group destroyed under it; the
/// counter and the warning say when it was.
pub(crate) fn recreate_after(held: &[StreamId], last_read: Option<StreamId>) -> StreamId {
    match held.iter().min() {
        Some(oldest) => predecessor(*oldest),
        None => last_read.unwrap_or(StreamId::ZERO),
    }
}

/// The id just before `id` (`0-0` stays `0-0`).
fn predecessor(id: StreamId) -> StreamId {
    if id.seq > 0 {
        StreamId::new(id.ms, id.seq - 1)
    } else if id.ms > 0 {
        StreamId::new(id.ms - 1, u64::MAX)
    } else {
        StreamId::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destroyed_group_is_recreated_before_what_is_held_or_after_what_was_read() {
        let held = [StreamId::new(5, 0), StreamId::new(3, 2)];
        assert_eq!(
            recreate_after(&held, Some(StreamId::new(9, 0))),
            StreamId::new(3, 1)
        );
        assert_eq!(
            recreate_after(&[StreamId::new(4, 0)], None),
            StreamId::new(3, u64::MAX)
        );
        assert_eq!(
            recreate_after(&[], Some(StreamId::new(9, 0))),
            StreamId::new(9, 0)
        );
        assert_eq!(recreate_after(&[], None), StreamId::ZERO);
        assert_eq!(recreate_after(&[StreamId::ZERO], None), StreamId::ZERO);
    }
}
