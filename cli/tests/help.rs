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
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} in {help}"
        );
    }
}
