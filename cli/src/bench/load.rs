//! The load `crewq bench` puts on the real Producer and Worker: producers
//! dispatching as fast as they can (closed loop) or on a schedule (open
//! loop), a handler that only notes when it started, and the latency probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crewq_core::Broker;
use crewq_core::Task;
use crewq_core::producer::Producer;
use crewq_core::worker::HandlerError;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent type bench tasks go to (the prefix of each one's name when
/// there are several).
pub const AGENT: &str = "bench";

/// The names of `count` agent types: `bench` alone, or `bench0`,
/// `bench1` ... (on a cluster each hashes to its own slot).
pub fn agent_names(count: usize) -> Vec<String> {
    if count <= 1 {
        return vec![AGENT.to_owned()];
    }
    (0..count).map(|i| format!("{AGENT}{i}")).collect()
}
/// The action of every bench task.
const ACTION: &str = "noop";

/// A bench task's payload: when it was dispatched, and padding to size.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    /// Nanoseconds since the probe's base instant at dispatch.
    pub sent_ns: u64,
    /// Filler for `--payload-bytes`.
    pub pad: String,
}

/// Records dispatch-to-handler-start latencies, and counts handler starts.
pub struct Probe {
    base: Instant,
    started: AtomicU64,
    /// Tasks handed to `dispatch_batch` so far, by all producers.
    dispatched: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

/// What the latency histogram shows, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Probe {
    /// A probe whose clock starts now.
    pub fn new() -> Result<Probe, hdrhistogram::CreationError> {
        Ok(Probe {
            base: Instant::now(),
            started: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            // 1 µs to 1 h at 3 significant digits.
            latencies: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        })
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Called by the handler as it starts.
    fn handler_started(&self, sent_ns: u64) {
        let micros = self.now_ns().saturating_sub(sent_ns) / 1_000;
        self.started.fetch_add(1, Ordering::Relaxed);
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        latencies.saturating_record(micros.max(1));
    }

    /// Handler starts so far (a redelivered task counts again).
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// The latencies recorded so far.
    pub fn percentiles(&self) -> Percentiles {
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Percentiles {
            p50_us: latencies.value_at_quantile(0.50),
            p99_us: latencies.value_at_quantile(0.99),
            p999_us: latencies.value_at_quantile(0.999),
            max_us: latencies.max(),
        }
    }
}

/// The bench's handler: notes its start, does nothing, succeeds.
pub fn handler(
    probe: Arc<Probe>,
    failing: Arc<Failing>,
) -> impl Fn(Task<Payload>) -> std::future::Ready<Result<Value, HandlerError>> + Send + Sync + 'static
{
    move |task: Task<Payload>| {
        probe.handler_started(task.payload.sent_ns);
        if failing.fails_now(&task.task_id) {
            return std::future::ready(Err("bench: a first attempt chosen to fail".into()));
        }
        std::future::ready(Ok(Value::Null))
    }
}

/// Which tasks fail their first attempt (`--fail-rate`): a share of them,
/// chosen by a hash of the task id, each once.
#[derive(Debug)]
pub struct Failing {
    /// Out of 1000.
    per_mille: u64,
    failed: Mutex<std::collections::HashSet<String>>,
}

impl Failing {
    pub fn new(rate: f64) -> Failing {
        Failing {
            // Within 0..=1000: the rate was checked to be within 0 and 1.
            per_mille: (rate * 1000.0).round() as u64,
            failed: Mutex::default(),
        }
    }

    /// Whether this attempt at `task_id` fails: its first, if chosen.
    fn fails_now(&self, task_id: &str) -> bool {
        if self.per_mille == 0 {
            return false;
        }
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        task_id.hash(&mut hasher);
        if hasher.finish() % 1000 >= self.per_mille {
            return false;
        }
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task_id.to_owned())
    }
}

/// How one producer dispatches its share.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// Tasks this producer dispatches.
    pub share: u64,
    /// Tasks per `dispatch_batch`.
    pub batch: usize,
    /// `Some(tasks/s)`: open loop at this rate; `None`: as fast as it can.
    pub rate: Option<f64>,
    /// Closed loop: at most this many tasks dispatched and not yet started,
    /// to bound memory (`--max-backlog`).
    pub backlog: Option<u64>,
    /// The payload's filler.
    pub pad: String,
    /// The agent types, dealt tasks round robin.
    pub agents: Arc<Vec<String>>,
    /// This producer's number: its tasks are `bench-<index>-<n>`
    /// ([`task_id`]), so that the bench can delete their dedupe markers.
    pub index: usize,
}

/// The id of producer `producer`'s `n`-th task.
pub fn task_id(producer: usize, n: u64) -> String {
    format!("bench-{producer}-{n}")
}

/// The agent type of producer-local task `n`: round robin.
pub fn agent_of(agents: &[String], n: u64) -> &str {
    let slot = usize::try_from(n).unwrap_or(0) % agents.len().max(1);
    agents.get(slot).map_or(AGENT, String::as_str)
}

/// Dispatches `plan.share` tasks; returns the largest lag behind the
/// schedule (open loop only).
pub async fn produce<B: Broker>(
    producer: Producer<B>,
    probe: Arc<Probe>,
    plan: ProducerPlan,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut max_lag = Duration::ZERO;
    while sent < plan.share {
        let due = match plan.rate {
            Some(rate) => {
                let next = start + Duration::from_secs_f64(sent as f64 / rate);
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep_until(next.into()).await;
                    continue;
                }
                max_lag = max_lag.max(now - next);
                // Everything due by now, in one round trip.
                let due = (now - start).as_secs_f64() * rate;
                (due as u64).saturating_sub(sent).max(1)
            }
            None => {
                if let Some(backlog) = plan.backlog {
                    while probe.dispatched.load(Ordering::Relaxed) > probe.started() + backlog {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                plan.batch as u64
            }
        };
        let n = due.min(plan.batch as u64).min(plan.share - sent);
        let sent_ns = probe.now_ns();
        probe.dispatched.fetch_add(n, Ordering::Relaxed);
        let tasks = (0..n)
            .map(|i| {
                let payload = Payload {
                    sent_ns,
                    pad: plan.pad.clone(),
                };
                let agent = agent_of(&plan.agents, sent + i);
                Task::new(agent, ACTION, payload)
                    .task_id(task_id(plan.index, sent + i))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for dispatched in producer.dispatch_batch(&tasks).await? {
            dispatched?;
        }
        sent += n;
    }
    Ok(max_lag)
}

/// Filler that makes a payload about `bytes` long as JSON.
pub fn padding(bytes: usize) -> String {
    // `{"sent_ns":<up to 20 digits>,"pad":""}` is about 40 bytes.
    "x".repeat(bytes.saturating_sub(40))
}
