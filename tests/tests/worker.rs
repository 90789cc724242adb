//! The worker's guarantees (DESIGN.md, "What the worker guarantees"), each a
//! named test on the memory backend (paused time) and on a private Redis.

mod worker_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::worker::{HandlerError, Worker};
use crewq_core::{
    Broker, Fields, NewEntry, PendingQuery, ReadGroup, Task, TaskStatus, Validators, WireCodec,
    task_to_fields,
};
use crewq_tests::backends::Backend;
use serde_json::{Value, json};
use worker_common::{Calls, Env, task};

fn ok(task: &Task<Value>) -> Result<Value, HandlerError> {
    Ok(json!({ "done": task.task_id }))
}

crewq_tests::on_both_backends!(
    Env:
    completed_tasks_are_acked_with_their_result,
    failed_attempts_are_retried_with_a_durable_attempt_count,
    tasks_failing_every_attempt_are_dead_lettered_after_max_retries,
    poison_entries_are_dead_lettered_at_once,
    a_handler_panic_is_a_failed_attempt,
    a_handler_past_its_timeout_fails_its_attempt,
    a_restarted_worker_drains_its_own_pending_entries_first,
    entries_of_a_crashed_worker_are_taken_over_after_the_lease,
    a_long_task_keeps_its_lease,
    a_zombie_records_no_second_outcome,
    shutdown_lets_running_tasks_finish_or_hands_them_back,
    a_worker_dropped_mid_task_hands_its_tasks_to_another,
    a_task_from_the_seeds_python_producer_is_run,
    entries_deleted_while_pending_are_dead_lettered_on_reclaim,
    attempts_settled_together_each_keep_the_ownership_guard,
);

async fn completed_tasks_are_acked_with_their_result(env: Env) {
    for n in 0..3 {
        env.dispatch(&task(n, 3)).await;
    }
    let worker = env.spawn("w1", |t: Task<Value>| async move { ok(&t) });
    env.settled_either(3).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 3, "{report:?}");
    let mut results = env.results().await;
    // Tasks run concurrently: results arrive in any order.
    results.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let ids: Vec<_> = results.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(ids, ["task-0", "task-1", "task-2"]);
    assert!(results.iter().all(|r| r.status == TaskStatus::Success));
    assert_eq!(results[1].output, Some(json!({ "done": "task-1" })));
    assert_eq!(env.pending().await, 0);
}

async fn failed_attempts_are_retried_with_a_durable_attempt_count(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move {
                if attempt <= 2 {
                    Err::<Value, HandlerError>(format!("flaky attempt {attempt}").into())
                } else {
                    ok(&t)
                }
            }
        }
    };
    let worker = env.spawn("w1", handler);
    env.settled_either(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.retried, report.completed), (2, 1), "{report:?}");
    assert_eq!(calls.total(), 3);
    // Each retry is a new entry carrying the failed attempts so far.
    let counts = env.attempt_counts().await;
    assert_eq!(counts, [None, Some("1".into()), Some("2".into())]);
    assert!(env.dead_letters().await.is_empty());
}

async fn tasks_failing_every_attempt_are_dead_lettered_after_max_retries(env: Env) {
    env.dispatch(&task(1, 2)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move { Err::<Value, HandlerError>(format!("boom {attempt}").into()) }
        }
    };
    let worker = env.spawn("w1", handler);
    env.settled_either(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 3, "1 + max_retries attempts");
    assert_eq!((report.retried, report.dead_lettered), (2, 1), "{report:?}");
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.reason.as_ref().map(ToString::to_string).as_deref(),
        Some("max_retries")
    );
    assert_eq!((letter.retries, letter.error.as_str()), (3, "boom 3"));
    let origin = letter.origin.as_ref().expect("origin");
    assert_eq!(
        (origin.stream.as_str(), origin.consumer.as_str()),
        (env.keys().tasks.as_str(), "w1")
    );
    assert_eq!(
        letter.decode_task::<Value>().expect("task").task_id,
        "task-1"
    );
    // The supervisor hears of it too.
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, TaskStatus::Failure);
}

