//! `crewq dlq list|show|replay|purge` on a private Redis: filters select,
//! replay moves a letter back to its task stream, purge deletes, and the
//! destructive ones refuse without `--yes` when there is no terminal.

mod common;

use common::{Crew, agent, succeeded};
use crewq_core::{DeadLetterReason, WireErrorKind};

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
