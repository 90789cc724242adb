//! `crewq dlq list|show|replay|purge` on a private Redis: filters select,
//! replay moves a letter back to its task stream, purge deletes, and the
//! destructive ones refuse without `--yes` when there is no terminal.

mod common;

use std::time::Duration;

use common::{Crew, agent, succeeded};
use crewq_core::producer::Producer;
use crewq_core::worker::{HandlerError, NonRetryable, Worker, WorkerOptions};
use crewq_core::{Broker, DeadLetterReason, Task, WireErrorKind};
use serde_json::{Value, json};

async fn three_letters(crew: &Crew) -> Vec<String> {
    let mut ids = Vec::new();
    for (task, trace, reason) in [
        ("t-1", "wf-a", DeadLetterReason::MaxRetries),
        ("t-2", "wf-b", DeadLetterReason::MaxRetries),
        (
            "t-3",
            "wf-a",
            DeadLetterReason::Poison(WireErrorKind::InvalidTask),
        ),
    ] {
        ids.push(
            crew.dead_letter("research", task, trace, reason)
                .await
                .to_string(),
        );
    }
    ids
}

fn task_ids(listed: &serde_json::Value) -> Vec<&str> {
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| l["task"]["task_id"].as_str().expect("task id"))
        .collect()
}

#[tokio::test]
async fn dlq_list_filters_by_reason_trace_and_limit() {
    let crew = Crew::start();
    three_letters(&crew).await;
    let list = |args: &[&str]| crew.json(&["dlq", "list", "--agent", "research"], args);
    assert_eq!(task_ids(&list(&[])), ["t-1", "t-2", "t-3"]);
    assert_eq!(
        task_ids(&list(&["--reason", "max_retries"])),
        ["t-1", "t-2"]
    );
    assert_eq!(task_ids(&list(&["--trace", "wf-a"])), ["t-1", "t-3"]);
    assert_eq!(task_ids(&list(&["--limit", "1"])), ["t-1"]);
    let table = crew.text(&["dlq", "list", "--agent", "research"], &[]);
    assert!(table.starts_with("3 dead letter(s)"), "{table}");
    assert!(table.contains("poison:invalid_task"), "{table}");
}

/// A real worker dead-letters two tasks whose handler fails with
/// [`NonRetryable`] (reason `non_retryable`, at the first failure) and one
/// that fails plainly with `max_retries` 0 (`max_retries`), beside letters
/// of other reasons: `--reason non_retryable` lists exactly the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_by_reason_non_retryable_lists_exactly_the_non_retryable_letters() {
    let crew = Crew::start();
    three_letters(&crew).await;
    let broker = crew.server.broker().await;
    let producer = Producer::new(broker.clone()).with_keyspace(crew.keyspace());
    for (id, retries) in [("nr-1", 3), ("plain-1", 0), ("nr-2", 3)] {
        let task = Task::new("research", "analyze", json!({}))
            .task_id(id)
            .max_retries(retries)
            .build()
            .expect("task");
        producer.dispatch(&task).await.expect("dispatch");
    }
    let mut options = WorkerOptions::default().lease(Duration::from_secs(5));
    options.keyspace = crew.keyspace();
    let worker = Worker::new(
        broker.clone(),
        agent("research"),
        "w1",
        |task: Task<Value>| async move {
            if task.task_id.starts_with("nr-") {
                Err::<Value, HandlerError>(NonRetryable::new("no such repository").into())
            } else {
                Err("the model refused".into())
            }
        },
    )
    .options(options)
    .spawn();
    let dlq = crew.keyspace().dlq(&agent("research"));
    for _ in 0..500 {
        if broker.xlen(&dlq).await.expect("xlen") >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(broker.xlen(&dlq).await.expect("xlen"), 6, "six letters");

    let list = |args: &[&str]| crew.json(&["dlq", "list", "--agent", "research"], args);
    let listed = list(&["--reason", "non_retryable"]);
    let mut ids = task_ids(&listed);
    ids.sort_unstable();
    assert_eq!(ids, ["nr-1", "nr-2"], "{listed}");
    for letter in listed.as_array().expect("a list") {
        assert_eq!(letter["reason"], "non_retryable", "{letter}");
    }
    // The plain failure is a max_retries letter, listed with the others.
    let max_retries = list(&["--reason", "max_retries"]);
    assert_eq!(task_ids(&max_retries), ["t-1", "t-2", "plain-1"]);
}

