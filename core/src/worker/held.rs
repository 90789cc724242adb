//! Which entries a worker is working on: held (their leases renewed) from
//! the start of an attempt until it ends, however it ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::StreamId;

use super::attempt::Shared;
use super::mutant::Mutant;

/// Keeps an entry marked as worked on (its lease renewed) until dropped.
pub(crate) struct Held<B, H>(pub(crate) Arc<Shared<B, H>>, pub(crate) StreamId);

impl<B, H> Drop for Held<B, H> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// What the worker keeps of an entry it works on.
#[derive(Debug)]
pub(crate) struct Holding {
    /// Its attempt's cancellation token.
    cancel: CancellationToken,
    /// [`Shared::group_gone_count`] when it was taken up.
    group_gone: u64,
}

impl<B, H> Shared<B, H> {
    /// Counts a call that found the consumer group gone.
    ///
    /// An attempt during which one did (its start and end read
    /// [`Shared::group_gone_count`]) and whose entry is then gone from the
    /// stream holds an entry that went with its group: the stream deleted
    /// with `DEL`, or trimmed before its group was destroyed. Nothing will
    /// deliver it again, so whatever the attempt ended in (refused, handed
    /// back) it is dead-lettered `deleted_while_pending` with its data,
    /// never dropped silently. Rarely that letter is one too many: a peer
    /// had taken the entry over and finished it before it went.
    pub(crate) fn saw_group_gone(&self) {
        self.group_gone.fetch_add(1, Ordering::SeqCst);
    }

    /// How many calls found the consumer group gone so far (see
    /// [`Shared::saw_group_gone`]); the `drop-deleted-with-group` mutant
    /// never counts one.
    pub(crate) fn group_gone_count(&self) -> u64 {
        if self.options.is_mutant(Mutant::DropDeletedWithGroup) {
            return 0;
        }
        self.group_gone.load(Ordering::SeqCst)
    }

    /// Marks `id` as being worked on, with the cancellation token of its
    /// attempt (fired with the worker's own, or when the entry is found
    /// lost); `None` if it already was.
    pub(crate) fn hold(&self, id: StreamId) -> Option<CancellationToken> {
        let group_gone = self.group_gone_count();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.contains_key(&id) {
            return None;
        }
        let token = self.cancel.child_token();
        let holding = Holding {
            cancel: token.clone(),
            group_gone,
        };
        held.insert(id, holding);
        Some(token)
    }

    /// Cancels the attempt at held entry `id`: another consumer has it.
    pub(crate) fn cancel_lost(&self, id: StreamId) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holding) = held.get(&id) {
            holding.cancel.cancel();
        }
    }

    /// Whether a call found the consumer group gone since held entry `id`
    /// was taken up (see [`Shared::saw_group_gone`]).
    pub(crate) fn group_gone_while_held(&self, id: StreamId) -> bool {
        let now = self.group_gone_count();
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&id)
            .is_some_and(|holding| holding.group_gone != now)
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
