//! `crewq --help` says what crewq is and lists every command.

use std::process::Command;

#[test]
fn top_level_help_says_what_crewq_is_and_lists_the_commands() {
    let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .arg("--help")
        .output()
        .expect("run crewq");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("task queue for AI agent crews on Redis Streams"),
        "{help}"
    );
    assert!(
        help.contains("dead-lettered"),
        "the long description: {help}"
    );
    for command in [
        "demo",
        "sim",
        "bench",
        "stats",
        "pending",
        "dlq",
        "dispatch",
        "consumers",
        "task",
        "serve",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} in {help}"
        );
    }
}

#[test]
fn max_retries_means_the_same_in_demo_and_sim() {
    let line = |command: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
            .args([command, "--help"])
            .output()
            .expect("run crewq");
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("--max-retries"))
            .expect("a --max-retries flag");
        // "--max-retries <MAX_RETRIES>  <what it means> [default: N]"
        let described = line.split_once('>').map_or("", |(_, rest)| rest);
        let described = described.split(" [default").next().unwrap_or_default();
        described.trim().to_owned()
    };
    let (demo, sim) = (line("demo"), line("sim"));
    assert_eq!(demo, sim);
    assert!(demo.contains("at most this many + 1 times"), "{demo}");
}
