//! `/metrics`: the Prometheus text format, rendered by
//! `metrics-exporter-prometheus` from this process's recorder.
//!
//! Each scrape first reads every agent type's numbers with [`Monitor`] and
//! sets them as gauges (so they are as fresh as the scrape), then renders
//! the recorder: those gauges, the crew's task-stream appends as a counter,
//! and the crewq counters and histograms this process itself records (its
//! replays). The workers' counters and histograms are their own processes'
//! to export (see `core/examples/prometheus.rs`): a Prometheus server
//! scrapes them there.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crewq_core::metrics::{AGENT_TYPE, SECONDS_BUCKETS};
use crewq_core::monitor::{AgentStats, Monitor, RateStats};
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::App;

/// Entries in an agent type's task stream.
pub const QUEUE_LENGTH: &str = "crewq_queue_length";
/// Entries not yet delivered to the consumer groups (summed over groups;
/// the stream's length when it has none; NaN when Redis cannot tell).
pub const QUEUE_LAG: &str = "crewq_queue_lag";
/// Entries delivered and not acknowledged (summed over groups).
pub const QUEUE_PENDING: &str = "crewq_queue_pending";
/// How long since the oldest pending entry was last delivered (the largest
/// over groups); 0 when nothing is pending.
pub const OLDEST_PENDING_IDLE: &str = "crewq_queue_oldest_pending_idle_seconds";
/// Consumers of the agent type's groups.
pub const CONSUMERS: &str = "crewq_consumers";
/// Entries in the agent type's dead-letter stream.
pub const DEAD_LETTERS: &str = "crewq_dead_letters";
/// Entries in the agent type's delayed set: retries waiting out their
/// back-off and tasks dispatched for later.
pub const DELAYED: &str = "crewq_delayed";
/// Running permits of the agent type's shared rate limit held now
/// (unexpired). The `crewq_rate_*` gauges are exported only for agent
/// types with a rate limit as the broker holds it (one its workers
/// acquired with, or a pause).
pub const RATE_RUNNING: &str = "crewq_rate_running";
/// Starts in the rate limit's window ending now.
pub const RATE_STARTS_IN_WINDOW: &str = "crewq_rate_starts_in_window";
/// How long the agent type stays paused by a handler's slow-down; 0 when
/// it is not.
pub const RATE_PAUSED: &str = "crewq_rate_paused_seconds";
/// The running limit its workers last acquired with (absent without one).
pub const RATE_RUNNING_LIMIT: &str = "crewq_rate_running_limit";
/// The start limit's count per window (absent without one).
pub const RATE_STARTS_LIMIT: &str = "crewq_rate_starts_limit";
/// The start limit's window (absent without one).
pub const RATE_WINDOW: &str = "crewq_rate_window_seconds";
/// Entries ever appended to the task stream (`XINFO STREAM`'s
/// entries-added): dispatches, retries and replays. Its rate is the crew's
/// intake.
pub const APPENDED: &str = "crewq_queue_appended_total";

