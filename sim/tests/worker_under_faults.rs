//! The real `Worker` over a `FaultyBroker<MemoryBroker>` that fails 30% of
//! all calls (20% before they apply, 10% after): once faults are switched off
//! and the crew has drained, every dispatched task has exactly one outcome
//! and nothing is pending. On paused time, so a run is fast and repeatable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::worker::{Backoff, HandlerError, Worker, WorkerOptions, WorkerReport};
use crewq_core::{
    ALL_IDS, AgentType, Broker, DeadLetter, Keyspace, NewEntry, Task, TaskStatus, TokioClock,
    result_from_fields,
};
use crewq_memory::MemoryBroker;
use crewq_sim::{FaultConfig, FaultLog, FaultyBroker, OpSet, memory_broker_on_virtual_time};
use serde_json::{Value, json};

const TASKS: u32 = 60;
const WORKERS: usize = 2;
const MAX_RETRIES: u32 = 3;

/// What a task's handler does: task `n` with `n % 7 == 0` always fails,
/// `n % 5 == 1` fails its first call only, the others succeed.
fn always_fails(n: u64) -> bool {
    n.is_multiple_of(7)
}

/// Everything a run leaves to check.
#[derive(Debug, PartialEq)]
struct Run {
    faults: FaultLog,
    injected: u64,
    /// Per task id: result statuses, then dead letters, in stream order.
    outcomes: BTreeMap<String, (Vec<TaskStatus>, usize)>,
    pending: u64,
    reports: Vec<WorkerReport>,
    /// Virtual time from faults off until everything settled.
    drained_in: Duration,
}

fn options(seed: u64) -> WorkerOptions {
    let mut options = WorkerOptions::default()
        .lease(Duration::from_secs(2))
        .concurrency(4);
    options.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(200),
    };
    options.seed = Some(seed);
    options.clock = Arc::new(TokioClock::default());
    options
}

async fn dispatch(inner: &MemoryBroker, stream: &str, n: u32) {
    let task = Task::new("research", "analyze", json!({ "n": n }))
        .task_id(format!("task-{n:02}"))
        .max_retries(MAX_RETRIES)
        .build()
        .expect("task");
    let fields = task.to_fields().expect("encode");
    inner
        .xadd(NewEntry::new(stream, fields))
        .await
        .expect("xadd on the inner broker");
}

async fn outcomes(inner: &MemoryBroker, keyspace: &Keyspace, agent: &AgentType) -> Run {
    let mut outcomes: BTreeMap<String, (Vec<TaskStatus>, usize)> = BTreeMap::new();
    for entry in inner
        .xrange(&keyspace.results(agent), ALL_IDS, None)
        .await
        .expect("results")
    {
        let result = result_from_fields(&entry.fields).expect("a result");
        outcomes
            .entry(result.task_id)
            .or_default()
            .0
            .push(result.status);
    }
    for entry in inner
        .xrange(&keyspace.dlq(agent), ALL_IDS, None)
        .await
        .expect("dead letters")
    {
        let letter = DeadLetter::from_fields(&entry.fields).expect("a dead letter");
        let task = letter.decode_task::<Value>().expect("its task");
        outcomes.entry(task.task_id).or_default().1 += 1;
    }
    let pending = inner
        .pending_summary(&keyspace.tasks(agent), &keyspace.group(agent))
        .await
        .map_or(0, |summary| summary.count);
    Run {
        faults: Vec::new(),
        injected: 0,
        outcomes,
        pending,
        reports: Vec::new(),
        drained_in: Duration::ZERO,
    }
}

