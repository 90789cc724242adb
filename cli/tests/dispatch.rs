//! `crewq dispatch` and `crewq consumers prune` on a private Redis.

mod common;

use std::time::Duration;

use common::interpose::{Interposer, address_of};
use common::{Crew, agent};
use crewq_core::{Broker, PendingQuery};
use serde_json::json;

#[tokio::test]
async fn dispatch_one_task_from_arguments_or_a_payload_file() {
    let crew = Crew::start();
    let first = crew.json(
        &["dispatch", "research", "search_docs"],
        &[
            "--payload",
            r#"{"query":"xautoclaim"}"#,
            "--task-id",
            "t-1",
            "--trace",
            "wf-1",
        ],
    );
    assert_eq!(first["task_id"], "t-1");
    assert_eq!(first["duplicate"], false);
    let again = crew.json(
        &["dispatch", "research", "search_docs"],
        &["--task-id", "t-1"],
    );
    assert_eq!(again["duplicate"], true, "same id within the dedupe window");

    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), r#"{"repo":"crewq"}"#).expect("write");
    let payload = format!("@{}", file.path().display());
    crew.json(
        &["dispatch", "research", "analyze"],
        &["--payload", &payload],
    );

    let broker = crew.server.broker().await;
    let stream = crew.keyspace().tasks(&agent("research"));
    let entries = broker
        .xrange(&stream, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), 2);
    let task: crewq_core::Task = crewq_core::task_from_fields(&entries[1].fields).expect("a task");
    assert_eq!(task.payload["repo"], "crewq");

    let bad = crew.run(
        &["dispatch", "research", "analyze"],
        &["--payload", "{not json"],
    );
    assert!(!bad.status.success());
}

#[tokio::test]
async fn dispatch_reads_json_lines_on_stdin() {
    let crew = Crew::start();
    let lines = concat!(
        r#"{"agent_type":"research","action":"search_docs","payload":{"q":1}}"#,
        "\n\n",
        r#"{"agent_type":"review","action":"check","payload":{},"trace_id":"wf-9"}"#,
        "\n",
        r#"{"agent_type":"research","action":"search_docs","payload":{"q":2}}"#,
        "\n"
    );
    let output = crew.run_with_stdin(&["dispatch"], &["--json"], Some(lines));
    common::succeeded(&output);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 3);
    let keys = crew.keyspace();
    assert_eq!(crew.xlen(&keys.tasks(&agent("research"))).await, 2);
    assert_eq!(crew.xlen(&keys.tasks(&agent("review"))).await, 1);

    let broken = crew.run_with_stdin(&["dispatch"], &[], Some("{\"agent_type\":\n"));
    assert!(!broken.status.success());
    assert!(String::from_utf8_lossy(&broken.stderr).contains("stdin line 1"));
}

