//! Shared rate limits per agent type (issue 12): every worker of the agent
//! type takes a permit from the broker before an attempt starts, so a crew
//! shares one budget of starts per window and of running handlers; a
//! handler's [`SlowDown`] pauses them all. Each a named test on the memory
//! backend (paused time, exact windows), a private Redis and the cluster
//! fixture (real time: windows judged with a small slack for the time
//! between the broker's grant and the handler's first line).

mod worker_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::worker::{Context, HandlerError, SlowDown, WorkerHandle, with_context};
use crewq_core::{Broker, RateLimit, Task};
use serde_json::{Value, json};
use tokio::time::Instant;
use worker_common::{Calls, Env, task};

crewq_tests::on_both_backends!(
    Env:
    ten_workers_share_one_budget,
    a_crashed_workers_running_permits_come_back_after_the_lease,
    a_slow_down_pauses_every_worker_and_the_task_still_completes,
    limits_never_lose_or_dead_letter_a_task,
    a_task_that_always_slows_down_ends_after_its_slow_downs_and_retries,
);

/// A run's start and the permit it held.
type Started = (Instant, Option<String>);

/// What a crew's handler saw: each run's start, permit and the most
/// running at once.
#[derive(Clone, Default)]
struct Runs {
    starts: Arc<Mutex<Vec<Started>>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Runs {
    /// A handler that records its run and sleeps `sleep`, with `calls`.
    fn handler(
        &self,
        calls: &Calls,
        sleep: Duration,
    ) -> impl crewq_core::worker::Handler<Value> + use<> {
        let (runs, calls) = (self.clone(), calls.clone());
        with_context(move |t: Task<Value>, ctx: Context| {
            let runs = runs.clone();
            calls.bump(&t.task_id);
            async move {
                runs.starts
                    .lock()
                    .expect("starts")
                    .push((Instant::now(), ctx.rate_permit().map(str::to_owned)));
                let now = runs.running.fetch_add(1, Ordering::SeqCst) + 1;
                runs.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(sleep).await;
                runs.running.fetch_sub(1, Ordering::SeqCst);
                Ok::<Value, HandlerError>(json!({ "done": t.task_id }))
            }
        })
    }

    /// The most starts in any window of `window` (closed on the left, open
    /// on the right, as the broker's log counts).
    fn most_in_any(&self, window: Duration) -> usize {
        let mut at: Vec<Instant> = self
            .starts
            .lock()
            .expect("starts")
            .iter()
            .map(|(t, _)| *t)
            .collect();
        at.sort();
        let mut most = 0;
        let mut from = 0;
        for to in 0..at.len() {
            while at[to] - at[from] >= window {
                from += 1;
            }
            most = most.max(to + 1 - from);
        }
        most
    }
}

/// How much shorter than the limit's window the windows judged are on a
/// real clock: the grant is the broker's, the start the handler's, and on a
/// loaded machine a start can follow its grant by tens of ms (60 ms of
/// slack was seen exceeded while simulator campaigns ran beside). Memory,
/// on paused time, is judged exactly.
fn slack(env: &Env) -> Duration {
    if env.memory {
        Duration::ZERO
    } else {
        Duration::from_millis(150)
    }
}

async fn shutdown(workers: Vec<WorkerHandle>) -> crewq_core::worker::WorkerReport {
    let mut total = crewq_core::worker::WorkerReport::default();
    for worker in workers {
        total += worker
            .shutdown(Duration::from_secs(5))
            .await
            .expect("report");
    }
    total
}

/// Ten workers of four slots each, one limit of 3 starts per 400 ms and 2
/// running: together they never start more than 3 in any 400 ms nor run
/// more than 2 at once, every run holds a permit of its own, and all 18
/// tasks complete.
async fn ten_workers_share_one_budget(env: Env) {
    let window = Duration::from_millis(400);
    let limit = RateLimit::new().starts(3, window).running(2);
    for n in 1..=18 {
        env.dispatch(&task(n, 0)).await;
    }
    let (runs, calls) = (Runs::default(), Calls::default());
    let workers: Vec<_> = (0..10)
        .map(|i| {
            let options = env.options().concurrency(4).rate_limit(limit);
            let handler = runs.handler(&calls, Duration::from_millis(30));
            env.spawn_with(&format!("w{i}"), options, handler)
        })
        .collect();
    env.settled(18).await;
    let report = shutdown(workers).await;
    assert_eq!(report.completed, 18, "{report:?}");
    assert!(runs.most.load(Ordering::SeqCst) <= 2, "more than 2 running");
    let most = runs.most_in_any(window - slack(&env));
    assert!(most <= 3, "{most} starts in one window");
    let permits: Vec<Option<String>> = runs
        .starts
        .lock()
        .expect("starts")
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert!(
        permits.iter().all(Option::is_some),
        "a run without a permit"
    );
    let distinct: std::collections::BTreeSet<_> = permits.iter().collect();
    assert_eq!(distinct.len(), permits.len(), "a permit used twice");
    let state = env
        .broker
        .rate_state(&env.keyspace.rate(&env.agent))
        .await
        .expect("rate_state");
    assert_eq!(state.limit, Some(limit), "the monitor sees the limit");
    assert_eq!(state.running, 0, "every permit released");
}

/// A worker that crashes holding the only running permit holds it until
/// its lease ends, as it holds its entry; then a peer gets the room and
/// runs both its own task and the crashed worker's.
async fn a_crashed_workers_running_permits_come_back_after_the_lease(env: Env) {
    let limit = RateLimit::new().running(1);
    let rate = env.keyspace.rate(&env.agent);
    env.dispatch(&task(1, 0)).await;
    let hang = with_context(|_: Task<Value>, _: Context| async {
        std::future::pending::<()>().await;
        Ok::<Value, HandlerError>(Value::Null)
    });
    let doomed = env.spawn_with("w1", env.options().rate_limit(limit), hang);
    for _ in 0..400 {
        if env.broker.rate_state(&rate).await.expect("state").running == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    doomed.abort();
    env.dispatch(&task(2, 0)).await;
    let (runs, calls) = (Runs::default(), Calls::default());
    let options = env.options().rate_limit(limit);
    let lease = options.lease;
    let rescuer = env.spawn_with("w2", options, runs.handler(&calls, Duration::ZERO));
    tokio::time::sleep(lease / 3).await;
    assert_eq!(calls.total(), 0, "the crashed worker's permit still holds");
    assert_eq!(
        env.broker.rate_state(&rate).await.expect("state").running,
        1
    );
    env.settled(2).await;
    let report = shutdown(vec![rescuer]).await;
    assert_eq!(report.completed, 2, "{report:?}");
    // task-1, and on Redis task-2 too when the crashed worker's blocked
    // read (its connection outlives it for a moment) took it.
    assert!(report.reclaimed >= 1, "{report:?}");
    assert_eq!((calls.of("task-1"), calls.of("task-2")), (1, 1));
}

/// A handler's slow-down pauses every worker of the agent type: nothing
/// dispatched after it starts on either worker before the pause ends; the
/// slowed task runs again after the pause, as its first attempt still (no
/// retry burnt), and completes.
async fn a_slow_down_pauses_every_worker_and_the_task_still_completes(env: Env) {
    let pause = Duration::from_millis(500);
    let slowed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (runs, calls) = (Runs::default(), Calls::default());
    let handler = |runs: &Runs| {
        let (slowed_at, attempts, inner) = (
            Arc::clone(&slowed_at),
            Arc::clone(&attempts),
            runs.handler(&calls, Duration::ZERO),
        );
        let inner = Arc::new(inner);
        with_context(move |t: Task<Value>, ctx: Context| {
            let (slowed_at, attempts, inner) = (
                Arc::clone(&slowed_at),
                Arc::clone(&attempts),
                Arc::clone(&inner),
            );
            async move {
                if t.task_id == "task-1" {
                    attempts.lock().expect("attempts").push(ctx.attempt());
                    let mut first = slowed_at.lock().expect("slowed");
                    if first.is_none() {
                        *first = Some(Instant::now());
                        return Err(SlowDown::new(pause, "429 from upstream").into());
                    }
                }
                crewq_core::worker::Handler::handle(&*inner, t, ctx).await
            }
        })
    };
    let limit = RateLimit::new();
    env.dispatch(&task(1, 0)).await;
    let mut options = env.options().rate_limit(limit);
    // A pause is capped at the back-off's max, as a retry-after is.
    options.backoff.max = Duration::from_secs(5);
    let workers: Vec<_> = (0..2)
        .map(|i| env.spawn_with(&format!("w{i}"), options.clone(), handler(&runs)))
        .collect();
    for _ in 0..400 {
        if slowed_at.lock().expect("slowed").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let slowed = slowed_at.lock().expect("slowed").expect("slowed down");
    // Dispatch the others once the pause is in the broker (the worker sets
    // it after the handler returns: a task read in between may start), or
    // a fifth of the pause after the slow-down, whichever comes first: so
    // a worker that never pauses still starts them within the pause.
    let rate = env.keyspace.rate(&env.agent);
    while Instant::now() < slowed + pause / 5 {
        let paused = env.broker.rate_state(&rate).await.expect("state");
        if paused.paused_for.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in 2..=5 {
        env.dispatch(&task(n, 0)).await;
    }
    env.settled(5).await;
    let report = shutdown(workers).await;
    assert_eq!(report.slowed_down, 1, "{report:?}");
    assert_eq!((report.completed, report.retried), (5, 0), "{report:?}");
    assert_eq!(
        *attempts.lock().expect("attempts"),
        [1, 1],
        "no retry burnt"
    );
    let early: Vec<Duration> = runs
        .starts
        .lock()
        .expect("starts")
        .iter()
        .map(|(at, _)| at.saturating_duration_since(slowed))
        .filter(|since| *since + slack(&env) < pause)
        .collect();
    assert!(early.is_empty(), "started during the pause: {early:?}");
    assert_eq!(env.dead_letters().await.len(), 0);
}

/// Under a limit far below the crew's slots (1 start per 50 ms, 1 running)
/// tasks wait in workers' hands longer than a lease: their leases are
/// renewed while they wait, so none is taken over, run twice, lost or
/// dead-lettered.
async fn limits_never_lose_or_dead_letter_a_task(env: Env) {
    let limit = RateLimit::new()
        .starts(1, Duration::from_millis(50))
        .running(1);
    for n in 1..=24 {
        env.dispatch(&task(n, 0)).await;
    }
    let (runs, calls) = (Runs::default(), Calls::default());
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let options = env.options().concurrency(5).rate_limit(limit);
            env.spawn_with(
                &format!("w{i}"),
                options,
                runs.handler(&calls, Duration::from_millis(5)),
            )
        })
        .collect();
    env.settled(24).await;
    let report = shutdown(workers).await;
    assert_eq!(report.completed, 24, "{report:?}");
    assert_eq!(report.reclaimed, 0, "a waiting entry's lease lapsed");
    assert_eq!(env.dead_letters().await.len(), 0);
    for n in 1..=24 {
        assert_eq!(calls.of(&format!("task-{n}")), 1, "task-{n}");
    }
    assert!(runs.most.load(Ordering::SeqCst) <= 1);
}

/// A task whose upstream always says "slow down" cannot loop for ever:
/// its first `MAX_SLOW_DOWNS` slow-downs burn no retry, the ones after
/// count as failed runs, and it is dead-lettered once those exhaust its
/// `max_retries`.
async fn a_task_that_always_slows_down_ends_after_its_slow_downs_and_retries(env: Env) {
    use crewq_core::worker::MAX_SLOW_DOWNS;
    env.dispatch(&task(1, 2)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            calls.bump(&t.task_id);
            std::future::ready(Err::<Value, HandlerError>(
                SlowDown::new(Duration::from_millis(5), "429 again").into(),
            ))
        }
    };
    let worker = env.spawn_with("w1", env.options().rate_limit(RateLimit::new()), handler);
    env.settled_either(1).await;
    let report = shutdown(vec![worker]).await;
    assert_eq!(report.slowed_down, u64::from(MAX_SLOW_DOWNS), "{report:?}");
    assert_eq!((report.retried, report.dead_lettered), (2, 1), "{report:?}");
    assert_eq!(calls.of("task-1"), MAX_SLOW_DOWNS + 3);
    assert_eq!(env.reasons().await, ["max_retries"]);
}
