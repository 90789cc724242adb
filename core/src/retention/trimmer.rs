//! [`Trimmer`]: applies a [`Retention`] to the streams one component appends
//! to, checking each stream every so often rather than on every append.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Acknowledged, Retention, WithoutGroup, age_trim, safe_floor};
use crate::{Broker, Result, Trim};

/// How many `XTRIM ~` calls one check makes at most. Redis's approximate
/// trim removes at most 100 internal nodes per call (its default `LIMIT`),
/// so a stream whose floor jumped far (a backlog just worked off) takes a
/// few calls to catch up; the next check continues where this one stopped.
const TRIMS_PER_CHECK: usize = 8;

/// Applies a [`Retention`] to the streams its owner appends to.
///
/// The owner (a producer, a supervisor, a worker) calls
/// [`Trimmer::appended`] after entries reached a stream. For
/// [`Retention::Acknowledged`] that counts them per stream and, when a check
/// is due (see [`Acknowledged`]), computes the stream's [`safe_floor`] and
/// trims below it. The other kinds trim in the appends themselves
/// ([`Retention::trim`]) and make `appended` a no-op.
///
/// A failed check is logged and not returned: the append it follows has
/// succeeded, and the next check retries. Clones share the schedule.
#[derive(Clone, Debug)]
pub struct Trimmer {
    retention: Retention,
    streams: Arc<Mutex<BTreeMap<String, Schedule>>>,
}

/// When one stream was last checked and what was appended since.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    checked_at_ms: u64,
    appended: u64,
}

impl Trimmer {
    /// A trimmer applying `retention`.
    pub fn new(retention: Retention) -> Self {
        Trimmer {
            retention,
            streams: Arc::default(),
        }
    }

    /// The retention it applies.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Notes that `count` entries were appended to `stream` at `now_ms` (the
    /// owner's clock) and trims it if a check is due. Returns how many
    /// entries were trimmed (0 when no check was due or it failed).
    pub async fn appended<B: Broker + ?Sized>(
        &self,
        broker: &B,
        stream: &str,
        count: u64,
        now_ms: u64,
    ) -> u64 {
        let Retention::Acknowledged(schedule) = self.retention else {
            return 0;
        };
        if count == 0 || !self.due(stream, count, now_ms, &schedule) {
            return 0;
        }
        match self.check(broker, stream).await {
            Ok(trimmed) => trimmed,
            Err(err) => {
                tracing::warn!(stream, error = %err, "trimming a stream failed; the next check retries");
                0
            }
        }
    }

    /// Checks `stream` now, whatever the schedule: trims it to its floor
    /// (or, with no group, to [`Acknowledged::without_group`]). Returns how
    /// many entries were removed. Does nothing but for
    /// [`Retention::Acknowledged`].
    ///
    /// # Errors
    ///
    /// A broker error; nothing beyond the floor is ever removed.
    pub async fn check<B: Broker + ?Sized>(&self, broker: &B, stream: &str) -> Result<u64> {
        let Retention::Acknowledged(schedule) = self.retention else {
            return Ok(0);
        };
        let trim = match safe_floor(broker, stream).await? {
            // `~`: Redis may keep more than asked, never less.
            Some(floor) => Trim::min_id(floor).approximate(),
            None => match schedule.without_group {
                WithoutGroup::KeepAll => return Ok(0),
                WithoutGroup::MaxLen(len) => Trim::max_len(len).approximate(),
                // The age is measured from the stream's newest id, the
                // broker's own clock, so no skew between the appender's
                // clock and the broker's (a virtual clock in tests, a
                // drifting host) can cut fresh entries.
                WithoutGroup::MaxAge(age) => {
                    let newest = broker.info_stream(stream).await?.last_generated_id;
                    age_trim(age, newest.ms)
                }
            },
        };
        let mut trimmed = 0;
        for _ in 0..TRIMS_PER_CHECK {
            let removed = broker.xtrim(stream, trim).await?;
            trimmed += removed;
            if removed == 0 {
                break;
            }
        }
        if trimmed > 0 {
            tracing::debug!(
                stream,
                trimmed,
                ?trim,
                "trimmed what every group has finished"
            );
        }
        Ok(trimmed)
    }

    /// Counts the appends and says whether `stream` is due for a check;
    /// when it is, starts its next period at once, so that concurrent
    /// appenders do not all check.
    fn due(&self, stream: &str, count: u64, now_ms: u64, schedule: &Acknowledged) -> bool {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = streams.get_mut(stream) else {
            // The first append seen on a stream checks it: a short-lived
            // producer (one dispatch per process) bounds it too.
            streams.insert(
                stream.to_owned(),
                Schedule {
                    checked_at_ms: now_ms,
                    appended: 0,
                },
            );
            return true;
        };
        state.appended = state.appended.saturating_add(count);
        let every_ms = u64::try_from(schedule.every.as_millis()).unwrap_or(u64::MAX);
        let due = state.appended >= schedule.every_appends
            || now_ms.saturating_sub(state.checked_at_ms) >= every_ms;
        if due {
            *state = Schedule {
                checked_at_ms: now_ms,
                appended: 0,
            };
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn schedule() -> Acknowledged {
        Acknowledged::default()
            .every_appends(100)
            .every(Duration::from_secs(10))
    }

    #[test]
    fn checks_the_first_append_then_every_n_appends_or_interval() {
        let trimmer = Trimmer::new(Retention::Acknowledged(schedule()));
        let due = |count, now_ms| trimmer.due("s", count, now_ms, &schedule());
        assert!(due(1, 0), "the first append seen checks");
        assert!(!due(98, 1));
        assert!(!due(1, 2), "99 appends since the check");
        assert!(due(1, 3), "the 100th");
        assert!(!due(50, 4), "a new period started at the check");
        assert!(due(1, 10_003), "10 s after the last check");
        assert!(!due(1, 10_004));
        // Streams are scheduled apart.
        assert!(trimmer.due("other", 1, 10_005, &schedule()));
    }

    #[test]
    fn clones_share_the_schedule() {
        let trimmer = Trimmer::new(Retention::Acknowledged(schedule()));
        let clone = trimmer.clone();
        assert!(trimmer.due("s", 1, 0, &schedule()));
        assert!(
            !clone.due("s", 1, 1, &schedule()),
            "the clone saw the check"
        );
    }
}