#[tokio::test]
async fn dispatch_timeout_sets_the_tasks_own_limit_within_range() {
    let crew = Crew::start();
    crew.json(
        &["dispatch", "research", "analyze"],
        &["--timeout", "30s", "--task-id", "t-30s"],
    );
    let line = r#"{"agent_type":"research","action":"analyze","payload":{},"task_id":"t-1500","timeout_ms":1500}"#;
    common::succeeded(&crew.run_with_stdin(&["dispatch"], &[], Some(line)));
    for refused in ["0ms", "2d"] {
        let out = crew.run(
            &["dispatch", "research", "analyze"],
            &["--timeout", refused],
        );
        assert!(!out.status.success(), "--timeout {refused} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("out of range"), "{stderr}");
    }
    let broker = crew.server.broker().await;
    let stream = crew.keyspace().tasks(&agent("research"));
    let timeouts: Vec<_> = broker
        .xrange(&stream, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange")
        .iter()
        .map(|e| crewq_core::task_from_fields::<serde_json::Value>(&e.fields).expect("a task"))
        .map(|t| (t.task_id, t.timeout))
        .collect();
    let secs = std::time::Duration::from_millis;
    assert_eq!(
        timeouts,
        vec![
            ("t-30s".to_owned(), Some(secs(30_000))),
            ("t-1500".to_owned(), Some(secs(1500)))
        ]
    );
}

#[tokio::test]
async fn consumers_prune_deletes_idle_consumers_that_hold_nothing() {
    let crew = Crew::start();
    let ids = crew.tasks("research", 2).await;
    crew.read("research", "busy", 1).await;
    crew.read("research", "idle", 1).await;
    // "idle" finished its task: it holds nothing now.
    let keys = crew.keyspace();
    let (stream, group) = (
        keys.tasks(&agent("research")),
        keys.group(&agent("research")),
    );
    let broker = crew.server.broker().await;
    broker.ack(&stream, &group, &ids[1..]).await.expect("ack");

    let kept = crew.json(&["consumers", "prune", "research"], &["--idle", "1h"]);
    assert_eq!(kept["pruned"].as_array().map(Vec::len), Some(0), "{kept}");

    let dry = crew.json(
        &["consumers", "prune", "research"],
        &["--idle", "0ms", "--dry-run"],
    );
    assert_eq!(dry["pruned"], serde_json::json!(["idle"]));

    let pruned = crew.json(&["consumers", "prune", "research"], &["--idle", "0ms"]);
    assert_eq!(pruned["pruned"], serde_json::json!(["idle"]));
    assert_eq!(pruned["kept"], 1, "busy holds an entry");
    let stats = crew.json(&["stats", "research"], &[]);
    let consumers = &stats[0]["groups"][0]["consumers"];
    assert_eq!(consumers.as_array().map(Vec::len), Some(1), "{consumers}");
    assert_eq!(consumers[0]["name"], "busy");
}

/// An interposer that, between `crewq consumers prune`'s `XINFO CONSUMERS`
/// and its next command, has `consumer` read `stream` from `from` (`>` for
/// a new task, `0` for its own history) as a waking worker would.
fn wake_up_between(crew: &Crew, consumer: &'static str, from: &'static str) -> Interposer {
    let keys = crew.keyspace();
    let (stream, group) = (
        keys.tasks(&agent("research")),
        keys.group(&agent("research")),
    );
    let url = crew.server.url().to_owned();
    Interposer::start(address_of(&url), b"CONSUMERS", move || {
        let mut conn = redis::Client::open(url.as_str())
            .and_then(|client| client.get_connection())
            .expect("connect");
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(from)
            .query(&mut conn)
            .expect("the waking read");
    })
}

/// A worker listed idle and empty that reads a task before prune deletes
/// it keeps its consumer and the task: deleting it would have dropped the
/// task from the pending list, never to be redelivered.
#[tokio::test]
async fn consumers_prune_keeps_a_consumer_that_read_after_it_was_listed() {
    let crew = Crew::start();
    let ids = crew.tasks("research", 2).await;
    crew.read("research", "sleeper", 1).await;
    let keys = crew.keyspace();
    let (stream, group) = (
        keys.tasks(&agent("research")),
        keys.group(&agent("research")),
    );
    let broker = crew.server.broker().await;
    broker.ack(&stream, &group, &ids[..1]).await.expect("ack");

    let proxy = wake_up_between(&crew, "sleeper", ">");
    let pruned = crew.json_at(
        &proxy.url(),
        &["consumers", "prune", "research"],
        &["--idle", "0ms"],
    );
    assert!(proxy.fired(), "the sleeper read between listing and delete");
    assert_eq!(pruned["pruned"], json!([]), "{pruned}");
    assert_eq!(pruned["came_back"], json!(["sleeper"]));
    let rows = broker
        .pending(&stream, &group, &PendingQuery::new(10))
        .await
        .expect("pending");
    let held: Vec<_> = rows.iter().map(|r| (r.id, r.consumer.as_str())).collect();
    assert_eq!(held, [(ids[1], "sleeper")], "the task it read is still its");
}

/// A worker listed idle that comes back (reads, finding nothing) before
/// prune deletes it is kept: it is idle no more.
#[tokio::test]
async fn consumers_prune_keeps_a_consumer_that_came_back_after_it_was_listed() {
    let crew = Crew::start();
    let ids = crew.tasks("research", 1).await;
    crew.read("research", "returner", 1).await;
    let keys = crew.keyspace();
    let (stream, group) = (
        keys.tasks(&agent("research")),
        keys.group(&agent("research")),
    );
    let broker = crew.server.broker().await;
    broker.ack(&stream, &group, &ids).await.expect("ack");
    // Idle past `--idle 1s` when listed; its read in the gap resets that,
    // and the delete follows within far less than a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let proxy = wake_up_between(&crew, "returner", "0");
    let pruned = crew.json_at(
        &proxy.url(),
        &["consumers", "prune", "research"],
        &["--idle", "1s"],
    );
    assert!(
        proxy.fired(),
        "the returner read between listing and delete"
    );
    assert_eq!(pruned["pruned"], json!([]), "{pruned}");
    assert_eq!(pruned["came_back"], json!(["returner"]));
    let consumers = broker.info_consumers(&stream, &group).await.expect("info");
    assert_eq!(consumers.len(), 1, "{consumers:?}");
}

#[tokio::test]
async fn dispatch_in_or_at_puts_the_task_in_the_delayed_set() {
    let crew = Crew::start();
    let later = crew.json(
        &["dispatch", "research", "search_docs"],
        &["--task-id", "t-later", "--in", "1h"],
    );
    assert_eq!(
        (later["entry_id"].as_str(), later["duplicate"].as_bool()),
        (Some("0-0"), Some(false))
    );
    let again = crew.json(
        &["dispatch", "research", "search_docs"],
        &["--task-id", "t-later"],
    );
    assert_eq!(
        again["duplicate"], true,
        "scheduled already: nothing appended"
    );
    // A time in the past (1 s after the epoch) is due at once.
    crew.json(
        &["dispatch", "research", "search_docs"],
        &["--task-id", "t-past", "--at", "1"],
    );
    let both = crew.run(
        &["dispatch", "research", "search_docs"],
        &["--in", "1s", "--at", "1"],
    );
    assert!(!both.status.success(), "--in and --at conflict");

    let broker = crew.server.broker().await;
    let research = agent("research");
    let set = crew.keyspace().delayed(&research);
    assert_eq!(broker.delayed_len(&set).await.expect("len"), 2);
    let stream = crew.keyspace().tasks(&research);
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 0);
    let promoted = broker.promote(&set, &stream, 10).await.expect("promote");
    assert_eq!(promoted.entries.len(), 1, "only t-past is due");
    let task: crewq_core::Task =
        crewq_core::task_from_fields(&promoted.entries[0].fields).expect("a task");
    assert_eq!(task.task_id, "t-past");
}
