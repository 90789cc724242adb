//! `crewq-chaos worker`: one crewq worker process, as an application runs it.
//!
//! It runs the real [`Worker`] over a real [`RedisBroker`] with the product's
//! defaults except a short lease (so a crashed peer's tasks come back within
//! seconds) and the key prefix. Its handler does what the task's payload
//! says (see [`Plan`]) and, before returning, appends one line to its run
//! log: `S <task_id>` for a run that succeeded, `F <task_id>` for one that
//! failed. The log is a plain file, not Redis, so it survives every fault
//! the suite injects (a SIGKILL loses no completed `write`), and the
//! accounting can tell "the handler succeeded" from "a success was
//! recorded".
//!
//! SIGTERM stops it gracefully (the worker's own shutdown, with a grace
//! shorter than the lease); SIGKILL is a crash. It exits on its own when its
//! parent (the runner) is gone, so a killed runner leaves no workers behind.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crewq_core::worker::{HandlerError, Worker, WorkerOptions, WorkerReport};
use crewq_core::{AgentType, Keyspace, Task};
use crewq_redis::RedisBroker;
use serde_json::{Value, json};

/// Exit code: the worker's `run` returned an error (it stopped by itself).
pub const EXIT_WORKER_ERROR: i32 = 3;
/// Exit code: Redis could not be reached within `--connect-wait-secs`.
pub const EXIT_NO_REDIS: i32 = 4;
/// Exit code: bad arguments.
pub const EXIT_USAGE: i32 = 2;

/// `crewq-chaos worker`'s options.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// The Redis (or proxy) URL.
    #[arg(long)]
    pub url: String,
    /// The key prefix of the run.
    #[arg(long)]
    pub prefix: String,
    /// The agent type.
    #[arg(long, default_value = "work")]
    pub agent: String,
    /// This worker's consumer name.
    #[arg(long)]
    pub consumer: String,
    /// The lease, in ms.
    #[arg(long, default_value_t = 2000)]
    pub lease_ms: u64,
    /// Tasks run at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The shutdown grace on SIGTERM, in ms (below the lease).
    #[arg(long, default_value_t = 1000)]
    pub grace_ms: u64,
    /// The file the handler logs its runs to.
    #[arg(long)]
    pub run_log: PathBuf,
    /// How long to keep trying to connect at start (Redis may be down).
    #[arg(long, default_value_t = 90)]
    pub connect_wait_secs: u64,
}

/// What a task's payload asks of the handler.
///
/// `{"mode": "ok" | "fail" | "flaky", "sleep_ms": N, "fail_pct": P}`:
/// `ok` always succeeds, `fail` always fails (so it must end in the
/// dead-letter stream after `1 + max_retries` failed runs), `flaky` fails
/// with probability P% per run. The handler cannot see the attempt number,
/// so a flaky run's fate is drawn from the task id, the consumer name and
/// how many times this process has run the task: deterministic for a given
/// history of processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// How the handler ends.
    pub mode: Mode,
    /// How long it works first.
    pub sleep_ms: u64,
    /// A flaky run's chance of failing, in percent.
    pub fail_pct: u64,
}

/// How a run ends; see [`Plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Always succeeds.
    Ok,
    /// Always fails.
    Fail,
    /// Fails now and then.
    Flaky,
}

