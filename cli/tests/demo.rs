//! `crewq demo` runs end to end, in memory and on a private Redis, and its
//! `--json` report adds up.

use std::process::Command;

use crewq_tests::redis_cluster::TestCluster;
use crewq_tests::redis_server::TestRedis;
use serde_json::Value;

fn demo(extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["demo", "--json", "--tasks", "8", "--failure-rate", "0.3"])
        .args(extra)
        .output()
        .expect("run crewq");
    assert!(
        output.status.success(),
        "crewq demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn check(report: &Value) {
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    for key in [
        "dispatched",
        "completed",
        "dead_lettered",
        "retried",
        "duplicates",
    ] {
        n(key);
    }
    assert_eq!(n("dispatched"), 9, "8 research tasks and a report");
    assert_eq!(n("missing"), 0, "every task ended: {report}");
    let steps = report["steps"].as_array().expect("steps");
    for step in steps {
        let s = |key: &str| step[key].as_u64().unwrap_or_default();
        assert_eq!(
            s("completed") + s("failed"),
            s("tasks"),
            "each task once: {step}"
        );
    }
    // Every failure for good went through the dead-letter stream.
    let failed: u64 = steps
        .iter()
        .map(|s| s["failed"].as_u64().unwrap_or_default())
        .sum();
    assert_eq!(failed, n("dead_lettered"), "{report}");
}

#[test]
fn demo_runs_in_memory_without_redis() {
    let report = demo(&[]);
    assert_eq!(report["backend"], "memory");
    check(&report);
}

#[test]
fn demo_runs_on_redis() {
    let server = TestRedis::start();
    let report = demo(&["--redis", server.url()]);
    assert!(
        report["backend"]
            .as_str()
            .is_some_and(|b| b.starts_with("redis://"))
    );
    check(&report);
}

#[test]
fn demo_runs_on_a_redis_cluster() {
    let cluster = TestCluster::start();
    let report = demo(&["--redis", &cluster.url(), "--cluster"]);
    check(&report);
}

#[test]
fn demo_keys_under_key_prefix_are_what_stats_and_dlq_read() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let report = demo(&["--redis", server.url(), "--key-prefix", &prefix]);
    assert_eq!(report["prefix"], prefix.as_str());
    let on = ["--redis", server.url(), "--key-prefix", &prefix, "--json"];
    let run = |args: &[&str]| -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
            .args(args)
            .args(on)
            .output()
            .expect("run crewq");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    };
    let stats = run(&["stats", "research", "report"]);
    assert_eq!(stats[0]["tasks"]["exists"], true, "{stats}");
    assert_eq!(
        stats[0]["tasks"]["entries_added"].as_u64().map(|n| n >= 8),
        Some(true)
    );
    let dead = run(&["dlq", "list", "--agent", "research"]);
    assert_eq!(
        dead.as_array().map(|d| d.len() as u64),
        report["dead_lettered"].as_u64(),
        "the demo's dead letters, listed: {dead}"
    );
}

#[test]
fn demo_skips_the_report_when_every_research_task_failed() {
    let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["demo", "--json", "--tasks", "4", "--failure-rate", "1"])
        .output()
        .expect("run crewq");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["research"], "no report of nothing: {report}");
    assert_eq!(report["dispatched"], 4);
    assert_eq!(report["dead_lettered"], 4);
}
