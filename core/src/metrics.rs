//! The counters crewq reports through the `metrics` crate.
//!
//! An application installs a recorder (a Prometheus exporter, say) and gets
//! these counters, each labelled with `agent_type`. Without a recorder they
//! cost next to nothing.

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

/// The label every counter carries.
pub const AGENT_TYPE: &str = "agent_type";

/// Adds `n` to counter `name` for `agent_type`.
pub fn count(name: &'static str, agent_type: &str, n: u64) {
    metrics::counter!(name, AGENT_TYPE => agent_type.to_owned()).increment(n);
}