impl Plan {
    /// Reads a payload; anything missing or unknown means "succeed at once"
    /// (so a peer-written task runs too).
    pub fn from_payload(payload: &Value) -> Plan {
        let mode = match payload.get("mode").and_then(Value::as_str) {
            Some("fail") => Mode::Fail,
            Some("flaky") => Mode::Flaky,
            _ => Mode::Ok,
        };
        Plan {
            mode,
            sleep_ms: payload.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0),
            fail_pct: payload.get("fail_pct").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// The payload that reads back as this plan.
    pub fn to_payload(&self) -> Value {
        let mode = match self.mode {
            Mode::Ok => "ok",
            Mode::Fail => "fail",
            Mode::Flaky => "flaky",
        };
        json!({ "mode": mode, "sleep_ms": self.sleep_ms, "fail_pct": self.fail_pct })
    }

    /// Whether run number `run` (from 0) of `task_id` fails.
    pub fn fails(&self, task_id: &str, run: u64) -> bool {
        match self.mode {
            Mode::Ok => false,
            Mode::Fail => true,
            Mode::Flaky => mix(task_id, run) % 100 < self.fail_pct,
        }
    }
}

/// A well-spread hash of a task id and a number (FNV-1a, then splitmix64's
/// finaliser): the suite's only source of randomness in handlers.
pub fn mix(text: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The handler's shared state: its log and its per-task run counts.
struct RunLog {
    file: Mutex<File>,
    runs: Mutex<HashMap<String, u64>>,
}

impl RunLog {
    fn next_run(&self, task_id: &str) -> u64 {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let n = runs.entry(task_id.to_owned()).or_default();
        let run = *n;
        *n += 1;
        run
    }

    /// One whole line per `write` on an `O_APPEND` file: lines of
    /// concurrent runs never interleave.
    fn record(&self, ok: bool, task_id: &str) {
        let line = format!("{} {task_id}\n", if ok { 'S' } else { 'F' });
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // A failed write leaves a run unrecorded: the accounting then only
        // misses evidence, it never invents any.
        let _ = file.write_all(line.as_bytes());
    }
}

/// Why a worker process ended on its own: its exit code and a message.
pub type Failure = (i32, String);

/// Runs the worker until SIGTERM; returns its report, or the exit code and
/// why.
///
/// # Errors
///
/// Bad arguments, Redis unreachable at start, or the worker's own error.
pub async fn run(args: WorkerArgs) -> Result<WorkerReport, Failure> {
    let usage = |e: String| (EXIT_USAGE, e);
    let agent = AgentType::new(args.agent.as_str()).map_err(|e| usage(e.to_string()))?;
    let keyspace = Keyspace::default()
        .with_prefix(args.prefix.as_str())
        .map_err(|e| usage(e.to_string()))?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.run_log)
        .map_err(|e| usage(format!("{}: {e}", args.run_log.display())))?;
    let log = Arc::new(RunLog {
        file: Mutex::new(file),
        runs: Mutex::new(HashMap::new()),
    });
    let wait = Duration::from_secs(args.connect_wait_secs);
    let broker = connect(&args.url, wait)
        .await
        .map_err(|e| (EXIT_NO_REDIS, format!("no Redis within {wait:?}: {e}")))?;
    let consumer = args.consumer.clone();
    let handler = move |task: Task<Value>| {
        let plan = Plan::from_payload(&task.payload);
        let run = log.next_run(&task.task_id);
        // Another consumer's runs draw differently: a flaky task retried
        // elsewhere is not doomed to repeat its first fate.
        let draw = format!("{}@{consumer}", task.task_id);
        let log = Arc::clone(&log);
        let consumer = consumer.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(plan.sleep_ms)).await;
            if plan.fails(&draw, run) {
                log.record(false, &task.task_id);
                return Err::<Value, HandlerError>(
                    format!("planned failure of {} (run {run})", task.task_id).into(),
                );
            }
            log.record(true, &task.task_id);
            Ok(json!({ "task": task.task_id, "worker": consumer, "run": run }))
        }
    };
    let mut options = WorkerOptions::default()
        .lease(Duration::from_millis(args.lease_ms))
        .concurrency(args.concurrency);
    options.keyspace = keyspace;
    let grace = Duration::from_millis(args.grace_ms);
    let stop = async move {
        stop_signal().await;
        grace
    };
    let worker = Worker::new(broker, agent, args.consumer, handler).options(options);
    worker
        .run(stop)
        .await
        .map_err(|e| (EXIT_WORKER_ERROR, format!("the worker stopped: {e}")))
}

/// Connects, retrying while Redis is down, for at most `wait`.
async fn connect(url: &str, wait: Duration) -> crewq_core::Result<RedisBroker> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match RedisBroker::connect(url).await {
            Ok(broker) => return Ok(broker),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Resolves on SIGTERM; exits the process at once if the parent is gone.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let parent = std::os::unix::process::parent_id();
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        // Without a handler SIGTERM still ends the process (abruptly).
        Err(_) => return std::future::pending().await,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            biased;
            _ = term.recv() => return,
            _ = tick.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_its_payload() {
        let plan = Plan {
            mode: Mode::Flaky,
            sleep_ms: 40,
            fail_pct: 25,
        };
        assert_eq!(Plan::from_payload(&plan.to_payload()), plan);
        assert_eq!(Plan::from_payload(&json!({})).mode, Mode::Ok);
    }

    #[test]
    fn flaky_runs_fail_about_as_often_as_asked() {
        let plan = Plan {
            mode: Mode::Flaky,
            sleep_ms: 0,
            fail_pct: 20,
        };
        let fails = (0..10_000)
            .filter(|n| plan.fails(&format!("t{n}"), 0))
            .count();
        assert!((1_600..2_400).contains(&fails), "{fails}");
        assert_eq!(plan.fails("t1", 3), plan.fails("t1", 3));
    }
}
