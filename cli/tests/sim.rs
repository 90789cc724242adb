//! `crewq sim` runs one seed, a campaign, a double run, a mutant (which must
//! fail, naming the command that replays it) and a scenario on a private
//! Redis; its `--json` object has the fields scripts rely on.

use std::process::{Command, Output};

use crewq_tests::redis_cluster::TestCluster;
use crewq_tests::redis_server::TestRedis;
use serde_json::Value;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crewq"))
        .arg("sim")
        .args(args)
        .output()
        .expect("run crewq")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "one JSON object ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

#[test]
fn one_seed_reports_its_tasks_and_trace_hash() {
    let output = sim(&["--seed", "7", "--tasks", "40", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let report = json(&output);
    assert_eq!(n(&report, "seeds"), 1);
    // The standard plan destroys the worker group once: finished tasks may
    // run again (duplicated, or replayed and counted apart), none is lost.
    let ended = ["ok", "duplicated", "dead_lettered", "replayed"]
        .iter()
        .map(|key| n(&report, key))
        .sum::<u64>();
    assert_eq!(ended, 40, "{report}");
    for key in ["lost", "stuck", "unexpected", "violations"] {
        assert_eq!(n(&report, key), 0, "{key}: {report}");
    }
    assert!(report["seeds_per_sec"].as_f64().is_some(), "{report}");
    let hash = report["trace_hash"].as_str().expect("a trace hash");
    assert_eq!(hash.len(), 16, "{hash}");

    // The same seed, the same hash; the text form shows it too.
    let again = sim(&["--seed", "7", "--tasks", "40"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!("trace {hash}")));
}

#[test]
fn a_campaign_and_a_double_run_pass() {
    let campaign = sim(&["--seeds", "16", "--tasks", "30", "--swarm", "--json"]);
    assert!(campaign.status.success(), "{campaign:?}");
    let report = json(&campaign);
    assert_eq!(
        (n(&report, "seeds"), n(&report, "passed")),
        (16, 16),
        "{report}"
    );
    assert!(
        report.get("trace_hash").is_none(),
        "no single hash for a campaign"
    );

    let double = sim(&["--seeds", "4", "--tasks", "30", "--double-run", "--json"]);
    assert!(double.status.success(), "{double:?}");
    assert_eq!(n(&json(&double), "passed"), 4);
}

#[test]
fn a_mutant_fails_with_the_seed_and_its_replay_command() {
    let output = sim(&["--seeds", "3", "--mutant", "dlq-without-ack"]);
    assert_eq!(output.status.code(), Some(1), "the checker must catch it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FAILED seed 1"), "{stderr}");
    assert!(
        stderr.contains("replay: crewq sim --seed 1 --mutant dlq-without-ack"),
        "{stderr}"
    );
    // The replay command reproduces the failure.
    let replay = sim(&["--seed", "1", "--mutant", "dlq-without-ack", "--json"]);
    assert_eq!(replay.status.code(), Some(1));
    assert!(n(&json(&replay), "violations") > 0);
}

/// A double run checks each run's invariants, not only that the two
/// histories agree: a mutant repeats its broken history faithfully.
#[test]
fn a_double_run_of_a_mutant_fails_with_a_violation() {
    let output = sim(&[
        "--seeds",
        "5",
        "--mutant",
        "no-reclaim",
        "--double-run",
        "--json",
    ]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(n(&report, "violations") > 0, "{report}");
    assert!(n(&report, "passed") < 5, "{report}");
    assert!(
        n(&report, "ok") > 0,
        "each run's tasks are counted: {report}"
    );
    let replay = report["replay"].as_str().expect("a replay command");
    assert!(
        replay.ends_with("--mutant no-reclaim --double-run"),
        "{replay}"
    );
}

/// A usage error exits 2, a caught violation 1: a script counting caught
/// mutants can tell a misspelled name from a catch.
#[test]
fn an_unknown_mutant_exits_2_naming_the_known_ones() {
    let output = sim(&["--seeds", "5", "--mutant", "no-such-mutant", "--json"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "no report: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown mutant 'no-such-mutant'"),
        "{stderr}"
    );
    assert!(stderr.contains("ack-before-handle"), "{stderr}");
}

/// A campaign of no seed, or of a scenario that cannot run, is refused as
/// a usage error instead of passing having checked nothing.
#[test]
fn no_seeds_or_an_impossible_scenario_exits_2() {
    let none = sim(&["--seeds", "0", "--json"]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("at least one seed"), "{stderr}");

    let lease = sim(&["--seeds", "2", "--lease-ms", "1", "--json"]);
    assert_eq!(lease.status.code(), Some(2), "{lease:?}");
    let stderr = String::from_utf8_lossy(&lease.stderr);
    assert!(
        stderr.contains("the lease must be at least 20 ms"),
        "{stderr}"
    );
}

#[test]
fn a_scenario_runs_on_redis() {
    let redis = TestRedis::start();
    let prefix = redis.unique_prefix();
    let output = sim(&[
        "--seed",
        "2",
        "--tasks",
        "20",
        "--workers",
        "2",
        "--redis",
        redis.url(),
        "--key-prefix",
        &prefix,
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let report = json(&output);
    assert_eq!(
        n(&report, "ok") + n(&report, "dead_lettered"),
        20,
        "{report}"
    );
    assert_eq!(report["backend"], redis.url());
}

#[test]
fn a_scenario_runs_on_a_redis_cluster() {
    let cluster = TestCluster::start();
    let prefix = cluster.unique_prefix();
    let seeds = cluster.seeds();
    let output = sim(&[
        "--seed",
        "2",
        "--tasks",
        "20",
        "--workers",
        "2",
        "--redis",
        &seeds,
        "--cluster",
        "--key-prefix",
        &prefix,
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let report = json(&output);
    assert_eq!(
        n(&report, "ok") + n(&report, "dead_lettered"),
        20,
        "{report}"
    );
}