#[tokio::test]
async fn dlq_show_prints_one_letter_in_full() {
    let crew = Crew::start();
    let ids = three_letters(&crew).await;
    let shown = crew.json(&["dlq", "show", "--agent", "research", &ids[1]], &[]);
    assert_eq!(shown["task_id"], "t-2");
    assert_eq!(shown["reason"], "max_retries");
    assert_eq!(shown["task"]["trace_id"], "wf-b");
    let text = crew.text(&["dlq", "show", "--agent", "research", &ids[1]], &[]);
    assert!(text.contains("error          boom"), "{text}");
    let missing = crew.run(&["dlq", "show", "--agent", "research", "1-1"], &[]);
    assert!(!missing.status.success(), "no such letter is an error");
}

#[tokio::test]
async fn dlq_replay_moves_letters_back_and_asks_first() {
    let crew = Crew::start();
    let ids = three_letters(&crew).await;
    let keys = crew.keyspace();
    let (tasks, dlq) = (keys.tasks(&agent("research")), keys.dlq(&agent("research")));

    // No terminal and no --yes: nothing happens.
    let refused = crew.run(&["dlq", "replay", "--agent", "research", &ids[0]], &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(crew.xlen(&dlq).await, 3);

    let one = crew.json(
        &["dlq", "replay", "--agent", "research", &ids[0]],
        &["--yes"],
    );
    assert_eq!(one["replayed"][0]["task_id"], "t-1");
    assert_eq!((crew.xlen(&dlq).await, crew.xlen(&tasks).await), (2, 1));

    // --all skips the poison letter: replaying it would only fail again.
    let all = crew.json(
        &["dlq", "replay", "--agent", "research", "--all"],
        &["--yes"],
    );
    assert_eq!(all["replayed"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all["skipped"][0]["entry_id"], ids[2].as_str(), "{all}");
    assert_eq!((crew.xlen(&dlq).await, crew.xlen(&tasks).await), (1, 2));
}

#[tokio::test]
async fn dlq_purge_deletes_by_id_filter_or_all() {
    let crew = Crew::start();
    let ids = three_letters(&crew).await;
    three_letters(&crew).await;
    let dlq = crew.keyspace().dlq(&agent("research"));
    let purge = |args: &[&str]| {
        crew.json(
            &["dlq", "purge", "--agent", "research"],
            &[args, &["--yes"]].concat(),
        )
    };
    assert_eq!(purge(&[&ids[0]])["purged"], 1);
    assert_eq!(crew.xlen(&dlq).await, 5);
    assert_eq!(purge(&["--reason", "poison"])["purged"], 2);
    assert_eq!(crew.xlen(&dlq).await, 3);
    let refused = crew.run(&["dlq", "purge", "--agent", "research", "--all"], &[]);
    assert!(!refused.status.success(), "no --yes, no terminal");
    assert_eq!(crew.xlen(&dlq).await, 3);
    assert_eq!(purge(&["--all"])["purged"], 3);
    assert_eq!(crew.xlen(&dlq).await, 0);
}

#[test]
fn dlq_replay_needs_an_id_all_or_a_filter() {
    let crew = Crew::start();
    let output = crew.run(&["dlq", "replay", "--agent", "research"], &["--yes"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    succeeded(&crew.run(&["dlq", "list", "--agent", "research"], &[]));
}
