//! `crewq stats` and `crewq pending` on a private Redis: the numbers of a
//! stream set up through the library, as JSON and as a table, and
//! `--watch` refreshing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::Crew;
use crewq_core::DeadLetterReason;

#[tokio::test]
async fn stats_show_length_lag_pending_consumers_and_dead_letters() {
    let crew = Crew::start();
    crew.tasks("research", 5).await;
    crew.read("research", "worker-1", 2).await;
    crew.dead_letter("research", "t-dead", "wf-1", DeadLetterReason::MaxRetries)
        .await;

    let stats = crew.json(&["stats", "research", "review"], &[]);
    let research = &stats[0];
    assert_eq!(research["agent_type"], "research");
    assert_eq!(research["tasks"]["length"], 5);
    assert_eq!(research["groups"][0]["pending"], 2);
    assert_eq!(research["groups"][0]["lag"], 3);
    assert_eq!(research["groups"][0]["consumers"][0]["name"], "worker-1");
    assert!(research["groups"][0]["oldest_pending_idle_ms"].is_u64());
    assert_eq!(research["dlq_length"], 1);
    assert_eq!(stats[1]["tasks"]["exists"], false, "review has no stream");

    let table = crew.text(&["stats", "research"], &[]);
    let row: Vec<&str> = table
        .lines()
        .find(|line| line.starts_with("research "))
        .expect("a research row")
        .split_whitespace()
        .collect();
    // agent, length, lag, pending, consumers, oldest pending, dlq, delayed
    assert_eq!(row[1..5], ["5", "3", "2", "1"], "{table}");
    assert_eq!(row[6..8], ["1", "0"], "{table}");
    assert!(table.contains("worker-1"), "{table}");
}

#[tokio::test]
async fn stats_watch_refreshes_until_stopped() {
    let crew = Crew::start();
    crew.tasks("research", 1).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["stats", "research", "--watch", "--every", "50ms", "--json"])
        .args(["--redis", crew.server.url(), "--key-prefix", &crew.prefix])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run crewq");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a refresh").expect("read");
        let stats: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(stats[0]["tasks"]["length"], 1);
    }
    child.kill().expect("stop crewq");
    child.wait().expect("reaped");
}

#[test]
fn stats_name_at_least_one_agent_type() {
    let crew = Crew::start();
    let output = crew.run(&["stats"], &[]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
}

#[tokio::test]
async fn pending_lists_entries_by_consumer_and_idle_time() {
    let crew = Crew::start();
    crew.tasks("research", 4).await;
    crew.read("research", "worker-1", 1).await;
    crew.read("research", "worker-2", 2).await;

    let all = crew.json(&["pending", "research"], &[]);
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
    assert_eq!(all[0]["consumer"], "worker-1");
    assert_eq!(all[0]["task_id"], "t-0");
    assert_eq!(all[0]["deliveries"], 1);

    let two = crew.json(&["pending", "research"], &["--consumer", "worker-2"]);
    let tasks: Vec<&str> = two
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["task_id"].as_str().expect("task id"))
        .collect();
    assert_eq!(tasks, ["t-1", "t-2"]);

    let idle = crew.json(&["pending", "research"], &["--min-idle", "1h"]);
    assert_eq!(idle.as_array().map(Vec::len), Some(0), "{idle}");

    let table = crew.text(&["pending", "research"], &[]);
    assert!(
        table.starts_with("3 pending in group 'research-workers'"),
        "{table}"
    );
    assert!(
        !table.contains(" lane "),
        "no lane column without lanes: {table}"
    );
    assert!(
        table.contains("worker-2") && table.contains("t-2"),
        "{table}"
    );
}

