//! Writes under the lock that span keys: `XADD` itself; `settle`, which
//! appends to other streams before it acknowledges; and
//! `autoclaim_recorded`, which records what its claim found deleted.

use std::collections::BTreeMap;

use crewq_core::{
    AddedOnce, AutoClaim, AutoClaimedRecorded, DeletedRecord, NewEntry, OnceEntry, Result, Settle,
    Settled, StreamId,
};

use crate::stream::next_id;
use crate::{Key, State, group_mut};

/// `XADD` on the locked data: the stream is created only once the id is known
/// to be valid, as Redis leaves no key behind a rejected add.
pub(crate) fn add(
    keys: &mut BTreeMap<String, Key>,
    entry: NewEntry,
    now_ms: u64,
) -> Result<StreamId> {
    let last_id = keys
        .get(&entry.stream)
        .map_or(StreamId::ZERO, |k| k.stream.last_id);
    let id = next_id(&entry.stream, last_id, entry.id, now_ms)?;
    let key = keys.entry(entry.stream).or_default();
    key.stream.append(id, entry.fields, entry.trim);
    Ok(id)
}

/// The body of [`Broker::settle`](crewq_core::Broker::settle), under the lock.
pub(crate) fn settle_locked(
    state: &mut State,
    settle: Settle,
    now_ms: u64,
) -> Result<Vec<Settled>> {
    group_mut(&mut state.streams, &settle.stream, &settle.group)?;
    let mut outcomes = Vec::with_capacity(settle.items.len());
    for item in settle.items {
        let (_, group) = group_mut(&mut state.streams, &settle.stream, &settle.group)?;
        if !group.owns(&settle.consumer, item.id) {
            outcomes.push(Settled::NotOwned);
            continue;
        }
        // Appends first, then the ack: as on Redis, where a failed write
        // is not rolled back, the entry must never be acked without them.
        // A failed append stops its item (the appends before it stay)
        // and leaves it pending; the other items go on, as each item's
        // writes on Redis are `redis.pcall`s of their own.
        let mut ids = Vec::with_capacity(item.appends.len());
        let mut failed = None;
        for entry in item.appends {
            match add(&mut state.streams, entry, now_ms) {
                Ok(id) => ids.push(id),
                Err(err) => {
                    failed = Some(err.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            outcomes.push(Settled::Failed(why));
            continue;
        }
        // Delays after the appends, before the ack, as the script does;
        // a sorted set add cannot fail here (every key is of its type).
        for delay in item.delays {
            let due = now_ms.saturating_add(delay.after_ms());
            let member = delay.member();
            state.delayed.entry(delay.set).or_default().add(due, member);
        }
        let (_, group) = group_mut(&mut state.streams, &settle.stream, &settle.group)?;
        group.ack(&[item.id]);
        outcomes.push(Settled::Done(ids));
    }
    Ok(outcomes)
}

/// One append-once on the locked data: nothing if the marker is live.
pub(crate) fn add_once(state: &mut State, once: OnceEntry, now_ms: u64) -> Result<AddedOnce> {
    if let Some(id) = state.markers.live(&once.marker, now_ms) {
        return Ok(AddedOnce::Duplicate(id));
    }
    let id = add(&mut state.streams, once.entry, now_ms)?;
    let window = u64::try_from(once.window.as_millis()).unwrap_or(u64::MAX);
    state
        .markers
        .set(once.marker, id, now_ms.saturating_add(window));
    Ok(AddedOnce::Added(id))
}

/// The body of [`Broker::autoclaim_recorded`](crewq_core::Broker::autoclaim_recorded),
/// under the lock (the call was validated): the claim, then one record per
/// deleted id, so no other call sees the one without the other.
pub(crate) fn autoclaim_recorded_locked(
    state: &mut State,
    claim: &AutoClaim,
    record: &DeletedRecord,
    now_ms: u64,
) -> Result<AutoClaimedRecorded> {
    let (stream, group) = group_mut(&mut state.streams, &claim.stream, &claim.group)?;
    let claimed = group.autoclaim(
        stream,
        &claim.consumer,
        claim.min_idle,
        claim.start,
        claim.count,
        now_ms,
    );
    state.markers.evict_expired(now_ms);
    let records = claimed
        .deleted
        .iter()
        .map(|&id| add_once(state, record.for_id(id), now_ms))
        .collect();
    Ok(AutoClaimedRecorded {
        claim: claimed,
        records,
    })
}
