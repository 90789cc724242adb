//! [`Monitor::progress`]: the newest progress report of running tasks,
//! read from their agent type's progress stream (what
//! [`Context::progress`](crate::worker::Context::progress) appends), for
//! `crewq pending` and anyone watching long handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::Serialize;
use serde_json::Value;

use super::Monitor;
use crate::worker::{
    PROGRESS_AT, PROGRESS_ATTEMPT, PROGRESS_CONSUMER, PROGRESS_ENTRY_ID, PROGRESS_VALUE,
};
use crate::{AgentType, Broker, ErrorKind, Result, StreamId};

/// Reports read from the progress stream per call: it is capped at about
/// [`PROGRESS_KEPT`](crate::worker::PROGRESS_KEPT), so a few pages.
const PAGE: usize = 1_000;

/// The newest progress a handler reported for one task entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The report (JSON; one that is not JSON, a peer's, as a string).
    pub value: Value,
    /// When it was made (UTC, Python's `isoformat()`).
    pub at: String,
    /// The consumer whose handler made it.
    pub consumer: String,
    /// The attempt that made it (1, then failed runs + 1).
    pub attempt: u32,
}

impl<B: Broker> Monitor<B> {
    /// The newest progress report of each of `entries` (task entries of
    /// `agent_type`'s stream, typically its pending ones) still kept in its
    /// progress stream; entries without one are left out. A missing
    /// stream has none.
    ///
    /// # Errors
    ///
    /// A broker error other than a missing stream.
    pub async fn progress(
        &self,
        agent_type: &AgentType,
        entries: &[StreamId],
    ) -> Result<BTreeMap<StreamId, Progress>> {
        let mut newest = BTreeMap::new();
        if entries.is_empty() {
            return Ok(newest);
        }
        let wanted: BTreeSet<StreamId> = entries.iter().copied().collect();
        let stream = self.keyspace.progress(agent_type);
        let mut from = Bound::Unbounded;
        loop {
            let page = match self
                .broker
                .xrange(&stream, (from, Bound::Unbounded), Some(PAGE))
                .await
            {
                Ok(page) => page,
                Err(err) if err.kind() == ErrorKind::NoSuchKey => return Ok(newest),
                Err(err) => return Err(err),
            };
            let last = page.last().map(|report| report.id);
            for report in &page {
                let text = |field| report.fields.get_str(field).unwrap_or_default();
                let Some(entry) = text(PROGRESS_ENTRY_ID).parse::<StreamId>().ok() else {
                    continue;
                };
                if !wanted.contains(&entry) {
                    continue;
                }
                let raw = text(PROGRESS_VALUE);
                // Oldest first: the last report of an entry stays.
                newest.insert(
                    entry,
                    Progress {
                        value: serde_json::from_str(raw)
                            .unwrap_or_else(|_| Value::String(raw.to_owned())),
                        at: text(PROGRESS_AT).to_owned(),
                        consumer: text(PROGRESS_CONSUMER).to_owned(),
                        attempt: text(PROGRESS_ATTEMPT).parse().unwrap_or(0),
                    },
                );
            }
            match last {
                Some(id) if page.len() >= PAGE => from = Bound::Excluded(id),
                _ => return Ok(newest),
            }
        }
    }
}