async fn run_crew(seed: u64, latency: Option<(Duration, Duration)>) -> Run {
    let inner = memory_broker_on_virtual_time();
    let broker = FaultyBroker::new(
        inner.clone(),
        FaultConfig {
            seed,
            error_before: 0.2,
            error_after: 0.1,
            latency,
            ops: OpSet::all(),
            ..FaultConfig::default()
        },
    );
    let agent = AgentType::new("research").expect("agent");
    let keyspace = Keyspace::default();
    let stream = keyspace.tasks(&agent);
    let calls = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let calls = Arc::clone(&calls);
            let handler = move |task: Task<Value>| {
                let calls = Arc::clone(&calls);
                async move {
                    let n = task.payload["n"].as_u64().unwrap_or_default();
                    let call = {
                        let mut calls = calls.lock().expect("calls");
                        let call = calls.entry(n).or_default();
                        *call += 1;
                        *call
                    };
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if always_fails(n) || (n % 5 == 1 && call == 1) {
                        return Err::<Value, HandlerError>(format!("task {n} failed").into());
                    }
                    Ok(json!({ "n": n }))
                }
            };
            Worker::new(broker.clone(), agent.clone(), format!("w{w}"), handler)
                .options(options(seed.wrapping_add(w as u64)))
                .spawn()
        })
        .collect();

    // Half the tasks wait in the stream, the rest arrive while the crew runs.
    for n in 0..TASKS / 2 {
        dispatch(&inner, &stream, n).await;
    }
    for n in TASKS / 2..TASKS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        dispatch(&inner, &stream, n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Drain without faults: entries lost to "after" faults are pending under
    // a worker and come back once their lease runs out.
    broker.set_enabled(false);
    let drain = tokio::time::Instant::now();
    for _ in 0..600 {
        let run = outcomes(&inner, &keyspace, &agent).await;
        if run.outcomes.len() == TASKS as usize && run.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_in = drain.elapsed();
    let mut reports = Vec::new();
    for worker in workers {
        let report = worker.shutdown(Duration::from_secs(5)).await;
        reports.push(report.expect("a worker survives transient broker errors"));
    }
    Run {
        faults: broker.faults(),
        injected: broker.injected(),
        reports,
        drained_in,
        ..outcomes(&inner, &keyspace, &agent).await
    }
}

fn check(seed: u64, run: &Run) {
    let context = format!("seed {seed}: {run:#?}");
    assert!(run.injected >= 30, "faults were injected; {context}");
    assert_eq!(run.pending, 0, "nothing pending; {context}");
    assert_eq!(
        run.outcomes.len(),
        TASKS as usize,
        "every task has an outcome; {context}"
    );
    for (task_id, (results, dead_letters)) in &run.outcomes {
        let n: u64 = task_id["task-".len()..].parse().expect("task number");
        assert_eq!(results.len(), 1, "{task_id}: one result; {context}");
        match (results[0], dead_letters) {
            // Dead-lettered (after max retries, or deliveries lost to
            // faults): its failure is published too.
            (TaskStatus::Failure, 1) => {}
            (TaskStatus::Success, 0) => assert!(!always_fails(n), "{task_id}; {context}"),
            other => panic!("{task_id}: {other:?}; {context}"),
        }
        if always_fails(n) {
            assert_eq!(*dead_letters, 1, "{task_id}; {context}");
        }
    }
    // The workers' own counts add up to what the streams hold: a settle
    // whose reply was lost is not miscounted as a zombie's. Only an attempt
    // whose every settle try failed (`unsettled`) may have applied unseen.
    let successes = run
        .outcomes
        .values()
        .filter(|(results, _)| results[0] == TaskStatus::Success)
        .count() as u64;
    let dead: u64 = run.outcomes.values().map(|(_, d)| *d as u64).sum();
    let completed: u64 = run.reports.iter().map(|r| r.completed).sum();
    let dead_lettered: u64 = run.reports.iter().map(|r| r.dead_lettered).sum();
    let unknown: u64 = run.reports.iter().map(|r| r.unsettled).sum();
    assert!(
        completed <= successes && dead_lettered <= dead,
        "no outcome counted that is not in the streams; {context}"
    );
    assert!(
        successes + dead <= completed + dead_lettered + unknown,
        "reports add up; {context}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_crew_completes_every_task_under_broker_faults() {
    for seed in 1..=8 {
        let run = run_crew(seed, None).await;
        check(seed, &run);
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_crew_completes_every_task_under_faults_and_latency() {
    let latency = Some((Duration::ZERO, Duration::from_millis(50)));
    for seed in 101..=104 {
        let run = run_crew(seed, latency).await;
        check(seed, &run);
    }
}

#[tokio::test(start_paused = true)]
async fn a_faulty_crew_run_is_repeatable_from_its_seed() {
    let latency = Some((Duration::ZERO, Duration::from_millis(50)));
    let first = run_crew(11, latency).await;
    let second = run_crew(11, latency).await;
    assert!(!first.faults.is_empty());
    assert_eq!(first, second);
}