async fn poison_entries_are_dead_lettered_at_once(env: Env) {
    env.xadd(Fields::new().with("other", "no data field")).await;
    env.xadd(Fields::new().with("data", "{not json")).await;
    env.xadd(Fields::new().with(
        "data",
        r#"{"task_id":"p","agent_type":"research","action":"a","priority":11}"#,
    ))
    .await;
    env.dispatch(&task(4, 3)).await; // rejected by the validator
    let mut big = task(5, 3);
    big.payload = json!({ "blob": "x".repeat(4096) });
    env.dispatch(&big).await; // over the worker's size limit
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            calls.bump(&t.task_id);
            async move { ok(&t) }
        }
    };
    let mut options = env.options();
    options.validators = Validators::new().with(env.agent.clone(), |t: &Task<Value>| {
        if t.task_id == "task-4" {
            Err("task-4 is not allowed".to_owned())
        } else {
            Ok(())
        }
    });
    options.codec = WireCodec::with_max_bytes(2048);
    let worker = Worker::new(Arc::clone(&env.broker), env.agent.clone(), "w1", handler)
        .options(options)
        .spawn();
    env.settled_either(5).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 0, "no poison entry reaches the handler");
    assert_eq!(report.dead_lettered, 5, "{report:?}");
    assert_eq!(
        env.reasons().await,
        [
            "poison:invalid_json",
            "poison:invalid_task",
            "poison:missing_data",
            "poison:oversized",
            "poison:rejected"
        ]
    );
    assert_eq!(env.pending().await, 0);
}

async fn a_handler_panic_is_a_failed_attempt(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move {
                assert!(!(t.task_id == "task-1" && attempt == 1), "handler bug");
                ok(&t)
            }
        }
    };
    let worker = env.spawn("w1", handler);
    env.settled_either(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("the worker survived");
    assert_eq!((report.retried, report.completed), (1, 2), "{report:?}");
}

async fn a_handler_past_its_timeout_fails_its_attempt(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move {
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                ok(&t)
            }
        }
    };
    let mut options = env.options();
    options.task_timeout = Some(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(&env.broker), env.agent.clone(), "w1", handler)
        .options(options)
        .spawn();
    env.settled_either(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.retried, report.completed), (1, 1), "{report:?}");
}

async fn a_restarted_worker_drains_its_own_pending_entries_first(env: Env) {
    let keys = env.keys();
    env.broker
        .group_create(
            &keys.tasks,
            &keys.group,
            crewq_core::GroupStart::BEGINNING,
            true,
        )
        .await
        .expect("group");
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    // A previous run of w1 read both, then died.
    let read = ReadGroup::new(&keys.tasks, &keys.group, "w1");
    assert_eq!(env.broker.read_group(&read).await.expect("read").len(), 2);
    env.dispatch(&task(3, 3)).await;
    let mut options = env.options();
    options.concurrency = 1; // one at a time, so the order shows
    let worker = Worker::new(
        Arc::clone(&env.broker),
        env.agent.clone(),
        "w1",
        |t: Task<Value>| async move { ok(&t) },
    )
    .options(options)
    .spawn();
    env.settled_either(3).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let ids: Vec<_> = env.results().await.into_iter().map(|r| r.task_id).collect();
    assert_eq!(ids, ["task-1", "task-2", "task-3"]);
}

async fn entries_of_a_crashed_worker_are_taken_over_after_the_lease(env: Env) {
    let keys = env.keys();
    env.broker
        .group_create(
            &keys.tasks,
            &keys.group,
            crewq_core::GroupStart::BEGINNING,
            true,
        )
        .await
        .expect("group");
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let read = ReadGroup::new(&keys.tasks, &keys.group, "crashed");
    assert_eq!(env.broker.read_group(&read).await.expect("read").len(), 2);
    let worker = env.spawn("w2", |t: Task<Value>| async move { ok(&t) });
    env.settled_either(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.reclaimed, report.completed), (2, 2), "{report:?}");
}

async fn a_long_task_keeps_its_lease(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let slow = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            calls.bump(&t.task_id);
            async move {
                // Five leases long.
                tokio::time::sleep(Duration::from_millis(3000)).await;
                ok(&t)
            }
        }
    };
    let first = env.spawn("w1", slow.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A peer looking for stale entries all along finds none.
    let peer = env.spawn("w2", slow);
    env.settled_either(1).await;
    let first = first
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let peer = peer.shutdown(Duration::from_secs(5)).await.expect("report");
    assert_eq!(calls.total(), 1, "the task ran once");
    assert_eq!((first.completed, first.zombies, peer.reclaimed), (1, 0, 0));
    assert_eq!(env.results().await.len(), 1);
}