/// A real worker's handler reports progress twice and keeps running: its
/// entry is pending, shown with the newer report; an entry another reader
/// holds, with no report, shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_shows_the_newest_progress_of_running_tasks() {
    use std::time::Duration;

    use crewq_core::producer::Producer;
    use crewq_core::worker::{Context, HandlerError, Worker, WorkerOptions, with_context};
    use crewq_core::{Broker, Task};
    use serde_json::{Value, json};

    let crew = Crew::start();
    let research = common::agent("research");
    crew.tasks("research", 1).await;
    crew.read("research", "silent-reader", 1).await;
    let broker = crew.server.broker().await;
    let producer = Producer::new(broker.clone()).with_keyspace(crew.keyspace());
    let task = Task::new("research", "analyze", json!({}))
        .task_id("reporting")
        .build()
        .expect("task");
    producer.dispatch(&task).await.expect("dispatch");
    let mut options = WorkerOptions::default().lease(Duration::from_secs(30));
    options.keyspace = crew.keyspace();
    let worker = Worker::new(
        broker.clone(),
        research.clone(),
        "w1",
        with_context(|_: Task<Value>, ctx: Context| async move {
            ctx.progress(json!({ "step": 1, "of": 3 }))
                .await
                .map_err(|e| HandlerError::from(e.to_string()))?;
            ctx.progress(json!({ "step": 2, "of": 3 }))
                .await
                .map_err(|e| HandlerError::from(e.to_string()))?;
            ctx.cancelled().await;
            Err::<Value, HandlerError>("cut off".into())
        }),
    )
    .options(options)
    .spawn();
    let progress = crew.keyspace().progress(&research);
    for _ in 0..500 {
        if broker.xlen(&progress).await.unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rows = crew.json(&["pending", "research"], &[]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let of = |task: &str| {
        rows.iter()
            .find(|r| r["task_id"] == task)
            .unwrap_or_else(|| panic!("{task} pending: {rows:?}"))
    };
    assert_eq!(of("reporting")["progress"], json!({ "step": 2, "of": 3 }));
    assert!(of("reporting")["progress_at"].is_string());
    assert_eq!(of("reporting")["consumer"], "w1");
    assert_eq!(of("t-0")["progress"], Value::Null);
    let table = crew.text(&["pending", "research"], &[]);
    assert!(table.contains(r#"{"of":3,"step":2}"#), "{table}");
    worker
        .shutdown(Duration::from_millis(200))
        .await
        .expect("report");
}

#[tokio::test]
async fn stats_into_a_closed_pipe_exits_cleanly() {
    let crew = Crew::start();
    crew.tasks("research", 1).await;
    let on = ["--redis", crew.server.url(), "--key-prefix", &crew.prefix];
    let output = common::into_a_closed_pipe(&[&["stats", "research"], &on[..]].concat());
    common::succeeded(&output);
}

#[test]
fn dispatch_and_stats_on_a_redis_cluster() {
    let cluster = crewq_tests::redis_cluster::TestCluster::start();
    let url = cluster.url();
    let prefix = cluster.unique_prefix();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
            .args(args)
            .args([
                "--redis",
                &url,
                "--cluster",
                "--key-prefix",
                &prefix,
                "--json",
            ])
            .output()
            .expect("run crewq");
        common::succeeded(&output);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let dispatched = run(&["dispatch", "research", "search_docs"]);
    assert_eq!(dispatched["stream"], format!("{prefix}:{{research}}:tasks"));
    let stats = run(&["stats", "research"]);
    assert_eq!(stats[0]["tasks"]["length"], 1);
    assert_eq!(stats[0]["dlq_stream"], format!("{prefix}:{{research}}:dlq"));
}

/// An agent type whose workers share a rate limit shows it: a `rate`
/// object in the JSON and a row of the rate-limit table, with the starts
/// in the window, the running permits and the pause left; one without a
/// limit has neither.
#[tokio::test]
async fn stats_show_a_shared_rate_limit_in_use() {
    use crewq_core::{Broker, RateAcquire, RateLimit};
    use std::time::Duration;

    let crew = Crew::start();
    crew.tasks("research", 1).await;
    crew.tasks("review", 1).await;
    let broker = crew.server.broker().await;
    let keys = crew.keyspace().rate(&common::agent("research"));
    let limit = RateLimit::new()
        .starts(5, Duration::from_secs(60))
        .running(3);
    let acquire = RateAcquire {
        keys: keys.clone(),
        limit,
        permits: vec!["w1/1".to_owned(), "w1/2".to_owned()],
        lease: Duration::from_secs(60),
    };
    assert_eq!(
        broker.rate_acquire(acquire).await.expect("acquire").granted,
        2
    );
    broker
        .rate_pause(&keys, Duration::from_secs(60))
        .await
        .expect("pause");

    let stats = crew.json(&["stats", "research", "review"], &[]);
    assert_eq!(stats[0]["rate"]["limit"], "5/60000ms, 3 running");
    assert_eq!(stats[0]["rate"]["running"], 2);
    assert_eq!(stats[0]["rate"]["starts_in_window"], 2);
    assert!(
        stats[0]["rate"]["paused_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 50_000)
    );
    assert!(stats[1].get("rate").is_none(), "review has no limit");

    let table = crew.text(&["stats", "research", "review"], &[]);
    let row = table
        .lines()
        .skip_while(|line| !line.contains("rate limit"))
        .find(|line| line.starts_with("research "))
        .expect("a rate-limit row");
    assert!(row.contains("5/60000ms, 3 running"), "{table}");
    let numbers: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(numbers[4..6], ["2", "2"], "starts, running: {table}");
}

/// Tasks at priority 5 wait in lane 5's stream: `crewq stats` adds them up
/// in the agent type's row and shows each lane (JSON and table), `crewq
/// pending` lists what consumers hold in every lane and says which,
/// `crewq task` finds a lane's task pending, and `crewq consumers prune`
/// prunes a lane's idle consumer.
#[tokio::test]
async fn stats_pending_task_and_prune_cover_priority_lanes() {
    use crewq_core::producer::Producer;
    use crewq_core::{Broker, GroupStart, Priority, ReadGroup, Task};
    use serde_json::json;

    let crew = Crew::start();
    crew.tasks("research", 2).await;
    crew.read("research", "worker-1", 1).await;
    let broker = crew.server.broker().await;
    let keyspace = crew.keyspace();
    let research = common::agent("research");
    let lane = keyspace.lane(&research, Priority::new(5).expect("in range"));
    let group = keyspace.group(&research);
    broker
        .group_create(&lane, &group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let producer = Producer::new(broker.clone()).with_keyspace(keyspace.clone());
    for n in 0..3 {
        let task = Task::new("research", "analyze", json!({}))
            .task_id(format!("p-{n}"))
            .priority(5)
            .build()
            .expect("task");
        producer.dispatch(&task).await.expect("dispatch");
    }
    for consumer in ["worker-5", "idle-5"] {
        broker
            .read_group(&ReadGroup::new(&lane, &group, consumer).count(1))
            .await
            .expect("read");
    }
    // idle-5 finished its task: it holds nothing now.
    let idle = broker
        .pending(
            &lane,
            &group,
            &crewq_core::PendingQuery::new(10).consumer("idle-5"),
        )
        .await
        .expect("pending");
    let ids: Vec<_> = idle.iter().map(|p| p.id).collect();
    broker.ack(&lane, &group, &ids).await.expect("ack");

    let stats = crew.json(&["stats", "research"], &[]);
    let agent = &stats[0];
    assert_eq!(agent["tasks"]["length"], 5, "{agent}");
    assert_eq!(agent["groups"][0]["pending"], 2, "{agent}");
    assert_eq!(agent["groups"][0]["lag"], 2, "lane 0: 1 unread, lane 5: 1");
    assert_eq!(agent["lanes"][0]["priority"], 5);
    assert_eq!(agent["lanes"][0]["tasks"]["length"], 3);
    assert_eq!(agent["lanes"][0]["groups"][0]["pending"], 1);
    assert_eq!(agent["lanes"][1]["priority"], 0);
    let table = crew.text(&["stats", "research"], &[]);
    let row: Vec<&str> = table
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some("@5"))
        .unwrap_or_else(|| panic!("a lane 5 row: {table}"))
        .split_whitespace()
        .collect();
    // agent, lane, length, lag, pending
    assert_eq!(row[..5], ["research", "@5", "3", "1", "1"], "{table}");

    let rows = crew.json(&["pending", "research"], &[]);
    let held: Vec<(&str, u64, &str)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["task_id"].as_str().unwrap_or("-"),
                r["priority"].as_u64().unwrap_or(99),
                r["consumer"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(held, [("t-0", 0, "worker-1"), ("p-0", 5, "worker-5")]);
    assert_eq!(rows[1]["stream"], lane.as_str());
    let text = crew.text(&["pending", "research"], &[]);
    assert!(text.contains("and its lanes @5"), "{text}");
    assert!(
        text.lines()
            .any(|line| line.contains(" @5 ") && line.contains("worker-5")),
        "{text}"
    );

    let found = crew.json(&["task", "p-0"], &["--agent", "research"]);
    assert_eq!(found[0]["place"]["state"], "pending", "{found}");
    assert_eq!(found[0]["place"]["priority"], 5, "{found}");
    assert_eq!(found[0]["place"]["consumer"], "worker-5", "{found}");

    let pruned = crew.json(&["consumers", "prune", "research"], &["--idle", "0ms"]);
    assert_eq!(pruned["pruned"], json!(["idle-5"]), "{pruned}");
    assert_eq!(pruned["pruned_lanes"], json!([5]), "{pruned}");
    assert_eq!(pruned["kept"], 2, "worker-1 and worker-5 hold entries");
}