/// The installed recorder's handle.
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the process-wide Prometheus recorder, with buckets for
    /// crewq's `_seconds` histograms.
    pub fn install() -> Result<Exporter, Box<dyn std::error::Error>> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
            .install_recorder()?;
        crewq_core::metrics::describe();
        describe_gauge!(
            QUEUE_LENGTH,
            Unit::Count,
            "Entries in the agent type's task stream."
        );
        describe_gauge!(
            QUEUE_LAG,
            Unit::Count,
            "Entries not yet delivered to the agent type's consumer groups (NaN when Redis cannot tell)."
        );
        describe_gauge!(
            QUEUE_PENDING,
            Unit::Count,
            "Entries delivered and not acknowledged."
        );
        describe_gauge!(
            OLDEST_PENDING_IDLE,
            Unit::Seconds,
            "Seconds since the oldest pending entry was last delivered (0 when none is pending)."
        );
        describe_gauge!(
            CONSUMERS,
            Unit::Count,
            "Consumers of the agent type's groups."
        );
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Entries in the agent type's dead-letter stream."
        );
        describe_gauge!(
            DELAYED,
            Unit::Count,
            "Entries in the agent type's delayed set: retries waiting out their back-off, tasks dispatched for later."
        );
        describe_gauge!(
            RATE_RUNNING,
            Unit::Count,
            "Running permits of the agent type's shared rate limit held now."
        );
        describe_gauge!(
            RATE_STARTS_IN_WINDOW,
            Unit::Count,
            "Starts in the rate limit's window ending now."
        );
        describe_gauge!(
            RATE_PAUSED,
            Unit::Seconds,
            "Seconds the agent type stays paused by a handler's slow-down (0 when it is not)."
        );
        describe_gauge!(
            RATE_RUNNING_LIMIT,
            Unit::Count,
            "The rate limit's most handlers running at once, as its workers last acquired with."
        );
        describe_gauge!(
            RATE_STARTS_LIMIT,
            Unit::Count,
            "The rate limit's most starts per window, as its workers last acquired with."
        );
        describe_gauge!(
            RATE_WINDOW,
            Unit::Seconds,
            "The rate limit's window of starts, as its workers last acquired with."
        );
        describe_counter!(
            APPENDED,
            Unit::Count,
            "Entries ever appended to the task stream: dispatches, retries and replays."
        );
        Ok(Exporter { handle })
    }
}

/// `GET /metrics`: fresh gauges, then everything recorded. A crew that
/// cannot be read answers 503, so Prometheus marks the target down rather
/// than keeping stale numbers.
pub async fn scrape(State(app): State<Arc<App>>) -> Response {
    let monitor = Monitor::new(&app.broker, app.keyspace.clone());
    match monitor.stats(&app.agents).await {
        Ok(stats) => stats.iter().for_each(set_gauges),
        Err(err) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the crew's streams: {err}\n"),
            )
                .into_response();
        }
    }
    // Drains the histograms' recent samples into their buckets.
    app.prometheus.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.prometheus.handle.render(),
    )
        .into_response()
}

/// Sets one agent type's gauges, as `crewq stats`'s table sums them.
fn set_gauges(agent: &AgentStats) {
    let name = agent.agent_type.to_string();
    let numbers = Numbers::of(agent);
    let idle_seconds = as_f64(numbers.oldest_pending_idle_ms) / 1000.0;
    for (gauge, value) in [
        (QUEUE_LENGTH, as_f64(agent.tasks.length)),
        (QUEUE_LAG, numbers.lag.map_or(f64::NAN, as_f64)),
        (QUEUE_PENDING, as_f64(numbers.pending)),
        (OLDEST_PENDING_IDLE, idle_seconds),
        (CONSUMERS, as_f64(numbers.consumers)),
        (DEAD_LETTERS, as_f64(agent.dlq_length)),
        (DELAYED, as_f64(agent.delayed_length)),
    ] {
        gauge!(gauge, AGENT_TYPE => name.clone()).set(value);
    }
    counter!(APPENDED, AGENT_TYPE => name.clone()).absolute(agent.tasks.entries_added);
    if let Some(rate) = &agent.rate {
        for (gauge, value) in rate_gauges(rate) {
            gauge!(gauge, AGENT_TYPE => name.clone()).set(value);
        }
    }
}

/// The `crewq_rate_*` gauges of a rate limit: its use, its pause, and the
/// limits the broker knows (those the limit has).
pub fn rate_gauges(rate: &RateStats) -> Vec<(&'static str, f64)> {
    let paused = rate.paused.map_or(0.0, |left| left.as_secs_f64());
    let mut gauges = vec![
        (RATE_RUNNING, as_f64(rate.running)),
        (RATE_STARTS_IN_WINDOW, as_f64(rate.starts_in_window)),
        (RATE_PAUSED, paused),
    ];
    if let Some(m) = rate.running_limit {
        gauges.push((RATE_RUNNING_LIMIT, f64::from(m)));
    }
    if let Some(n) = rate.starts_limit {
        gauges.push((RATE_STARTS_LIMIT, f64::from(n)));
    }
    if let Some(ms) = rate.window_ms {
        gauges.push((RATE_WINDOW, as_f64(ms) / 1000.0));
    }
    gauges
}