async fn a_zombie_records_no_second_outcome(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let started = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        move |t: Task<Value>| {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                ok(&t)
            }
        }
    };
    let worker = env.spawn("w1", handler);
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While w1 stalls, a rescuer takes the entry over and finishes it.
    let keys = env.keys();
    let rows = env
        .broker
        .pending(&keys.tasks, &keys.group, &PendingQuery::new(10))
        .await
        .expect("pending");
    let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
    let claimed = env
        .broker
        .claim(&keys.tasks, &keys.group, "rescuer", Duration::ZERO, &ids)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    env.broker
        .ack(&keys.tasks, &keys.group, &ids)
        .await
        .expect("ack");
    release.notify_waiters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.zombies, report.completed), (1, 0), "{report:?}");
    assert!(env.results().await.is_empty(), "the zombie wrote no result");
}

async fn shutdown_lets_running_tasks_finish_or_hands_them_back(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let started = Arc::new(AtomicU32::new(0));
    let handler = {
        let started = Arc::clone(&started);
        move |t: Task<Value>| {
            let started = Arc::clone(&started);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let pause = if t.task_id == "task-1" { 100 } else { 60_000 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                ok(&t)
            }
        }
    };
    let worker = env.spawn("w1", handler);
    while started.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("report");
    assert_eq!((report.completed, report.handed_back), (1, 1), "{report:?}");
    // The unfinished one is still pending, for another worker to take over.
    assert_eq!(env.pending().await, 1);
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].task_id, "task-1");
}

/// Redis only: the server drops every client connection while the worker
/// runs (as on a restart or a network blip); the worker waits it out and
/// finishes the tasks dispatched after, losing none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redis_connection_does_not_stop_the_worker() {
    let env = Env::from(Backend::redis().await);
    let server = env.server.as_ref().expect("a private Redis");
    env.dispatch(&task(1, 3)).await;
    let worker = env.spawn("w1", |t: Task<Value>| async move { ok(&t) });
    env.settled_either(1).await;
    let killed: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut server.raw_connection())
        .expect("CLIENT KILL");
    assert!(
        killed >= 1,
        "the worker's connections were dropped ({killed})"
    );
    for n in 2..=4 {
        // The test's own commands may meet the dropped connection first.
        let fields = task_to_fields(&task(n, 3)).expect("encode");
        for _ in 0..20 {
            match env
                .broker
                .xadd(NewEntry::new(env.keys().tasks, fields.clone()))
                .await
            {
                Ok(_) => break,
                Err(err) if err.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("xadd: {err}"),
            }
        }
    }
    env.settled_either(4).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("the worker kept running");
    assert_eq!(report.completed, 4, "{report:?}");
}

async fn a_worker_dropped_mid_task_hands_its_tasks_to_another(env: Env) {
    for n in 0..4 {
        env.dispatch(&task(n, 3)).await;
    }
    let started = Arc::new(AtomicU32::new(0));
    let stuck = {
        let started = Arc::clone(&started);
        move |_t: Task<Value>| {
            let started = Arc::clone(&started);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                // Never finishes: it is running when its worker dies.
                std::future::pending::<()>().await;
                Ok::<Value, HandlerError>(Value::Null)
            }
        }
    };
    let doomed = env.spawn("w1", stuck);
    while started.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.abort();
    let rescuer = env.spawn("w2", |t: Task<Value>| async move { ok(&t) });
    env.settled_either(4).await;
    let report = rescuer
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.reclaimed, report.completed), (4, 4), "{report:?}");
    assert!(env.dead_letters().await.is_empty());
}

async fn a_task_from_the_seeds_python_producer_is_run(env: Env) {
    // The exact JSON the seed's pydantic AgentTask emitted
    // (scripts/gen_seed_fixtures.py), as its producer writes it: field `data`.
    let json = include_str!("../../core/tests/fixtures/seed/task_full.json").trim();
    env.xadd(Fields::new().with("data", json.to_owned())).await;
    let seen = Arc::new(Mutex::new(None));
    let handler = {
        let seen = Arc::clone(&seen);
        move |t: Task<Value>| {
            *seen.lock().expect("seen") =
                Some((t.task_id.clone(), t.payload.clone(), t.trace_id.clone()));
            async move { ok(&t) }
        }
    };
    let worker = env.spawn("w1", handler);
    env.settled_either(1).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let (task_id, payload, trace_id) = seen.lock().expect("seen").clone().expect("the handler ran");
    assert_eq!(task_id, "research-1a2b3c4d");
    assert_eq!(payload["depth"], "security");
    assert_eq!(trace_id.as_deref(), Some("0123456789ab"));
    let results = env.results().await;
    assert_eq!(results[0].task_id, "research-1a2b3c4d");
}

