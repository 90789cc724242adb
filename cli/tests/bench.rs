//! `crewq bench` runs the real Producer and Worker to the end and its
//! `--json` report adds up; a peak RSS over `--max-rss-mb` fails the run.

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["bench", "--json", "--tasks", "500", "--producers", "2"])
        .args(args)
        .output()
        .expect("run crewq")
}

#[test]
fn a_memory_run_reports_every_task_completed() {
    let output = bench(&["--workers", "3", "--batch", "64"]);
    assert!(
        output.status.success(),
        "crewq bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let n = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    assert_eq!(n("tasks"), 500.0);
    assert_eq!(n("completed"), 500.0);
    assert_eq!(n("handled"), 500.0, "each task ran once");
    assert!(n("seconds") > 0.0 && n("tasks_per_sec") > 0.0);
    assert!(n("p50_us") <= n("p99_us") && n("p99_us") <= n("p999_us"));
    assert_eq!(report["backend"], "memory");
}

#[test]
fn an_open_loop_run_reports_its_schedule_lag() {
    let output = bench(&["--rate", "5000", "--dedupe-window-secs", "10"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["rate"], 5000.0);
    assert!(report["max_schedule_lag_us"].is_u64(), "{report}");
}

#[test]
#[cfg(target_os = "linux")] // the peak comes from /proc
fn a_peak_rss_over_the_bound_fails_the_run() {
    let output = bench(&["--max-rss-mb", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-rss-mb 1"), "{stderr}");
}

/// The JSON report of a successful run.
fn report_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "crewq bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[test]
fn tasks_dealt_to_several_agent_types_all_complete_in_memory() {
    let report = report_of(&bench(&["--agent-types", "3", "--workers", "1"]));
    assert_eq!(report["agent_types"], 3);
    assert_eq!(report["completed"], 500);
    assert_eq!(report["handled"], 500);
}

#[test]
fn tasks_dealt_to_agent_types_on_every_master_of_a_cluster_all_complete() {
    let cluster = crewq_tests::redis_cluster::TestCluster::start();
    let seeds = cluster.seeds();
    let report = report_of(&bench(&[
        "--broker",
        &seeds,
        "--cluster",
        "--agent-types",
        "6",
        "--workers",
        "1",
    ]));
    assert_eq!(report["agent_types"], 6);
    assert_eq!(report["completed"], 500);
    assert_eq!(report["handled"], 500);
}

/// `--fail-rate`: the chosen share of tasks fails its first attempt and
/// succeeds on its retry (promoted from the delayed set); the report counts
/// the failures, the retries and the steady tasks apart.
#[test]
fn a_run_with_failing_first_attempts_retries_each_once_and_counts_them() {
    let report = report_of(&bench(&[
        "--fail-rate",
        "0.2",
        "--handler-ms",
        "1",
        "--concurrency",
        "8",
    ]));
    let n = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    let failed = n("failed_attempts");
    // 20% of 500 by hash: far from 0 and from 500.
    assert!((50.0..=150.0).contains(&failed), "{report}");
    assert_eq!(n("retried"), failed, "each failed attempt retried once");
    assert_eq!(n("completed"), 500.0);
    assert_eq!(n("dead_lettered"), 0.0);
    assert_eq!(n("handled"), 500.0 + failed, "a second attempt each");
    assert_eq!(n("steady_tasks"), 500.0 - failed);
    assert!(n("steady_per_sec") > 0.0 && n("attempts_per_sec") > 0.0);
    assert_eq!(report["fail_rate"], 0.2);
    assert_eq!(report["handler_ms"], 1);
}

/// Without failures every task is steady, and with `--handler-ms` a slot
/// holds each task that long: 2 workers of 5 slots at 20 ms take at least
/// a second for 500 tasks.
#[test]
fn handler_time_bounds_a_slot_bound_run() {
    let report = report_of(&bench(&[
        "--workers",
        "2",
        "--concurrency",
        "5",
        "--handler-ms",
        "20",
    ]));
    assert_eq!(report["steady_tasks"], 500);
    assert_eq!(report["failed_attempts"], 0);
    let seconds = report["seconds"].as_f64().expect("seconds");
    assert!(seconds >= 1.0, "{report}");
}

#[test]
fn a_shared_rate_limit_is_used_and_reported() {
    let report = report_of(&bench(&[
        "--rate-limit-starts",
        "1000000",
        "--rate-limit-running",
        "1000",
    ]));
    assert_eq!(report["rate_limit"], "1000000/1000ms, 1000 running");
    assert_eq!(report["completed"], 500);
}

#[test]
fn bad_fail_rates_and_rate_limits_are_refused() {
    for args in [
        &["--fail-rate", "1.5"][..],
        &["--fail-rate", "NaN"],
        &["--rate-limit-starts", "0"],
        &["--rate-limit-running", "0"],
    ] {
        let output = bench(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

/// The pids of the running `redis-server` processes whose parent is `pid`.
fn redis_children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `/proc/<pid>/stat`: "pid (comm) state ppid ...".
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                return false;
            };
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            comm.ends_with("(redis-server") && ppid == Some(pid) && state != Some("Z")
        })
        .collect()
}

/// Whether process `pid` is still running (a zombie is not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.split_once(") ")?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Found in issue 11: `crewq bench --spawn-redis` killed with `SIGTERM`
/// left its redis-server running (drop never ran). A watchdog now kills it
/// once the bench's process is gone.
#[test]
fn a_bench_killed_with_sigterm_leaves_no_redis_server_behind() {
    use std::time::{Duration, Instant};
    let mut bench = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["bench", "--spawn-redis", "--tasks", "100000000", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run crewq bench");
    let deadline = Instant::now() + Duration::from_secs(60);
    let server = loop {
        if let Some(&pid) = redis_children(bench.id()).first() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the bench started no redis-server within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -TERM failed");
    let _ = bench.wait();
    // Wide margin: the watchdog looks every 0.2 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(server) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = running(server);
    if left {
        // Leave the machine as it was, then fail.
        let _ = Command::new("kill")
            .args(["-9", &server.to_string()])
            .status();
    }
    assert!(
        !left,
        "redis-server {server} still runs after its bench got SIGTERM"
    );
}

/// `WAIT` calls a server ran (its `INFO commandstats`; 0 when none).
fn waits_run(server: &crewq_tests::redis_server::TestRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.raw_connection())
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[test]
fn wait_replicas_makes_every_dispatch_wait_and_a_missing_replica_fails_the_run() {
    let server = crewq_tests::redis_server::TestRedis::start_with_args(&[]);
    let replica = server.start_replica();
    let waiting = ["--broker", server.url(), "--wait-replicas", "1"];
    let report = report_of(&bench(&waiting));
    assert_eq!(report["wait_replicas"], 1);
    assert_eq!(report["completed"], 500);
    assert!(waits_run(&server) > 0, "dispatches sent WAIT");

    drop(replica);
    let output = bench(&[&waiting[..], &["--wait-timeout", "100ms"]].concat());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not yet replicated"), "{stderr}");
}

/// Found in issue 11: `crewq bench` said it emptied its keys but left its
/// streams, and one dedupe marker per task. On a private server nothing
/// else writes, so after a run with a dedupe window, failing first
/// attempts (the delayed set) and a shared rate limit (its keys) the server
/// is empty.
#[test]
fn a_bench_on_redis_leaves_no_key_behind() {
    let server = crewq_tests::redis_server::TestRedis::start_with_args(&[]);
    let output = bench(&[
        "--broker",
        server.url(),
        "--dedupe-window-secs",
        "60",
        "--agent-types",
        "2",
        "--fail-rate",
        "0.1",
        "--rate-limit-starts",
        "1000000",
    ]);
    let report = report_of(&output);
    assert_eq!(report["completed"], 500);
    let left: u64 = redis::cmd("DBSIZE")
        .query(&mut server.raw_connection())
        .expect("DBSIZE");
    assert_eq!(left, 0, "keys left behind by the bench");
}
