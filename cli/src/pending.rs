//! `crewq pending AGENT`: the entries an agent type's workers hold and have
//! not acknowledged, with which consumer holds each, for how long, how
//! often it was delivered, and the newest progress its handler reported
//! ([`Context::progress`](crewq_core::worker::Context::progress), read from
//! the agent type's progress stream by
//! [`Monitor::progress`](crewq_core::monitor::Monitor::progress)).

use std::error::Error;
use std::fmt::Write as _;
use std::ops::Bound;
use std::time::Duration;

use crewq_core::monitor::Monitor;
use crewq_core::{AgentType, Broker, PendingQuery, task_from_fields};
use serde::Serialize;
use serde_json::Value;

use crate::duration::show;
use crate::out::emit;
use crate::target::Target;

/// `crewq pending`'s options.
#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    #[command(flatten)]
    pub target: Target,
    /// The agent type.
    pub agent: String,
    /// Only entries this consumer holds.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only entries idle (not delivered or claimed) at least this long:
    /// `30s`, `5m`.
    #[arg(long, value_parser = crate::duration::parse)]
    pub min_idle: Option<Duration>,
    /// At most this many entries, oldest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// One pending entry.
#[derive(Debug, Serialize)]
pub struct PendingRow {
    /// Its id in the task stream.
    pub entry_id: String,
    /// The consumer that holds it.
    pub consumer: String,
    /// Since it was last delivered or claimed, in ms.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// The task's id, when the entry is still in the stream and a task.
    pub task_id: Option<String>,
    /// The task's action, likewise.
    pub action: Option<String>,
    /// The newest progress a handler reported for this entry (JSON; a
    /// report that is not JSON as a string), if any is still kept.
    pub progress: Option<Value>,
    /// When that report was made (UTC, Python's `isoformat()`).
    pub progress_at: Option<String>,
}

/// Lists the pending entries.
pub async fn run(args: PendingArgs) -> Result<(), Box<dyn Error>> {
    let (broker, keyspace) = args.target.open().await?;
    let agent = AgentType::new(args.agent.as_str())?;
    let (stream, group) = (keyspace.tasks(&agent), keyspace.group(&agent));
    let mut query = PendingQuery::new(args.limit);
    if let Some(consumer) = &args.consumer {
        query = query.consumer(consumer.as_str());
    }
    if let Some(idle) = args.min_idle {
        query = query.min_idle(idle);
    }
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for entry in broker.pending(&stream, &group, &query).await? {
        ids.push(entry.id);
        let range = (Bound::Included(entry.id), Bound::Included(entry.id));
        let task = broker
            .xrange(&stream, range, Some(1))
            .await?
            .into_iter()
            .next()
            .and_then(|e| task_from_fields::<Value>(&e.fields).ok());
        rows.push(PendingRow {
            entry_id: entry.id.to_string(),
            consumer: entry.consumer,
            idle_ms: u64::try_from(entry.idle.as_millis()).unwrap_or(u64::MAX),
            deliveries: entry.deliveries,
            task_id: task.as_ref().map(|t| t.task_id.clone()),
            action: task.map(|t| t.action),
            progress: None,
            progress_at: None,
        });
    }
    let mut newest = Monitor::new(&broker, keyspace)
        .progress(&agent, &ids)
        .await?;
    for (row, id) in rows.iter_mut().zip(&ids) {
        if let Some(progress) = newest.remove(id) {
            row.progress = Some(progress.value);
            row.progress_at = Some(progress.at);
        }
    }
    let text = if args.target.json {
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        table(&stream, &group, &rows)
    };
    emit(&text)?;
    Ok(())
}

fn table(stream: &str, group: &str, rows: &[PendingRow]) -> String {
    let mut text = format!("{} pending in group '{group}' of {stream}\n", rows.len());
    if rows.is_empty() {
        return text;
    }
    let _ = writeln!(
        text,
        "{:<20} {:<24} {:>10} {:>10}  {:<42} {:<16} progress",
        "entry", "consumer", "idle", "deliveries", "task", "action"
    );
    for row in rows {
        let _ = writeln!(
            text,
            "{:<20} {:<24} {:>10} {:>10}  {:<42} {:<16} {}",
            row.entry_id,
            row.consumer,
            show(Duration::from_millis(row.idle_ms)),
            row.deliveries,
            row.task_id.as_deref().unwrap_or("-"),
            row.action.as_deref().unwrap_or("-"),
            row.progress.as_ref().map_or_else(|| "-".to_owned(), short)
        );
    }
    text
}

/// A progress report on one line, cut to 60 characters.
fn short(value: &Value) -> String {
    const MAX: usize = 60;
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r'], " ");
    if text.chars().count() <= MAX {
        return text;
    }
    let mut cut: String = text.chars().take(MAX - 3).collect();
    cut.push_str("...");
    cut
}
