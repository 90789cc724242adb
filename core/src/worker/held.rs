//! Which entries a worker is working on: held (their leases renewed) from
//! the start of an attempt until it ends, however it ends.

use std::sync::{Arc, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::StreamId;

use super::attempt::Shared;

/// Keeps an entry marked as worked on (its lease renewed) until dropped.
pub(crate) struct Held<B, H>(pub(crate) Arc<Shared<B, H>>, pub(crate) StreamId);

impl<B, H> Drop for Held<B, H> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

impl<B, H> Shared<B, H> {
    /// Marks `id` as being worked on, with the cancellation token of its
    /// attempt (fired with the worker's own, or when the entry is found
    /// lost); `None` if it already was.
    pub(crate) fn hold(&self, id: StreamId) -> Option<CancellationToken> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.contains_key(&id) {
            return None;
        }
        let token = self.cancel.child_token();
        held.insert(id, token.clone());
        Some(token)
    }

    /// Cancels the attempt at held entry `id`: another consumer has it.
    pub(crate) fn cancel_lost(&self, id: StreamId) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = held.get(&id) {
            token.cancel();
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
