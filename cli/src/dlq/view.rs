//! How `crewq dlq` shows dead letters: a row per entry, every field for one.

use std::fmt::Write as _;

use crewq_core::dlq::DeadLetterEntry;
use serde::Serialize;
use serde_json::Value;

/// One dead letter as `crewq dlq list --json` and `show --json` print it.
#[derive(Debug, Serialize)]
pub struct LetterView {
    /// The agent type whose dead-letter stream holds it.
    pub agent_type: String,
    /// Its id there: what `show`, `replay` and `purge` take.
    pub entry_id: String,
    /// The task's id, when the task is readable.
    pub task_id: Option<String>,
    /// The task's action, likewise.
    pub action: Option<String>,
    /// The task's trace id, likewise.
    pub trace_id: Option<String>,
    /// `max_retries`, `poison:<kind>` ...; `None` for the seed's letters.
    pub reason: Option<String>,
    /// The last error.
    pub error: String,
    /// Attempts that failed.
    pub retries: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<String>,
    /// The task stream it came from, when recorded.
    pub origin_stream: Option<String>,
    /// The task as JSON, or its bytes as text when they are not JSON.
    pub task: Value,
}

impl From<&DeadLetterEntry> for LetterView {
    fn from(entry: &DeadLetterEntry) -> Self {
        let letter = &entry.dead_letter;
        let task = serde_json::from_slice(&letter.task)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&letter.task).into_owned()));
        LetterView {
            agent_type: entry.agent_type.to_string(),
            entry_id: entry.entry_id.to_string(),
            task_id: entry.task.as_ref().map(|t| t.task_id.clone()),
            action: entry.task.as_ref().map(|t| t.action.clone()),
            trace_id: entry.task.as_ref().and_then(|t| t.trace_id.clone()),
            reason: letter.reason.as_ref().map(ToString::to_string),
            error: letter.error.clone(),
            retries: letter.retries,
            dead_lettered_at: letter.dead_lettered_at.clone(),
            origin_stream: letter.origin.as_ref().map(|o| o.stream.clone()),
            task,
        }
    }
}

/// One row per dead letter.
pub fn table(letters: &[LetterView]) -> String {
    let mut text = format!("{} dead letter(s)\n", letters.len());
    if letters.is_empty() {
        return text;
    }
    let _ = writeln!(
        text,
        "{:<12} {:<20} {:<42} {:<16} {:<18} {:>7}  error",
        "agent", "entry", "task", "action", "reason", "retries"
    );
    for letter in letters {
        let _ = writeln!(
            text,
            "{:<12} {:<20} {:<42} {:<16} {:<18} {:>7}  {}",
            letter.agent_type,
            letter.entry_id,
            letter.task_id.as_deref().unwrap_or("-"),
            letter.action.as_deref().unwrap_or("-"),
            letter.reason.as_deref().unwrap_or("-"),
            letter.retries,
            first_line(&letter.error)
        );
    }
    text
}

/// Every field of one dead letter, the task pretty-printed.
pub fn detail(letter: &LetterView) -> String {
    let none = || "-".to_owned();
    let mut text = String::new();
    let rows = [
        ("agent", letter.agent_type.clone()),
        ("entry", letter.entry_id.clone()),
        ("task", letter.task_id.clone().unwrap_or_else(none)),
        ("action", letter.action.clone().unwrap_or_else(none)),
        ("trace", letter.trace_id.clone().unwrap_or_else(none)),
        ("reason", letter.reason.clone().unwrap_or_else(none)),
        ("retries", letter.retries.to_string()),
        (
            "dead-lettered",
            letter.dead_lettered_at.clone().unwrap_or_else(none),
        ),
        ("from", letter.origin_stream.clone().unwrap_or_else(none)),
        ("error", letter.error.clone()),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "{name:<14} {value}");
    }
    let task = serde_json::to_string_pretty(&letter.task).unwrap_or_default();
    let _ = writeln!(text, "task JSON:\n{task}");
    text
}

/// An error's first line: a table row stays one line.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
