//! `crewq bench`: throughput and latency of the real Producer and Worker.
//!
//! Producers dispatch trivial tasks with [`Producer::dispatch_batch`];
//! workers ([`Worker`], the same as an application runs) execute them with a
//! handler that only notes when it started. A run ends when every task has
//! its result written and its entry acknowledged: the handler started for
//! each, the group has nothing pending, and the result stream has grown by
//! the number of tasks. Throughput is tasks over that time; latency is from
//! the producer's `dispatch_batch` call to the handler's start, in an
//! HDR histogram.
//!
//! `--rate` makes the producers dispatch on a schedule (open loop) instead
//! of as fast as they can, for latency at a steady load. `--max-rss-mb`
//! fails the run when the process's peak resident memory went above it.
//!
//! For issue 12's features: `--fail-rate` fails the first attempt of a
//! share of the tasks (their retries wait out the back-off in the delayed
//! set), `--handler-ms` makes every successful attempt take that long (so
//! that with few slots the slots are the bottleneck), and
//! `--rate-limit-starts` / `--rate-limit-running` give the workers a shared
//! rate limit, to measure what asking the broker for permits costs. The
//! report then adds the throughput of the tasks never chosen to fail
//! (`steady_per_sec`: they are `steady_tasks`, over the time until the
//! last of them succeeded) and of every attempt (`attempts_per_sec`).

mod load;
mod rss;
mod server;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crewq_core::producer::{Producer, Retention};
use crewq_core::worker::{Worker, WorkerOptions, WorkerReport};
use crewq_core::{AgentType, Broker, Keyspace, RateLimit};
use crewq_memory::MemoryBroker;
use serde::Serialize;

use load::{Probe, ProducerPlan};
use server::SpawnedRedis;

