//! `crewq dispatch` and `crewq consumers prune` on a private Redis.

mod common;

use common::{Crew, agent};
use crewq_core::Broker;

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
