//! The counters and histograms crewq reports through the `metrics` crate.
//!
//! An application installs a recorder (a Prometheus exporter, say) and gets
//! these counters, each labelled with `agent_type`, and two histograms of
//! the worker's: [`HANDLER_DURATION`] (labelled with `agent_type` and
//! [`OUTCOME`]) and [`QUEUE_WAIT`] (labelled with `agent_type`). No label
//! carries a task or trace id: each would be a time series of its own.
//! Without a recorder they cost next to nothing: the `metrics` macros then
//! record nowhere, and all the worker adds around them is one clock read and
//! a subtraction per run.
//!
//! `core/examples/prometheus.rs` shows an application exporting them with
//! `metrics-exporter-prometheus`; `crewq serve` serves them with the
//! numbers of `Monitor` on `/metrics`.

use std::time::Duration;

/// Tasks appended to a task stream (not counting duplicates suppressed by
/// idempotent dispatch).
pub const DISPATCHED: &str = "crewq_tasks_dispatched_total";
/// Tasks whose handler succeeded and whose result was recorded.
pub const COMPLETED: &str = "crewq_tasks_completed_total";
/// Handler attempts that failed (errors, panics, time-outs).
pub const FAILED: &str = "crewq_tasks_failed_total";
/// Failed attempts put back for another try.
pub const RETRIED: &str = "crewq_tasks_retried_total";
/// Tasks moved to the dead-letter stream.
pub const DEAD_LETTERED: &str = "crewq_tasks_dead_lettered_total";
/// Delayed entries (retries, scheduled tasks) moved into a task stream
/// once due.
pub const PROMOTED: &str = "crewq_delayed_promoted_total";
/// Entries a worker took over from a crashed or stalled consumer.
pub const RECLAIMED: &str = "crewq_tasks_reclaimed_total";
/// Entries found deleted from their stream (trimmed, `XDEL`'d) while a
/// worker held them; each is dead-lettered as `deleted_while_pending`.
pub const DELETED_WHILE_PENDING: &str = "crewq_tasks_deleted_while_pending_total";
/// Consumer groups a worker found missing and created again.
pub const GROUP_RECREATED: &str = "crewq_groups_recreated_total";
/// Broker errors a worker waited out or stopped on.
pub const BROKER_ERRORS: &str = "crewq_worker_broker_errors_total";
/// Dead letters replayed to their task stream.
pub const REPLAYED: &str = "crewq_dead_letters_replayed_total";

/// Seconds a handler ran, per run (a time-out counts as the time it was
/// given), labelled with `agent_type` and [`OUTCOME`]. It does not include
/// recording the outcome.
pub const HANDLER_DURATION: &str = "crewq_handler_duration_seconds";
/// Seconds from an entry's append to its stream to the start of its run,
/// labelled with `agent_type`: the time a task waited for a worker.
///
/// The task carries no dispatch time of its own (its `created_at` is when it
/// was built, which may be long before), so the wait is measured from the
/// millisecond of its stream entry's id: the broker's clock when it appended
/// the entry, read against the worker's
/// [`WorkerOptions::clock`](crate::worker::WorkerOptions::clock). So a retry's wait runs from its
/// re-append (after its back-off), a reclaimed entry's includes the time the
/// crashed consumer held it, and a clock skew between the Redis server and
/// the worker's host shifts every sample (a worker clock behind the
/// server's reads as no wait at all, never a negative one).
pub const QUEUE_WAIT: &str = "crewq_queue_wait_seconds";

/// Bucket bounds, in seconds, that suit both histograms when a recorder
/// needs them (Prometheus histograms do): from 5 ms (a queue that keeps up)
/// to 10 minutes (a long LLM call, a crew far behind).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The label every counter and histogram carries.
pub const AGENT_TYPE: &str = "agent_type";
/// [`HANDLER_DURATION`]'s second label: [`SUCCESS`] or [`FAILURE`].
pub const OUTCOME: &str = "outcome";
/// The handler returned an output.
pub const SUCCESS: &str = "success";
/// The handler returned an error, panicked or ran out of time.
pub const FAILURE: &str = "failure";

/// Gives the installed recorder each metric's help text and unit (the
/// Prometheus exporter writes them as `# HELP` lines). Call it once, after
/// installing the recorder; recording works without it.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    for (name, help) in [
        (
            DISPATCHED,
            "Tasks appended to a task stream (duplicates suppressed by idempotent dispatch not counted).",
        ),
        (
            COMPLETED,
            "Tasks whose handler succeeded and whose result was recorded.",
        ),
        (
            FAILED,
            "Handler runs that failed (errors, panics, time-outs).",
        ),
        (RETRIED, "Failed runs put back for another try."),
        (
            PROMOTED,
            "Delayed entries (retries, scheduled tasks) moved into a task stream once due.",
        ),
        (DEAD_LETTERED, "Tasks moved to the dead-letter stream."),
        (
            RECLAIMED,
            "Entries a worker took over from a crashed or stalled consumer.",
        ),
        (
            DELETED_WHILE_PENDING,
            "Entries found deleted from their stream while a worker held them.",
        ),
        (
            GROUP_RECREATED,
            "Consumer groups a worker found missing and created again.",
        ),
        (
            BROKER_ERRORS,
            "Broker errors a worker waited out or stopped on.",
        ),
        (REPLAYED, "Dead letters replayed to their task stream."),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Seconds a handler ran, per run, by agent type and outcome (success, failure)."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Seconds from a task entry's append to its stream to the start of its run."
    );
}

/// Adds `n` to counter `name` for `agent_type`.
pub fn count(name: &'static str, agent_type: &str, n: u64) {
    metrics::counter!(name, AGENT_TYPE => agent_type.to_owned()).increment(n);
}

/// Records a run of `agent_type`'s handler that took `elapsed` and ended in
/// `outcome` ([`SUCCESS`] or [`FAILURE`]).
pub(crate) fn handler_duration(agent_type: &str, outcome: &'static str, elapsed: Duration) {
    metrics::histogram!(
        HANDLER_DURATION,
        AGENT_TYPE => agent_type.to_owned(),
        OUTCOME => outcome,
    )
    .record(elapsed.as_secs_f64());
}

/// Records that a run of `agent_type` started at `now_ms` on an entry
/// appended at `appended_ms` (its id's millisecond), both ms since the
/// Unix epoch.
pub(crate) fn queue_wait(agent_type: &str, appended_ms: u64, now_ms: u64) {
    // A worker clock behind the broker's: no wait, rather than a negative one.
    let waited_ms = now_ms.saturating_sub(appended_ms);
    // Exact below 2^53 ms (285,000 years).
    #[allow(clippy::cast_precision_loss)]
    let seconds = waited_ms as f64 / 1000.0;
    metrics::histogram!(QUEUE_WAIT, AGENT_TYPE => agent_type.to_owned()).record(seconds);
}