/// `crewq bench`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// `memory`, or a Redis URL (redis:// or rediss://); on Redis, keys go
    /// under a fresh `crewq-bench-<time>` prefix and are deleted at the end
    /// (streams and dedupe markers), whether the run succeeds or not.
    #[arg(long, default_value = "memory", value_name = "memory|URL")]
    pub broker: String,
    /// Start a private redis-server on a free loopback port for the run
    /// (and stop it after) instead of `--broker`.
    #[arg(long, conflicts_with = "broker")]
    pub spawn_redis: bool,
    #[arg(long, conflicts_with = "spawn_redis", help = crate::target::CLUSTER_HELP)]
    pub cluster: bool,
    /// Tasks to run.
    #[arg(long, default_value_t = 200_000)]
    pub tasks: u64,
    /// Agent types the tasks are dealt to, round robin (`bench` alone, or
    /// `bench0`, `bench1` ...), each with --workers workers. On a cluster
    /// each agent type's keys hash to its own slot, so several spread the
    /// load over the masters.
    #[arg(long, default_value_t = 1)]
    pub agent_types: usize,
    /// Concurrent producers, each dispatching its share.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Workers (consumers of the group).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// About how long each task's payload is, as JSON.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Tasks per dispatch_batch call (at most; an open loop sends what is due).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Dispatch this many tasks per second in all (open loop), for latency.
    #[arg(long, value_name = "TASKS_PER_SEC")]
    pub rate: Option<f64>,
    /// The producers' dedupe window in seconds (0: none, a plain pipelined
    /// XADD per task). With one, each dispatch is an append-once script that
    /// also sets a marker key; the window's length changes how long markers
    /// are kept (memory), not what a dispatch costs.
    #[arg(long, default_value_t = 0)]
    pub dedupe_window_secs: u64,
    /// Trim the task and result streams to about this many entries each
    /// with `MAXLEN ~` in every append, cutting tasks no worker has read
    /// yet (`Retention::MaxLenEvenUnread`): a backlog longer than this
    /// loses tasks and the run fails. Without it, the default retention,
    /// which trims only what every group has finished.
    #[arg(long, value_name = "ENTRIES", conflicts_with = "no_retention")]
    pub unsafe_max_len: Option<u64>,
    /// Never trim the task and result streams.
    #[arg(long)]
    pub no_retention: bool,
    /// Closed loop: keep at most this many tasks dispatched and not yet
    /// started, for a run whose memory must stay bounded (the default
    /// retention keeps every unread task, so an unbounded backlog is
    /// memory). Not needed for correctness; none by default.
    #[arg(long, value_name = "TASKS")]
    pub max_backlog: Option<u64>,
    /// Fail the run when this process's peak RSS exceeded this many MiB.
    #[arg(long, value_name = "MIB")]
    pub max_rss_mb: Option<u64>,
    #[command(flatten)]
    pub replica_wait: crate::target::ReplicaWait,
    /// Fail the first attempt of about this share of the tasks (0 to 1),
    /// chosen by task id: their retries wait out the back-off in the
    /// delayed set, and the run shows whether the succeeding tasks'
    /// throughput holds meanwhile.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Every successful attempt takes this long (a sleep; a first attempt
    /// chosen by --fail-rate fails at once). With few slots
    /// (--concurrency) the slots, not the CPU, bound the throughput.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub handler_ms: u64,
    /// The workers share a rate limit of this many starts in any second
    /// (`RateLimit::starts`): every attempt waits for a broker permit.
    #[arg(long, value_name = "PER_SEC")]
    pub rate_limit_starts: Option<u32>,
    /// The workers share a rate limit of this many attempts running at once
    /// (`RateLimit::running`).
    #[arg(long, value_name = "ATTEMPTS")]
    pub rate_limit_running: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a bench run measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `memory`, or the redacted Redis URL.
    pub backend: String,
    /// Tasks dispatched and completed.
    pub tasks: u64,
    /// From the first dispatch until the last result was written and acked.
    pub seconds: f64,
    /// `tasks / seconds`.
    pub tasks_per_sec: f64,
    /// Dispatch to handler start, median, µs.
    pub p50_us: u64,
    /// ... 99th percentile, µs.
    pub p99_us: u64,
    /// ... 99.9th percentile, µs.
    pub p999_us: u64,
    /// ... slowest, µs.
    pub max_us: u64,
    /// Open loop: the rate asked for; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Open loop: how far the producers fell behind their schedule, µs.
    pub max_schedule_lag_us: Option<u64>,
    /// Agent types the tasks were dealt to.
    pub agent_types: usize,
    /// Producers.
    pub producers: usize,
    /// Workers.
    pub workers: usize,
    /// Concurrency per worker.
    pub concurrency: usize,
    /// Dispatch batch size.
    pub batch: usize,
    /// Payload size asked for.
    pub payload_bytes: usize,
    /// The dedupe window, s (0: none).
    pub dedupe_window_secs: u64,
    /// Replicas each dispatch waited for (`--wait-replicas`); `None`: no
    /// wait.
    pub wait_replicas: Option<u32>,
    /// The retention of the task and result streams: `acknowledged` (the
    /// default), `none`, or `max-len-even-unread <n>`.
    pub retention: String,
    /// Handler starts (more than `tasks` if some task ran twice).
    pub handled: u64,
    /// The workers' reports, added up.
    pub completed: u64,
    /// Retried attempts (none expected without `--fail-rate`).
    pub retried: u64,
    /// The share of tasks whose first attempt fails (`--fail-rate`).
    pub fail_rate: f64,
    /// How long each successful attempt took (`--handler-ms`).
    pub handler_ms: u64,
    /// The workers' shared rate limit (`--rate-limit-*`), if any.
    pub rate_limit: Option<String>,
    /// Attempts failed on purpose (`--fail-rate`).
    pub failed_attempts: u64,
    /// Tasks never chosen to fail, all succeeded on their first attempt.
    pub steady_tasks: u64,
    /// `steady_tasks` over the time from the first dispatch until the last
    /// of them succeeded: what failing tasks beside them leave of their
    /// throughput. Without `--fail-rate`, every task over `seconds` (the
    /// time until the run was seen done, within a millisecond of the last
    /// success).
    pub steady_per_sec: f64,
    /// Every attempt (`handled`: successes and failures) over `seconds`.
    pub attempts_per_sec: f64,
    /// Dead-lettered entries (none expected).
    pub dead_lettered: u64,
    /// Peak RSS of this process, MiB.
    pub peak_rss_mb: Option<f64>,
    /// Peak RSS of the spawned redis-server, MiB.
    pub redis_peak_rss_mb: Option<f64>,
}

