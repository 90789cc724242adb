//! The README shows each operator command with its output: a `$ crewq ...`
//! line in a `text` block, followed by what it printed. The outputs were
//! captured from a real run; this only checks none is missing, so a new
//! command (or a flag the issue names) without its transcript fails here.

use std::process::Command;

const README: &str = include_str!("../../README.md");

/// Commands of `crewq --help` shown elsewhere in the README, as the
/// `cargo run` lines of their own sections, rather than in a transcript.
const NOT_OPERATOR: &[&str] = &["sim", "bench", "help"];

/// One `$ crewq ...` line of a transcript: its words after `crewq`, and
/// the lines it printed.
struct Shown {
    words: Vec<String>,
    output: Vec<String>,
}

/// Every `$ crewq` command in `readme`'s `text` blocks, with its output:
/// the lines up to the next `$ ` prompt or the end of the block.
fn transcripts(readme: &str) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_text = false;
    let mut current: Option<Shown> = None;
    for line in readme.lines() {
        if !in_text {
            in_text = line.trim_end() == "```text";
            continue;
        }
        if line.starts_with("```") || line.starts_with("$ ") {
            shown.extend(current.take());
        }
        if line.starts_with("```") {
            in_text = false;
        } else if let Some(command) = line.strip_prefix("$ crewq ") {
            current = Some(Shown {
                words: command.split_whitespace().map(str::to_owned).collect(),
                output: Vec::new(),
            });
        } else if let Some(shown) = current.as_mut() {
            shown.output.push(line.to_owned());
        }
    }
    shown.extend(current);
    shown
}

impl Shown {
    fn starts(&self, command: &[&str]) -> bool {
        self.words.len() >= command.len() && self.words.iter().zip(command).all(|(w, c)| w == c)
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    fn printed_something(&self) -> bool {
        self.output.iter().any(|line| !line.trim().is_empty())
    }
}

/// Whether a transcript's command is the one asked for.
type Check = fn(&Shown) -> bool;

/// What issue 11 asks the README to show, each with a test on the words.
const REQUIRED: &[(&str, Check)] = &[
    ("demo --redis", |s| s.starts(&["demo"]) && s.has("--redis")),
    ("dispatch AGENT ACTION", |s| {
        s.starts(&["dispatch"]) && s.words.len() >= 3 && !s.has("<")
    }),
    ("dispatch with JSON lines on stdin", |s| {
        s.starts(&["dispatch", "<"])
    }),
    ("stats", |s| {
        s.starts(&["stats"]) && !s.has("--json") && !s.has("--watch")
    }),
    ("stats --json", |s| {
        s.starts(&["stats"]) && s.has("--json") && !s.has("--watch")
    }),
    ("stats --watch", |s| {
        s.starts(&["stats"]) && s.has("--watch")
    }),
    ("pending", |s| s.starts(&["pending"])),
    ("dlq list", |s| s.starts(&["dlq", "list"])),
    ("dlq show", |s| s.starts(&["dlq", "show"])),
    ("dlq replay", |s| s.starts(&["dlq", "replay"])),
    ("dlq purge", |s| s.starts(&["dlq", "purge"])),
    ("consumers prune", |s| {
        s.starts(&["consumers", "prune"]) && !s.has("--dry-run")
    }),
    ("task ID", |s| s.starts(&["task"]) && !s.has("--trace")),
    ("task --trace", |s| s.starts(&["task"]) && s.has("--trace")),
    ("serve", |s| s.starts(&["serve"])),
];

#[test]
fn readme_shows_each_operator_command_with_its_output() {
    let shown = transcripts(README);
    for (what, matches) in REQUIRED {
        let found: Vec<&Shown> = shown.iter().filter(|s| matches(s)).collect();
        assert!(
            !found.is_empty(),
            "README.md shows no `$ crewq {what}` in a ```text block"
        );
        assert!(
            found.iter().any(|s| s.printed_something()),
            "README.md shows `$ crewq {what}` without its output"
        );
    }
}

#[test]
fn readme_shows_every_operator_command_of_the_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .arg("--help")
        .output()
        .expect("run crewq");
    let help = String::from_utf8_lossy(&output.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"stats"), "commands of {help}");
    let shown = transcripts(README);
    for command in commands {
        if NOT_OPERATOR.contains(&command) {
            continue;
        }
        assert!(
            shown
                .iter()
                .any(|s| s.starts(&[command]) && s.printed_something()),
            "`crewq {command}` is in `crewq --help` but README.md shows no `$ crewq {command}` \
             with its output"
        );
    }
}

/// The reading itself: a prompt followed by another prompt, or by the end
/// of its block, printed nothing; `sh` blocks are not transcripts.
#[test]
fn a_prompt_without_output_reads_as_printing_nothing() {
    let sample = "```sh\n$ crewq stats a\n```\n\n```text\n$ crewq pending a\n$ crewq dlq list\n\
                  1 dead letter(s)\n\n$ crewq task t\n```\n";
    let shown = transcripts(sample);
    let read: Vec<(String, bool)> = shown
        .iter()
        .map(|s| (s.words.join(" "), s.printed_something()))
        .collect();
    assert_eq!(
        read,
        [
            ("pending a".to_owned(), false),
            ("dlq list".to_owned(), true),
            ("task t".to_owned(), false),
        ]
    );
}
