//! Dispatching for later: [`Producer::dispatch_in`] and
//! [`Producer::dispatch_at`].
//!
//! A task dispatched for later is checked and encoded as any dispatch, then
//! added to its agent type's delayed set with its delay (due on the
//! broker's clock), guarded by the same marker as an immediate dispatch in
//! the same atomic step ([`Broker::delay_once`]): dispatching the same task
//! id again, now or for later, within the dedupe window adds nothing. Once
//! due, a worker of the agent type promotes it into the task stream
//! ([`Broker::promote`]), where it runs as a first attempt.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::{Instrument, debug};

use super::{DispatchError, Dispatched, Producer, dispatch_span, no_reply};
use crate::metrics::{self, DISPATCHED};
use crate::{Broker, Delay, DelayOnce, DelayedOnce, StreamId, Task};

/// The marker window of a scheduled dispatch when the producer has none
/// ([`Producer::with_dedupe_window`]`(None)`): the schedule and its marker
/// are one script either way; a 1 ms marker dedupes nothing.
const NO_WINDOW: Duration = Duration::from_millis(1);

impl<B: Broker> Producer<B> {
    /// Dispatches `task` to start once `delay` has passed, on the broker's
    /// clock. Returns with [`Dispatched::entry_id`] `0-0`: the task has no
    /// entry until it is due (for a duplicate, the first dispatch's id,
    /// `0-0` if that one was scheduled too).
    ///
    /// # Errors
    ///
    /// As [`Producer::dispatch`].
    pub async fn dispatch_in<P: Serialize + Sync>(
        &self,
        task: &Task<P>,
        delay: Duration,
    ) -> Result<Dispatched, DispatchError> {
        #[cfg(feature = "mutants")]
        if self.mutant == Some(crate::worker::Mutant::ScheduleAtOnce) {
            // The `schedule-at-once` mutant: dispatched now, the delay ignored.
            return self.dispatch(task).await;
        }
        let span = dispatch_span(task);
        async {
            let result = self.schedule_one(task, delay).await;
            if let Err(err) = &result {
                debug!(error = %err, "not dispatched");
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Dispatches `task` to start at `at`. The delay is `at` less the
    /// producer's clock's now (a time past is due at once); from then on the
    /// broker's clock counts it, so workers' clocks do not matter.
    ///
    /// # Errors
    ///
    /// As [`Producer::dispatch`].
    pub async fn dispatch_at<P: Serialize + Sync>(
        &self,
        task: &Task<P>,
        at: SystemTime,
    ) -> Result<Dispatched, DispatchError> {
        let at_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let delay = Duration::from_millis(at_ms.saturating_sub(self.now_ms()));
        self.dispatch_in(task, delay).await
    }

    async fn schedule_one<P: Serialize + Sync>(
        &self,
        task: &Task<P>,
        delay: Duration,
    ) -> Result<Dispatched, DispatchError> {
        let prepared = self.prepare(task, self.now_ms())?;
        let set = self
            .keyspace
            .lane_delayed(&prepared.agent, prepared.priority);
        // The task id makes the member unique in its set.
        let fields = prepared.entry.fields.clone();
        let delayed = Delay::new(set, delay, prepared.task_id.clone(), fields);
        let marker = self
            .keyspace
            .dispatched_marker(&prepared.agent, &prepared.task_id);
        let window = self.dedupe_window.unwrap_or(NO_WINDOW);
        let once = DelayOnce::new(delayed, marker, window);
        let mut replies = self.broker.delay_once(vec![once]).await?;
        let reply = match (replies.pop(), replies.is_empty()) {
            (Some(reply), true) => reply?,
            _ => return Err(no_reply().into()),
        };
        let (entry_id, duplicate) = match reply {
            DelayedOnce::Scheduled => {
                debug!(?delay, "dispatched for later");
                metrics::count(DISPATCHED, prepared.agent.as_str(), 1);
                (StreamId::ZERO, false)
            }
            DelayedOnce::Duplicate(id) => {
                debug!(entry_id = %id, "already dispatched within the dedupe window");
                (id, true)
            }
        };
        Ok(Dispatched {
            task_id: prepared.task_id,
            agent_type: prepared.agent.as_str().to_owned(),
            stream: prepared.entry.stream,
            entry_id,
            duplicate,
        })
    }
}