/// Runs the bench `args` describe.
pub async fn run(args: BenchArgs) -> Result<BenchReport, Box<dyn Error>> {
    check(&args)?;
    let spawned = if args.spawn_redis {
        Some(SpawnedRedis::start()?)
    } else {
        None
    };
    let url = spawned.as_ref().map(|s| s.url().to_owned());
    let target = url.as_deref().unwrap_or(args.broker.as_str());
    let mut report = if target == "memory" {
        run_on(
            MemoryBroker::new(),
            Keyspace::default(),
            "memory".into(),
            &args,
        )
        .await?
    } else {
        let broker = crate::target::connect(target, args.cluster, &args.replica_wait).await?;
        let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        let keyspace =
            crate::target::layout(args.cluster).with_prefix(format!("crewq-bench-{millis}"))?;
        let backend = broker.redacted_url().to_owned();
        let report = run_on(broker.clone(), keyspace.clone(), backend, &args).await;
        // Emptied whether the run succeeded or not: a shared server is
        // left as it was.
        let emptied = delete_bench_keys(&broker, &keyspace, &args).await;
        let report = report?;
        emptied?;
        report
    };
    report.peak_rss_mb = rss::own_peak_rss_bytes().map(mib);
    report.redis_peak_rss_mb = spawned
        .as_ref()
        .and_then(SpawnedRedis::peak_rss_bytes)
        .map(mib);
    if let (Some(limit), Some(peak)) = (args.max_rss_mb, report.peak_rss_mb)
        && peak > limit as f64
    {
        return Err(format!("peak RSS {peak:.1} MiB is over --max-rss-mb {limit}").into());
    }
    Ok(report)
}

fn check(args: &BenchArgs) -> Result<(), String> {
    if args.tasks == 0
        || args.producers == 0
        || args.workers == 0
        || args.batch == 0
        || args.agent_types == 0
    {
        return Err(
            "--tasks, --producers, --workers, --batch and --agent-types must be at least 1".into(),
        );
    }
    if args.replica_wait.wait_replicas.is_some() && (args.broker == "memory" && !args.spawn_redis) {
        return Err("--wait-replicas needs a Redis --broker".into());
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("--rate must be a positive number, got {rate}"));
    }
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(format!(
            "--fail-rate must be within 0 and 1, not {}",
            args.fail_rate
        ));
    }
    if let Some(limit) = rate_limit(args) {
        limit
            .validate()
            .map_err(|err| format!("--rate-limit-starts/--rate-limit-running: {err}"))?;
    }
    Ok(())
}

/// The shared rate limit `--rate-limit-starts` and `--rate-limit-running`
/// ask for, if either is given.
fn rate_limit(args: &BenchArgs) -> Option<RateLimit> {
    if args.rate_limit_starts.is_none() && args.rate_limit_running.is_none() {
        return None;
    }
    let mut limit = RateLimit::new();
    if let Some(n) = args.rate_limit_starts {
        limit = limit.starts(n, Duration::from_secs(1));
    }
    if let Some(m) = args.rate_limit_running {
        limit = limit.running(m);
    }
    Some(limit)
}

/// How many of the `args.tasks` tasks producer `index` dispatches.
fn share_of(args: &BenchArgs, index: usize) -> u64 {
    args.tasks / args.producers as u64
        + u64::from((index as u64) < args.tasks % args.producers as u64)
}

