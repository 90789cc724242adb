//! An unreachable Redis: the operator commands give up after
//! `--connect-timeout` with one error that names the address, each cause
//! printed once, whether the server refuses or accepts and never answers.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn stats_on(url: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args([
            "stats",
            "research",
            "--redis",
            url,
            "--connect-timeout",
            "1s",
        ])
        .output()
        .expect("run crewq");
    (output, started.elapsed())
}

fn check(output: &Output, took: Duration, url: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("could not connect") && stderr.contains(url),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let distinct: BTreeSet<&str> = lines.iter().map(|l| l.trim()).collect();
    assert_eq!(distinct.len(), lines.len(), "a line repeated: {stderr}");
}

#[test]
fn a_refused_connection_fails_within_the_connect_timeout() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let (output, took) = stats_on(&url);
    check(&output, took, &url);
}

#[test]
fn a_silent_server_fails_within_the_connect_timeout() {
    // Accepts connections (the kernel's backlog) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "redis://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (output, took) = stats_on(&url);
    check(&output, took, &url);
    drop(listener);
}
