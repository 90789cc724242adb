//! The load `crewq bench` puts on the real Producer and Worker: producers
//! dispatching as fast as they can (closed loop) or on a schedule (open
//! loop), a handler that notes when it started (and may take a while, or
//! fail a first attempt on purpose), and the latency probe.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
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
    /// Successes of tasks never chosen to fail (`--fail-rate`).
    steady: AtomicU64,
    /// When the latest of those successes ended, ns since `base`.
    steady_last_ns: AtomicU64,
    /// Attempts failed on purpose (`--fail-rate`).
    failed: AtomicU64,
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
            steady: AtomicU64::new(0),
            steady_last_ns: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            // 1 µs to 1 h at 3 significant digits.
            latencies: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        })
    }

    /// Nanoseconds since the probe's base instant.
    pub fn now_ns(&self) -> u64 {
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

    /// Called as a task never chosen to fail succeeds.
    fn steady_succeeded(&self) {
        self.steady.fetch_add(1, Ordering::Relaxed);
        self.steady_last_ns
            .fetch_max(self.now_ns(), Ordering::Relaxed);
    }

    /// Successes of tasks never chosen to fail, and when the latest one
    /// ended (ns since the base instant).
    pub fn steady(&self) -> (u64, u64) {
        (
            self.steady.load(Ordering::Relaxed),
            self.steady_last_ns.load(Ordering::Relaxed),
        )
    }

    /// Attempts failed on purpose so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
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

/// The bench's handler: notes its start, fails at once if its task was
/// chosen to fail this attempt (`--fail-rate`), else takes `work`
/// (`--handler-ms`; none by default) and succeeds.
///
/// A failing attempt fails before the work, as a handler whose call is
/// refused at once: the slot it held is free again as soon as its failure
/// is settled (its retry waits in the delayed set, not in the slot), so
/// with slots the bottleneck the succeeding tasks' throughput shows
/// whether failures cost them slot time.
pub fn handler(
    probe: Arc<Probe>,
    failing: Arc<Failing>,
    work: Duration,
) -> impl Fn(Task<Payload>) -> Attempt + Send + Sync + 'static {
    move |task: Task<Payload>| {
        probe.handler_started(task.payload.sent_ns);
        let steady = match failing.fails_now(&task.task_id) {
            Fate::FailNow => {
                probe.failed.fetch_add(1, Ordering::Relaxed);
                return Attempt::Done(Some(Err("bench: a first attempt chosen to fail".into())));
            }
            Fate::Retried => false,
            Fate::Steady => true,
        };
        // Without failures every task is steady, and the report takes the
        // run's own figures: no clock read nor shared counter per task that
        // a run of a build without this probe would not pay.
        let noted = steady && failing.any();
        if work.is_zero() {
            if noted {
                probe.steady_succeeded();
            }
            return Attempt::Done(Some(Ok(Value::Null)));
        }
        Attempt::Working {
            sleep: Box::pin(tokio::time::sleep(work)),
            probe: noted.then(|| Arc::clone(&probe)),
        }
    }
}

/// One attempt of the bench's handler: done at once (no allocation, as
/// a handler with nothing to do), or working for `--handler-ms`.
pub enum Attempt {
    /// The outcome, taken when polled.
    Done(Option<Result<Value, HandlerError>>),
    /// Sleeping; then a success, noted in the probe if its task is steady.
    Working {
        sleep: Pin<Box<tokio::time::Sleep>>,
        probe: Option<Arc<Probe>>,
    },
}

impl Future for Attempt {
    type Output = Result<Value, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Attempt::Done(outcome) => Poll::Ready(outcome.take().unwrap_or(Ok(Value::Null))),
            Attempt::Working { sleep, probe } => {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(probe) = probe.take() {
                    probe.steady_succeeded();
                }
                Poll::Ready(Ok(Value::Null))
            }
        }
    }
}

/// What an attempt of a task is, as `--fail-rate` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A task never chosen to fail.
    Steady,
    /// A chosen task's first attempt: it fails.
    FailNow,
    /// A chosen task's later attempt: it succeeds.
    Retried,
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

    /// What this attempt at `task_id` does: fail if it is the first of a
    /// chosen task's.
    pub fn fails_now(&self, task_id: &str) -> Fate {
        if !self.chosen(task_id) {
            return Fate::Steady;
        }
        let first = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task_id.to_owned());
        if first { Fate::FailNow } else { Fate::Retried }
    }

    /// Whether any task is chosen to fail.
    pub fn any(&self) -> bool {
        self.per_mille > 0
    }

    /// Whether `task_id` is one of the chosen share (the same in every run).
    pub fn chosen(&self, task_id: &str) -> bool {
        if self.per_mille == 0 {
            return false;
        }
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        task_id.hash(&mut hasher);
        hasher.finish() % 1000 < self.per_mille
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
                bench_task(&plan, sent + i, payload)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for dispatched in producer.dispatch_batch(&tasks).await? {
            dispatched?;
        }
        sent += n;
    }
    Ok(max_lag)
}

/// Producer `plan`'s `n`-th task: the one place the bench sets a task's
/// dispatch options (agent type round robin, its id), so that a mix of
/// them (priorities, say) can be dealt here, from `n`, in a later option.
fn bench_task(
    plan: &ProducerPlan,
    n: u64,
    payload: Payload,
) -> Result<Task<Payload>, crewq_core::TaskBuildError> {
    Task::new(agent_of(&plan.agents, n), ACTION, payload)
        .task_id(task_id(plan.index, n))
        .build()
}

/// Filler that makes a payload about `bytes` long as JSON.
pub fn padding(bytes: usize) -> String {
    // `{"sent_ns":<up to 20 digits>,"pad":""}` is about 40 bytes.
    "x".repeat(bytes.saturating_sub(40))
}
