//! The floor of a stream: the smallest id some consumer group still needs.

use crate::{Broker, Error, Result, StreamId};

/// The smallest id that some consumer group on `stream` has not yet both
/// delivered and acknowledged: for each group, its oldest pending id, or
/// when nothing is pending, the id just after its last-delivered one; the
/// minimum over the groups. `Ok(None)` when the stream has no group (or does
/// not exist): nothing says what is safe to cut.
///
/// Every entry below the floor was delivered to every group and
/// acknowledged by it (or deleted), so `XTRIM MINID <floor>` (exact or `~`)
/// removes nothing a group still needs.
///
/// # Races
///
/// The groups are listed first, then each one's pending list is read, then
/// (by the caller) the stream is trimmed; groups read and acknowledge all
/// the while. That is safe: a read between the computation and the trim
/// delivers only ids above the group's last-delivered id, which are above
/// the floor; an acknowledgement only raises the true floor; a claim moves
/// an entry between consumers without leaving the pending list. A group's
/// oldest pending id read *after* its last-delivered id is still a lower
/// bound of what it needs: everything below it was delivered (pending ids
/// never exceed the last-delivered id) and is no longer pending. The one
/// thing no floor can cover is a group *created* between the listing and
/// the trim at a position below the floor: it finds the stream trimmed, as
/// it would any trimmed stream.
///
/// # Errors
///
/// A broker error from `XINFO GROUPS` or `XPENDING`. A group destroyed
/// between the two calls is skipped.
pub async fn safe_floor<B: Broker + ?Sized>(broker: &B, stream: &str) -> Result<Option<StreamId>> {
    let groups = match broker.info_groups(stream).await {
        Ok(groups) => groups,
        Err(Error::NoSuchKey(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut floor: Option<StreamId> = None;
    for group in groups {
        let needed = match broker.pending_summary(stream, &group.name).await {
            Ok(summary) => match summary.min_id {
                Some(oldest_pending) => oldest_pending,
                // `successor` is `None` only after the largest possible id,
                // which no entry can exceed: nothing is left to keep.
                None => group.last_delivered_id.successor().unwrap_or(StreamId::MAX),
            },
            // Destroyed since it was listed: it needs nothing any more.
            Err(Error::NoGroup { .. }) => continue,
            Err(err) => return Err(err),
        };
        floor = Some(floor.map_or(needed, |f| f.min(needed)));
    }
    Ok(floor)
}