/// An agent type's numbers summed over its groups.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Numbers {
    /// Summed lag; the stream's length with no group; `None` when a group's
    /// lag is unknown.
    pub lag: Option<u64>,
    pub pending: u64,
    pub consumers: u64,
    /// The largest oldest-pending idle time, 0 when nothing is pending.
    pub oldest_pending_idle_ms: u64,
}

impl Numbers {
    pub fn of(agent: &AgentStats) -> Numbers {
        let lag = if agent.groups.is_empty() {
            Some(agent.tasks.length)
        } else {
            agent
                .groups
                .iter()
                .try_fold(0u64, |sum, g| g.lag.map(|lag| sum.saturating_add(lag)))
        };
        let oldest = agent
            .groups
            .iter()
            .filter_map(|g| g.oldest_pending_idle)
            .max()
            .unwrap_or_default();
        Numbers {
            lag,
            pending: agent.groups.iter().map(|g| g.pending).sum(),
            consumers: agent.groups.iter().map(|g| g.consumers.len() as u64).sum(),
            oldest_pending_idle_ms: u64::try_from(oldest.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A count as a gauge's value: exact below 2^53.
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crewq_core::monitor::Monitor;
    use crewq_core::{AgentType, Broker, Keyspace, RateAcquire, RateLimit, TokioClock};
    use crewq_memory::MemoryBroker;

    use super::*;

    /// On the memory broker, under paused time: the gauges of a rate limit
    /// in use, of a pause alone, and none for an agent type without either.
    #[tokio::test(start_paused = true)]
    async fn rate_gauges_are_the_brokers_rate_state() {
        let broker = MemoryBroker::with_clock(TokioClock::default());
        let keyspace = Keyspace::default();
        let (research, review, report) = (
            AgentType::new("research").expect("name"),
            AgentType::new("review").expect("name"),
            AgentType::new("report").expect("name"),
        );
        let limit = RateLimit::new()
            .starts(5, Duration::from_millis(1500))
            .running(3);
        let grant = broker
            .rate_acquire(RateAcquire {
                keys: keyspace.rate(&research),
                limit,
                permits: vec!["a".into(), "b".into()],
                lease: Duration::from_secs(60),
            })
            .await
            .expect("acquire");
        assert_eq!(grant.granted, 2);
        broker
            .rate_pause(&keyspace.rate(&review), Duration::from_secs(20))
            .await
            .expect("pause");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = Monitor::new(&broker, keyspace)
            .stats(&[research, review, report])
            .await
            .expect("stats");
        let gauges: Vec<_> = stats
            .iter()
            .map(|a| a.rate.as_ref().map(rate_gauges))
            .collect();
        assert_eq!(
            gauges[0],
            Some(vec![
                (RATE_RUNNING, 2.0),
                // Started 5 s ago: out of the 1.5 s window.
                (RATE_STARTS_IN_WINDOW, 0.0),
                (RATE_PAUSED, 0.0),
                (RATE_RUNNING_LIMIT, 3.0),
                (RATE_STARTS_LIMIT, 5.0),
                (RATE_WINDOW, 1.5),
            ])
        );
        assert_eq!(
            gauges[1],
            Some(vec![
                (RATE_RUNNING, 0.0),
                (RATE_STARTS_IN_WINDOW, 0.0),
                (RATE_PAUSED, 15.0),
            ])
        );
        assert_eq!(gauges[2], None);
    }
}
