//! The browser end-to-end test of `crewq serve`'s dashboard: a private
//! Redis, a running crew (two research workers in this process: some tasks
//! complete, three are held, three fail once and are dead-lettered; review
//! tasks wait with no worker, two of them in the delayed set, dispatched for
//! an hour later; research's workers share a rate limit, review is paused
//! by a slow-down), `crewq serve`, and headless Chromium driven
//! by tests/browser/dashboard.mjs (playwright-core), which checks the page
//! against `crewq stats --json`, replays a dead letter by clicking, and saves
//! target/dashboard.png.
//!
//! It needs node, `npm ci --prefix tests/browser` and Debian's `chromium`
//! (scripts/test installs them); without them it fails, saying so.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::served::Served;
use common::{Crew, agent};
use crewq_core::monitor::Monitor;
use crewq_core::producer::Producer;
use crewq_core::worker::{HandlerError, Worker, WorkerHandle, WorkerOptions};
use crewq_core::{Broker, RateLimit, Task};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds cli/")
        .to_owned()
}

/// Research workers: `hold` tasks never finish (they stay pending), `fail`
/// tasks fail the first time each is run (with `max_retries` 0, a dead
/// letter that succeeds when replayed), the rest complete.
fn research_worker(
    crew: &Crew,
    broker: &crewq_redis::RedisBroker,
    name: &str,
    failed: Arc<Mutex<BTreeSet<String>>>,
) -> WorkerHandle {
    let mut options = WorkerOptions::default().lease(Duration::from_secs(5));
    options.keyspace = crew.keyspace();
    // A shared rate limit, for the dashboard's rate limit column: an
    // hour-long window, so its count of starts stands still.
    options.rate_limit = Some(
        RateLimit::new()
            .starts(100, Duration::from_secs(3600))
            .running(8),
    );
    Worker::new(
        broker.clone(),
        agent("research"),
        name,
        move |task: Task| {
            let first_failure = task.payload["kind"] == "fail"
                && failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(task.task_id.clone());
            async move {
                match task.payload["kind"].as_str() {
                    Some("hold") => std::future::pending().await,
                    _ if first_failure => Err::<Value, HandlerError>("the model refused".into()),
                    _ => Ok(json!({ "summary": format!("{} done", task.task_id) })),
                }
            }
        },
    )
    .options(options)
    .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_monitors_numbers_and_replays_a_dead_letter() {
    let modules = workspace().join("tests/browser/node_modules/playwright-core");
    assert!(
        modules.is_dir(),
        "{} is missing: run `npm ci --prefix tests/browser` (scripts/test does)",
        modules.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no browser at {chromium}: `apt-get install -y chromium` (scripts/test does), or set CHROMIUM"
    );

    let crew = Crew::start();
    crew.tasks("review", 3).await; // waiting, no worker
    let broker = crew.server.broker().await;
    let producer = Producer::new(broker.clone()).with_keyspace(crew.keyspace());
    let research = agent("research");
    // The group first, so the workers read every task.
    broker
        .group_create(
            &crew.keyspace().tasks(&research),
            &crew.keyspace().group(&research),
            crewq_core::GroupStart::BEGINNING,
            true,
        )
        .await
        .expect("group");
    for (kind, count) in [("ok", 4), ("hold", 3), ("fail", 3)] {
        for n in 0..count {
            let task = Task::new("research", "analyze", json!({ "kind": kind }))
                .task_id(format!("research-{kind}-{n}"))
                .trace_id("wf-dashboard")
                .max_retries(0)
                .build()
                .expect("task");
            producer.dispatch(&task).await.expect("dispatch");
        }
    }
    // Two review tasks for an hour later: no worker promotes them, and
    // none would before they are due.
    for n in 0..2 {
        let later = Task::new("review", "check", json!({ "n": n }))
            .task_id(format!("review-later-{n}"))
            .build()
            .expect("task");
        producer
            .dispatch_in(&later, Duration::from_secs(3600))
            .await
            .expect("dispatch for later");
    }
    // Review paused for an hour, as a handler's slow-down pauses it.
    broker
        .rate_pause(
            &crew.keyspace().rate(&agent("review")),
            Duration::from_secs(3600),
        )
        .await
        .expect("pause review");
    let failed = Arc::new(Mutex::new(BTreeSet::new()));
    let _workers = [
        research_worker(&crew, &broker, "research-worker-1", Arc::clone(&failed)),
        research_worker(&crew, &broker, "research-worker-2", failed),
    ];

    // A steady crew, so the page and the CLI read the same numbers: every
    // task delivered, the held three pending, the three failures dead-lettered.
    let monitor = Monitor::new(&broker, crew.keyspace());
    let mut steady = false;
    for _ in 0..600 {
        let stats = monitor.agent_stats(&research).await.expect("stats");
        let group = stats.groups.first();
        if group.is_some_and(|g| g.lag == Some(0) && g.pending == 3 && g.consumers.len() == 2)
            && stats.dlq_length == 3
        {
            steady = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        steady,
        "the crew never settled: {:?}",
        monitor.agent_stats(&research).await
    );

    let served = Served::start(&crew, &["research", "review", "report"]);
    let screenshot = workspace().join("target/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    std::fs::create_dir_all(workspace().join("target")).expect("target/");
    let mut node = Command::new("node");
    node.current_dir(workspace())
        .arg("tests/browser/dashboard.mjs")
        .env("SERVE_URL", format!("http://{}/", served.addr))
        .env("CREWQ", env!("CARGO_BIN_EXE_crewq"))
        .env("REDIS_URL", crew.server.url())
        .env("KEY_PREFIX", &crew.prefix)
        .env("AGENTS", "research,review,report")
        .env("REPLAY_AGENT", "research")
        .env("REPLAY_TASK", "research-fail-1")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium);
    // The crew keeps running on this runtime while the browser works.
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("joined")
        .expect("run node (is it installed?)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser test failed ({:?}):\n{log}",
        output.status
    );
    // Its checks ran to the end.
    assert!(
        log.contains("ok: the replayed task research-fail-1 ran and completed"),
        "{log}"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "target/dashboard.png is a PNG"
    );
}
