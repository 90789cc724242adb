//! `crewq task` on a private Redis: a task by id (agent type from the id or
//! `--agent`) and a workflow by `--trace`.

mod common;

use common::Crew;
use crewq_core::DeadLetterReason;

#[tokio::test]
async fn task_shows_where_a_task_is_by_id_or_trace() {
    let crew = Crew::start();
    crew.tasks("research", 3).await; // t-0..t-2, trace wf-1
    crew.read("research", "worker-1", 1).await;
    crew.dead_letter("research", "t-9", "wf-1", DeadLetterReason::MaxRetries)
        .await;

    let held = crew.json(&["task", "t-0", "--agent", "research"], &[]);
    assert_eq!(held[0]["place"]["state"], "pending");
    assert_eq!(held[0]["place"]["consumer"], "worker-1");
    let waiting = crew.text(&["task", "t-1", "--agent", "research"], &[]);
    assert!(waiting.contains("waiting"), "{waiting}");
    let dead = crew.text(&["task", "t-9", "--agent", "research"], &[]);
    assert!(
        dead.contains("dead letter") && dead.contains("max_retries"),
        "{dead}"
    );

    let trace = crew.json(&["task", "wf-1", "--trace", "--agent", "research"], &[]);
    assert_eq!(trace.as_array().map(Vec::len), Some(4), "{trace}");

    let missing = crew.run(&["task", "t-404", "--agent", "research"], &[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[tokio::test]
async fn task_takes_the_agent_type_from_a_generated_id() {
    let crew = Crew::start();
    let dispatched = crew.json(&["dispatch", "review", "check"], &[]);
    let id = dispatched["task_id"].as_str().expect("a task id");
    assert!(id.starts_with("review-"), "{id}");
    let found = crew.json(&["task", id], &[]);
    assert_eq!(found[0]["agent_type"], "review");
    assert_eq!(found[0]["place"]["state"], "waiting");
}
