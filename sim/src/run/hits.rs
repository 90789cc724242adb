//! How often each fault class fired in a run: a campaign that passes shows
//! every path was reached, not merely drawn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Hit counts by fault class name, shared by everything that injects.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hits(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl Hits {
    /// Counts one firing of `class`.
    pub fn hit(&self, class: &'static str) {
        let mut hits = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *hits.entry(class).or_default() += 1;
    }

    /// The counts so far, by class name.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