/// Deletes every key the bench made under its fresh prefix: each agent
/// type's task, result and dead-letter streams, its delayed set (retries
/// of `--fail-rate`), its progress stream and its rate-limit keys, and
/// the dedupe marker of each task (set with a dedupe window; deleting a
/// missing key is a no-op).
async fn delete_bench_keys(
    broker: &crewq_redis::RedisBroker,
    keyspace: &Keyspace,
    args: &BenchArgs,
) -> Result<(), Box<dyn Error>> {
    let names = load::agent_names(args.agent_types);
    let agents = names
        .iter()
        .map(|name| AgentType::new(name.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys: Vec<String> = Vec::new();
    for agent in &agents {
        let agent_keys = keyspace.keys(agent);
        let rate = keyspace.rate(agent);
        keys.extend([
            agent_keys.tasks,
            agent_keys.results,
            agent_keys.dlq,
            agent_keys.delayed,
            keyspace.progress(agent),
            rate.starts,
            rate.running,
            rate.paused,
            rate.limit,
        ]);
    }
    for producer in 0..args.producers {
        for n in 0..share_of(args, producer) {
            let agent = AgentType::new(load::agent_of(&names, n))?;
            keys.push(keyspace.dispatched_marker(&agent, &load::task_id(producer, n)));
        }
    }
    keys.sort();
    keys.dedup();
    broker.delete_keys(&keys).await?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run_on<B: Broker + Clone + 'static>(
    broker: B,
    keyspace: Keyspace,
    backend: String,
    args: &BenchArgs,
) -> Result<BenchReport, Box<dyn Error>> {
    let names = Arc::new(load::agent_names(args.agent_types));
    let agents = names
        .iter()
        .map(|name| AgentType::new(name.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<_> = agents.iter().map(|agent| keyspace.keys(agent)).collect();
    let probe = Arc::new(Probe::new()?);
    let (retention, result_retention) = match (args.no_retention, args.unsafe_max_len) {
        (true, _) => (Retention::None, Retention::None),
        (false, Some(len)) => (
            Retention::unsafe_max_len(len),
            Retention::unsafe_max_len(len),
        ),
        (false, None) => (Retention::DEFAULT, Retention::RESULTS),
    };
    let failing = Arc::new(load::Failing::new(args.fail_rate));
    let mut options = WorkerOptions::default().concurrency(args.concurrency);
    options.keyspace = keyspace.clone();
    options.result_retention = result_retention;
    options.rate_limit = rate_limit(args);
    let work = Duration::from_millis(args.handler_ms);
    let workers: Vec<_> = agents
        .iter()
        .flat_map(|agent| (0..args.workers).map(move |i| (agent, i)))
        .map(|(agent, i)| {
            Worker::new(
                broker.clone(),
                agent.clone(),
                format!("bench-{i}"),
                load::handler(Arc::clone(&probe), Arc::clone(&failing), work),
            )
            .options(options.clone())
            .spawn()
        })
        .collect();
    let dedupe =
        (args.dedupe_window_secs > 0).then(|| Duration::from_secs(args.dedupe_window_secs));
    let producer = Producer::new(broker.clone())
        .with_keyspace(keyspace.clone())
        .with_retention(retention)
        .with_dedupe_window(dedupe);
    let results_before = results_added(&broker, &keys).await?;
    let started = Instant::now();
    let started_ns = probe.now_ns();
    let producers: Vec<_> = (0..args.producers)
        .map(|i| {
            let share = share_of(args, i);
            let plan = ProducerPlan {
                index: i,
                share,
                batch: args.batch,
                rate: args.rate.map(|rate| rate / args.producers as f64),
                backlog: args.max_backlog,
                pad: load::padding(args.payload_bytes),
                agents: Arc::clone(&names),
            };
            tokio::spawn(load::produce(producer.clone(), Arc::clone(&probe), plan))
        })
        .collect();
    let mut max_lag = Duration::ZERO;
    for producer in producers {
        max_lag = max_lag.max(producer.await?.map_err(|e| e as Box<dyn Error>)?);
    }
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let goal = results_before + args.tasks;
    loop {
        if probe.started() >= args.tasks
            && nothing_pending(&broker, &keys).await?
            && results_added(&broker, &keys).await? >= goal
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not done after {}s: {} of {} handlers started",
                args.timeout_secs,
                probe.started(),
                args.tasks
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut total = WorkerReport::default();
    for worker in workers {
        let report = worker.shutdown(Duration::from_secs(10)).await?;
        total.completed += report.completed;
        total.retried += report.retried;
        total.dead_lettered += report.dead_lettered;
    }
    if total.completed != args.tasks {
        return Err(format!(
            "{} of {} tasks completed ({} retried, {} dead-lettered)",
            total.completed, args.tasks, total.retried, total.dead_lettered
        )
        .into());
    }
    let latency = probe.percentiles();
    let (steady_tasks, steady_secs) = if failing.any() {
        let (tasks, last_ns) = probe.steady();
        (tasks, last_ns.saturating_sub(started_ns) as f64 / 1e9)
    } else {
        // Every task steady (the handler noted none): the run's figures.
        (total.completed, seconds)
    };
    Ok(BenchReport {
        backend,
        tasks: args.tasks,
        seconds,
        tasks_per_sec: args.tasks as f64 / seconds,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        p999_us: latency.p999_us,
        max_us: latency.max_us,
        rate: args.rate,
        max_schedule_lag_us: args
            .rate
            .map(|_| u64::try_from(max_lag.as_micros()).unwrap_or(u64::MAX)),
        agent_types: args.agent_types,
        producers: args.producers,
        workers: args.workers,
        concurrency: args.concurrency,
        batch: args.batch,
        payload_bytes: args.payload_bytes,
        dedupe_window_secs: args.dedupe_window_secs,
        wait_replicas: args.replica_wait.wait_replicas,
        retention: retention_name(args),
        handled: probe.started(),
        completed: total.completed,
        retried: total.retried,
        fail_rate: args.fail_rate,
        handler_ms: args.handler_ms,
        rate_limit: rate_limit(args).map(|limit| limit.to_string()),
        failed_attempts: probe.failed(),
        steady_tasks,
        steady_per_sec: if steady_secs > 0.0 {
            steady_tasks as f64 / steady_secs
        } else {
            0.0
        },
        attempts_per_sec: probe.started() as f64 / seconds,
        dead_lettered: total.dead_lettered,
        peak_rss_mb: None,
        redis_peak_rss_mb: None,
    })
}

/// How the report names the retention `args` chose.
fn retention_name(args: &BenchArgs) -> String {
    match (args.no_retention, args.unsafe_max_len) {
        (true, _) => "none".into(),
        (false, Some(len)) => format!("max-len-even-unread {len}"),
        (false, None) => "acknowledged".into(),
    }
}

/// Results ever added over every agent type (the results stream is shared
/// in the seed layout: counted once).
async fn results_added<B: Broker>(
    broker: &B,
    keys: &[crewq_core::AgentKeys],
) -> Result<u64, crewq_core::Error> {
    let mut streams: Vec<&str> = keys.iter().map(|k| k.results.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut total = 0;
    for stream in streams {
        total += entries_added(broker, stream).await?;
    }
    Ok(total)
}

/// Whether no agent type's group has an entry pending.
async fn nothing_pending<B: Broker>(
    broker: &B,
    keys: &[crewq_core::AgentKeys],
) -> Result<bool, crewq_core::Error> {
    for keys in keys {
        if broker
            .pending_summary(&keys.tasks, &keys.group)
            .await?
            .count
            > 0
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How many entries were ever added to `stream` (0 when it does not exist).
async fn entries_added<B: Broker>(broker: &B, stream: &str) -> Result<u64, crewq_core::Error> {
    match broker.info_stream(stream).await {
        Ok(info) => Ok(info.entries_added),
        Err(crewq_core::Error::NoSuchKey(_)) => Ok(0),
        Err(err) => Err(err),
    }
}
