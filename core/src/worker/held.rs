//! Which entries a worker is working on: held (their leases renewed) from
//! the start of an attempt until it ends, however it ends.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::StreamId;

use super::attempt::Shared;
use super::mutant::Mutant;

/// Keeps an entry marked as worked on (its lease renewed) until dropped.
/// It borrows the attempt's own handle on the worker: one more reference
/// count per attempt would be one more write to a line every attempt of
/// the worker shares.
pub(crate) struct Held<'a, B, H>(pub(crate) &'a Shared<B, H>, pub(crate) StreamId);

impl<B, H> Drop for Held<'_, B, H> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// What the worker keeps of an entry it works on.
#[derive(Debug)]
pub(crate) struct Holding {
    /// Its attempt's cancellation token.
    cancel: CancellationToken,
    /// When its lease was last taken or renewed.
    renewed_at: Instant,
    /// A call found the consumer group gone while its lease was still this
    /// worker's (see [`Shared::saw_group_gone`]).
    gone_with_group: bool,
    /// A renewal found it another consumer's: from then on its lease is
    /// not this worker's, whatever happens to the group.
    taken: bool,
}

impl<B, H> Shared<B, H> {
    /// A call found the consumer group gone: marks each held entry whose
    /// lease is still this worker's.
    ///
    /// An entry so marked and then gone from the stream went with its
    /// group: the stream deleted with `DEL`, or trimmed before its group was
    /// destroyed. Nothing will deliver it again, so whatever its attempt
    /// ended in (refused, handed back) it is dead-lettered
    /// `deleted_while_pending` with its data, never dropped silently. One
    /// whose lease had lapsed (the worker frozen, its renewals failing) may
    /// have been taken over and finished by a peer, then trimmed: it is not
    /// marked, and its outcome is left to the peer.
    pub(crate) fn saw_group_gone(&self) {
        if self.options.is_mutant(Mutant::DropDeletedWithGroup) {
            return;
        }
        let now = Instant::now();
        let lease = self.options.lease;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for holding in held.values_mut() {
            if !holding.taken && now.saturating_duration_since(holding.renewed_at) < lease {
                holding.gone_with_group = true;
            }
        }
    }

    /// Notes that the leases of `ids` were renewed now.
    pub(crate) fn renewed(&self, ids: &[StreamId]) {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if let Some(holding) = held.get_mut(id) {
                holding.renewed_at = now;
            }
        }
    }

    /// Marks `id` as being worked on, with the cancellation token of its
    /// attempt (fired when the worker stops, see [`Shared::cancel_all`], or
    /// when the entry is found lost), its lease taken at `leased_at`; `None`
    /// if it already was.
    pub(crate) fn hold(&self, id: StreamId, leased_at: Instant) -> Option<CancellationToken> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let std::collections::btree_map::Entry::Vacant(vacant) = held.entry(id) else {
            return None;
        };
        // A token of its own, not a child of a worker-wide one: a child
        // takes its parent's lock as it is made and dropped, which every
        // attempt of the worker would contend for. The stop reaches it
        // through `cancel_all` instead.
        let token = CancellationToken::new();
        if self.stopping.load(Ordering::SeqCst) {
            token.cancel();
        }
        let holding = Holding {
            cancel: token.clone(),
            renewed_at: leased_at,
            gone_with_group: false,
            taken: false,
        };
        vacant.insert(holding);
        Some(token)
    }

    /// The worker begins to stop: fires the token of every attempt, running
    /// or waiting for a rate permit, and of any held later, so handlers can
    /// wind down within the grace.
    pub(crate) fn cancel_all(&self) {
        // Set before the look, under the lock `hold` takes: an entry held
        // meanwhile is either in the map already or sees the flag.
        self.stopping.store(true, Ordering::SeqCst);
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for holding in held.values() {
            holding.cancel.cancel();
        }
    }

    /// Whether held entry `id` was marked by [`Shared::saw_group_gone`].
    pub(crate) fn group_gone_while_held(&self, id: StreamId) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&id).is_some_and(|holding| holding.gone_with_group)
    }

    /// Cancels the attempt at held entry `id`: another consumer has it.
    pub(crate) fn cancel_lost(&self, id: StreamId) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holding) = held.get_mut(&id) {
            holding.taken = true;
            holding.cancel.cancel();
        }
    }

    pub(crate) fn release(&self, id: StreamId) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.deleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Marks a held `id` as found deleted from the stream while pending, so
    /// its attempt dead-letters it (with the data it has) if its settle
    /// finds it gone from the pending list. Returns false, marking nothing,
    /// when `id` is not held: then nothing of this worker will record it.
    pub(crate) fn mark_deleted_if_held(&self, id: StreamId) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.contains_key(&id) {
            return false;
        }
        self.deleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        true
    }

    /// Whether a renewal found `id` deleted from the stream while held.
    pub(crate) fn was_deleted(&self, id: StreamId) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    pub(crate) fn held_ids(&self) -> Vec<StreamId> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }
}