/// The worker reports completed, failed, retried, dead-lettered and reclaimed
/// tasks through the `metrics` crate, labelled with the agent type. (Memory
/// only: the recorder is thread-local, and the paused runtime keeps every
/// worker task on this thread.)
#[tokio::test(start_paused = true)]
async fn the_worker_counts_outcomes_through_metrics() {
    use crewq_core::metrics::{COMPLETED, DEAD_LETTERED, FAILED, PROMOTED, RECLAIMED, RETRIED};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let env = Env::from(Backend::memory());
    let keys = env.keys();
    env.broker
        .group_create(
            &keys.tasks,
            &keys.group,
            crewq_core::GroupStart::BEGINNING,
            true,
        )
        .await
        .expect("group");
    env.dispatch(&task(1, 3)).await; // fails once, then succeeds
    // The crashed consumer's delivery ended without an outcome: not a failed
    // run. Its first run fails, which exhausts max_retries 0: dead-lettered.
    env.dispatch(&task(2, 0)).await;
    // A consumer that died holding task 3, taken over after the lease.
    env.dispatch(&task(3, 3)).await;
    let read = ReadGroup::new(&keys.tasks, &keys.group, "crashed").count(0);
    let held = env.broker.read_group(&read).await.expect("read");
    assert_eq!(held.len(), 3);
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move {
                if attempt == 1 && t.task_id != "task-3" {
                    Err::<Value, HandlerError>("first attempt fails".into())
                } else {
                    ok(&t)
                }
            }
        }
    };
    let worker = env.spawn("w1", handler);
    env.settled_either(3).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");

    let mut counts = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labelled = key
            .key()
            .labels()
            .any(|l| l.key() == "agent_type" && l.value() == "research");
        if let (true, DebugValue::Counter(n)) = (labelled, value) {
            counts.insert(key.key().name().to_owned(), n);
        }
    }
    let expected: BTreeMap<String, u64> = [
        (COMPLETED, 2),
        (FAILED, 2),
        (RETRIED, 1),
        // The retry, moved from the delayed set once due.
        (PROMOTED, 1),
        (DEAD_LETTERED, 1),
        (RECLAIMED, 3),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), n))
    .collect();
    assert_eq!(counts, expected);
}

/// The worker records one handler duration (labelled with the agent type and
/// the outcome) and one queue wait (dispatch to start, labelled with the
/// agent type) per run, read on the memory broker's paused clock, so every
/// value is exact. (Memory only, as above: the recorder is thread-local.)
#[tokio::test(start_paused = true)]
async fn the_worker_records_duration_and_queue_wait_histograms() {
    use crewq_core::metrics::{HANDLER_DURATION, QUEUE_WAIT};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let backend = Backend::memory();
    let clock = backend.clock.expect("the memory backend has a clock");
    let env = Env::from(backend);
    env.group().await;
    env.dispatch(&task(1, 0)).await; // runs 0.5 s, fails: dead-lettered
    env.dispatch(&task(2, 3)).await; // runs 2 s, succeeds
    env.dispatch(&task(3, 3)).await; // fails at once, then succeeds on its retry
    // The tasks wait 3 s for a worker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            let attempt = calls.bump(&t.task_id);
            async move {
                match (t.task_id.as_str(), attempt) {
                    ("task-1", _) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Err::<Value, HandlerError>("fails".into())
                    }
                    ("task-2", _) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        ok(&t)
                    }
                    (_, 1) => Err("first attempt fails".into()),
                    _ => ok(&t),
                }
            }
        }
    };
    let mut options = env.options();
    // The worker must read the broker's clock: queue waits are measured
    // against the entries' ids.
    options.clock = Arc::new(clock);
    let worker = env.spawn_with("w1", options, handler);
    while env.results().await.len() < 2 || env.dead_letters().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");

    // A histogram's name and labels, and its samples, sorted.
    type Series = (String, Vec<(String, String)>);
    let mut samples: BTreeMap<Series, Vec<f64>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Histogram(values) = value {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let mut values: Vec<f64> = values.into_iter().map(|v| v.into_inner()).collect();
            values.sort_by(f64::total_cmp);
            samples.insert((key.key().name().to_owned(), labels), values);
        }
    }
    let agent = ("agent_type".to_owned(), "research".to_owned());
    let outcome = |o: &str| ("outcome".to_owned(), o.to_owned());
    let expected: BTreeMap<_, _> = [
        // task-3's first run and task-1's.
        (
            (HANDLER_DURATION, vec![agent.clone(), outcome("failure")]),
            vec![0.0, 0.5],
        ),
        // task-3's retry and task-2.
        (
            (HANDLER_DURATION, vec![agent.clone(), outcome("success")]),
            vec![0.0, 2.0],
        ),
        // Three first runs after 3 s; task-3's retry starts as soon as it is
        // re-appended.
        ((QUEUE_WAIT, vec![agent.clone()]), vec![0.0, 3.0, 3.0, 3.0]),
    ]
    .into_iter()
    .map(|((name, labels), values)| ((name.to_owned(), labels), values))
    .collect();
    assert_eq!(samples, expected);
}

