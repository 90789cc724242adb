//! `crewq demo`: the first seed's research workflow, end to end.
//!
//! A supervisor fans research tasks (`analyze_codebase`, `search_docs`) out
//! to two research workers in one group, whose simulated work fails now and
//! then; then it hands their findings to a report agent. Everything goes
//! through the same Producer, Worker and Supervisor an application uses.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crewq_core::producer::Producer;
use crewq_core::supervisor::{Gathered, Supervisor, new_trace_id};
use crewq_core::worker::{Backoff, HandlerError, Worker, WorkerOptions, WorkerReport};
use crewq_core::{AgentType, Broker, Keyspace, Task, TaskStatus};
use crewq_memory::MemoryBroker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `crewq demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run on this Redis (redis:// or rediss://) instead of the in-memory
    /// broker; keys go under a fresh `crewq-demo-<time>` prefix unless
    /// `--key-prefix` names one.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// The key prefix on Redis, so that `crewq stats`, `crewq dlq` ... can
    /// look at the demo's streams afterwards with the same `--key-prefix`.
    #[arg(long, value_name = "P", requires = "redis")]
    pub key_prefix: Option<String>,
    #[arg(long, requires = "redis", help = crate::target::CLUSTER_HELP)]
    pub cluster: bool,
    #[command(flatten)]
    pub replica_wait: crate::target::ReplicaWait,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Research tasks to fan out.
    #[arg(long, default_value_t = 6)]
    pub tasks: u32,
    /// The chance that one attempt of a research task fails, 0 to 1.
    #[arg(long, default_value_t = 0.25)]
    pub failure_rate: f64,
    /// Retries before a task is dead-lettered: it runs at most this many + 1 times.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,
    /// Seeds the simulated work and failures.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Gives up waiting for a step after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// What the demo did.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// `memory` or the redacted Redis URL.
    pub backend: String,
    /// The key prefix the streams live under.
    pub prefix: String,
    /// The workflow's trace id.
    pub trace_id: String,
    /// Tasks appended to task streams.
    pub dispatched: u64,
    /// Tasks that ended in success.
    pub completed: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Tasks moved to a dead-letter stream.
    pub dead_lettered: u64,
    /// Results read more than once (delivery is at least once).
    pub duplicates: u64,
    /// Tasks still without a result when a step timed out.
    pub missing: u64,
    /// One row per step.
    pub steps: Vec<StepReport>,
    /// Handler time per action.
    pub actions: Vec<ActionLatency>,
}

/// One step of the workflow.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// `research` or `report`.
    pub step: String,
    /// Tasks fanned out.
    pub tasks: u64,
    /// Succeeded.
    pub completed: u64,
    /// Failed for good (dead-lettered).
    pub failed: u64,
    /// Failed attempts retried.
    pub retried: u64,
    /// Without a result at the time-out.
    pub missing: u64,
    /// From fan-out to the last result, in ms.
    pub wall_ms: u64,
}

/// Handler time of one action, from the results.
#[derive(Debug, Serialize)]
pub struct ActionLatency {
    /// The action.
    pub action: String,
    /// Results with a duration.
    pub results: u64,
    /// Median handler time, ms.
    pub p50_ms: u64,
    /// Longest handler time, ms.
    pub max_ms: u64,
}

#[derive(Deserialize)]
struct Research {
    target: String,
}

/// Runs the demo on the broker `args` names.
pub async fn run(args: DemoArgs) -> Result<DemoReport, Box<dyn Error>> {
    if !(0.0..=1.0).contains(&args.failure_rate) {
        return Err(format!(
            "--failure-rate must be between 0 and 1, got {}",
            args.failure_rate
        )
        .into());
    }
    if args.replica_wait.wait_replicas.is_some() && args.redis.is_none() {
        return Err("--wait-replicas needs --redis".into());
    }
    match &args.redis {
        None => {
            run_on(
                MemoryBroker::new(),
                Keyspace::default(),
                "memory".into(),
                &args,
            )
            .await
        }
        Some(url) => {
            let broker = crate::target::connect(url, args.cluster, &args.replica_wait).await?;
            let prefix = match &args.key_prefix {
                Some(prefix) => prefix.clone(),
                None => {
                    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
                    format!("crewq-demo-{millis}")
                }
            };
            let keyspace = crate::target::layout(args.cluster).with_prefix(prefix)?;
            let backend = broker.redacted_url().to_owned();
            run_on(broker, keyspace, backend, &args).await
        }
    }
}

async fn run_on<B>(
    broker: B,
    keyspace: Keyspace,
    backend: String,
    args: &DemoArgs,
) -> Result<DemoReport, Box<dyn Error>>
where
    B: Broker + Clone + 'static,
{
    let research = AgentType::new("research")?;
    let report = AgentType::new("report")?;
    let mut options = WorkerOptions::default()
        .lease(Duration::from_secs(5))
        .concurrency(4);
    options.keyspace = keyspace.clone();
    options.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    options.seed = Some(args.seed);

    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(args.seed)));
    let failure_rate = args.failure_rate;
    let researcher = move |task: Task<Research>| {
        // Draw the work's length and fate up front: the lock is not held
        // across the await.
        let (work_ms, fails) = {
            let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
            (rng.random_range(5..40u64), rng.random_bool(failure_rate))
        };
        async move {
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
            if fails {
                return Err::<Value, HandlerError>(
                    format!("simulated failure of {}", task.action).into(),
                );
            }
            Ok(json!({
                "action": task.action,
                "finding": format!("{} of {}: looks fine", task.action, task.payload.target),
            }))
        }
    };
    let reporter = |task: Task<Value>| async move {
        let findings = task.payload["findings"].as_array().map_or(0, Vec::len);
        Ok::<Value, HandlerError>(json!({ "summary": format!("{findings} findings summarised") }))
    };
    let workers = vec![
        (
            "research",
            Worker::new(
                broker.clone(),
                research.clone(),
                "research-1",
                researcher.clone(),
            )
            .options(options.clone())
            .spawn(),
        ),
        (
            "research",
            Worker::new(broker.clone(), research, "research-2", researcher)
                .options(options.clone())
                .spawn(),
        ),
        (
            "report",
            Worker::new(broker.clone(), report, "report-1", reporter)
                .options(options)
                .spawn(),
        ),
    ];

    let producer = Producer::new(broker.clone()).with_keyspace(keyspace.clone());
    let supervisor = Supervisor::new("demo-supervisor", producer)?;
    let trace_id = new_trace_id();
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut actions: BTreeMap<String, String> = BTreeMap::new();

    let research_tasks = (0..args.tasks)
        .map(|n| {
            let action = if n % 2 == 0 {
                "analyze_codebase"
            } else {
                "search_docs"
            };
            Task::new(
                "research",
                action,
                json!({ "target": format!("module-{n}") }),
            )
            .max_retries(args.max_retries)
            .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for task in &research_tasks {
        actions.insert(task.task_id.clone(), task.action.clone());
    }
    let (research_step, researched) =
        step(&supervisor, &trace_id, "research", research_tasks, timeout).await?;

    let findings: Vec<Value> = researched
        .results
        .values()
        .filter(|r| r.status == TaskStatus::Success)
        .filter_map(|r| r.output.clone())
        .collect();
    // Nothing to summarise when every research task failed: the report
    // agent would only summarise an empty list.
    let reported = if findings.is_empty() {
        None
    } else {
        let summary = Task::new("report", "summarize", json!({ "findings": findings }))
            .max_retries(args.max_retries)
            .build()?;
        actions.insert(summary.task_id.clone(), summary.action.clone());
        Some(step(&supervisor, &trace_id, "report", vec![summary], timeout).await?)
    };
    let (report_step, reported) = reported.unzip();

    let mut per_step: BTreeMap<&str, WorkerReport> = BTreeMap::new();
    for (step_name, worker) in workers {
        let done = worker.shutdown(Duration::from_secs(5)).await?;
        let total = per_step.entry(step_name).or_default();
        total.retried += done.retried;
        total.dead_lettered += done.dead_lettered;
    }
    let mut steps: Vec<StepReport> = std::iter::once(research_step).chain(report_step).collect();
    for step in &mut steps {
        if let Some(done) = per_step.get(step.step.as_str()) {
            step.retried = done.retried;
        }
    }
    let gathered: Vec<&Gathered> = std::iter::once(&researched).chain(&reported).collect();
    Ok(DemoReport {
        backend,
        prefix: keyspace.prefix().to_owned(),
        trace_id,
        dispatched: steps.iter().map(|s| s.tasks).sum(),
        completed: steps.iter().map(|s| s.completed).sum(),
        retried: per_step.values().map(|r| r.retried).sum(),
        dead_lettered: per_step.values().map(|r| r.dead_lettered).sum(),
        duplicates: gathered.iter().map(|g| g.duplicates).sum(),
        missing: steps.iter().map(|s| s.missing).sum(),
        actions: latencies(&gathered, &actions),
        steps,
    })
}

/// Fans `tasks` out under `trace_id` and gathers their results.
async fn step<B: Broker>(
    supervisor: &Supervisor<B>,
    trace_id: &str,
    name: &str,
    tasks: Vec<Task<Value>>,
    timeout: Duration,
) -> Result<(StepReport, Gathered), Box<dyn Error>> {
    let started = tokio::time::Instant::now();
    let fanned = supervisor.fan_out(trace_id, tasks).await?;
    let gathered = supervisor.gather(&fanned.workflow, timeout).await?;
    let count = |status: TaskStatus| {
        gathered
            .results
            .values()
            .filter(|r| r.status == status)
            .count() as u64
    };
    let report = StepReport {
        step: name.to_owned(),
        tasks: fanned.dispatched.len() as u64,
        completed: count(TaskStatus::Success),
        failed: count(TaskStatus::Failure),
        retried: 0,
        missing: gathered.missing.len() as u64,
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok((report, gathered))
}

/// Median and longest handler time per action, from successful results.
fn latencies(gathered: &[&Gathered], actions: &BTreeMap<String, String>) -> Vec<ActionLatency> {
    let mut by_action: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for result in gathered.iter().flat_map(|g| g.results.values()) {
        if result.status != TaskStatus::Success {
            continue;
        }
        if let Some(action) = actions.get(&result.task_id) {
            by_action
                .entry(action)
                .or_default()
                .push(result.duration_ms);
        }
    }
    by_action
        .into_iter()
        .map(|(action, mut ms)| {
            ms.sort_unstable();
            ActionLatency {
                action: action.to_owned(),
                results: ms.len() as u64,
                p50_ms: ms[ms.len() / 2],
                max_ms: ms[ms.len() - 1],
            }
        })
        .collect()
}