async fn entries_deleted_while_pending_are_dead_lettered_on_reclaim(env: Env) {
    let keys = env.keys();
    env.broker
        .group_create(
            &keys.tasks,
            &keys.group,
            crewq_core::GroupStart::BEGINNING,
            true,
        )
        .await
        .expect("group");
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let read = ReadGroup::new(&keys.tasks, &keys.group, "crashed");
    let held = env.broker.read_group(&read).await.expect("read");
    // An operator trimmed task-1 away while it was pending.
    env.broker
        .xdel(&keys.tasks, &[held[0].id])
        .await
        .expect("xdel");
    let worker = env.spawn("w2", |t: Task<Value>| async move { ok(&t) });
    env.settled_either(1).await;
    while env.dead_letters().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(
        (report.reclaimed, report.completed, report.vanished),
        (1, 1, 1),
        "{report:?}"
    );
    let ids: Vec<_> = env.results().await.into_iter().map(|r| r.task_id).collect();
    assert_eq!(ids, ["task-2"]);
    assert_eq!(
        env.pending().await,
        0,
        "the deleted entry left the pending list"
    );
    // Never silently: what is known of it is dead-lettered.
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0]
            .reason
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("deleted_while_pending")
    );
    let origin = letters[0].origin.as_ref().expect("origin");
    assert_eq!(
        (origin.entry_id, origin.consumer.as_str()),
        (held[0].id, "w2")
    );
}

/// Attempts that finish together are settled in shared calls: each still
/// gets only its own outcome, and those another consumer took over while
/// they ran record nothing (zombies), whatever batch they were in.
async fn attempts_settled_together_each_keep_the_ownership_guard(env: Env) {
    const TASKS: u32 = 60;
    for n in 0..TASKS {
        env.dispatch(&task(n, 3)).await;
    }
    let started = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        move |t: Task<Value>| {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            async move {
                let notified = release.notified();
                started.fetch_add(1, Ordering::SeqCst);
                notified.await;
                ok(&t)
            }
        }
    };
    let mut options = env.options().concurrency(TASKS as usize);
    options.settle_batch = 8;
    let worker = Worker::new(Arc::clone(&env.broker), env.agent.clone(), "w1", handler)
        .options(options)
        .spawn();
    while started.load(Ordering::SeqCst) < TASKS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A rescuer takes every third entry over while they all run.
    let keys = env.keys();
    let rows = env
        .broker
        .pending(&keys.tasks, &keys.group, &PendingQuery::new(100))
        .await
        .expect("pending");
    let taken: Vec<_> = rows.iter().map(|r| r.id).step_by(3).collect();
    env.broker
        .claim(&keys.tasks, &keys.group, "rescuer", Duration::ZERO, &taken)
        .await
        .expect("claim");
    release.notify_waiters();
    while env.pending().await > taken.len() as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let zombies = taken.len() as u64;
    assert_eq!(
        (report.completed, report.zombies),
        (u64::from(TASKS) - zombies, zombies),
        "{report:?}"
    );
    let results = env.results().await;
    assert_eq!(results.len() as u64, u64::from(TASKS) - zombies);
    let mut ids: Vec<_> = results.iter().map(|r| r.task_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), results.len(), "one result per task");
    // The taken-over entries are still pending, under the rescuer only.
    let summary = env
        .broker
        .pending_summary(&keys.tasks, &keys.group)
        .await
        .expect("summary");
    assert_eq!(summary.consumers, vec![("rescuer".to_owned(), zombies)]);
}
