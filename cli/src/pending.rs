//! `crewq pending AGENT`: the entries an agent type's workers hold and have
//! not acknowledged, with which consumer holds each, for how long, how
//! often it was delivered, and the newest progress its handler reported
//! ([`Context::progress`](crewq_core::worker::Context::progress), read from
//! the agent type's progress stream by
//! [`Monitor::progress`](crewq_core::monitor::Monitor::progress)). Every
//! priority lane in use is listed: each entry says its lane.

use std::error::Error;
use std::fmt::Write as _;
use std::ops::Bound;
use std::time::Duration;

use crewq_core::monitor::Monitor;
use crewq_core::{AgentType, Broker, ErrorKind, PendingQuery, Priority, task_from_fields};
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
    /// At most this many entries, oldest first (over every lane).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// One pending entry.
#[derive(Debug, Serialize)]
pub struct PendingRow {
    /// Its id in the task stream.
    pub entry_id: String,
    /// The task stream: the agent type's, or a priority lane's.
    pub stream: String,
    /// The lane's priority (0: the agent type's task stream).
    pub priority: u8,
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
    // Each lane's oldest `limit`, then the oldest `limit` of all (ids are
    // times). A lane missing is empty; lane 0's error stands when every
    // lane is missing, as before lanes.
    let mut held = Vec::new();
    let mut lanes = Vec::new();
    let mut missing = None;
    for priority in (0..=10u8).filter_map(|p| Priority::new(p).ok()) {
        let lane = keyspace.lane(&agent, priority);
        match broker.pending(&lane, &group, &query).await {
            Ok(entries) => {
                lanes.push(u8::from(priority));
                held.extend(
                    entries
                        .into_iter()
                        .map(|e| (u8::from(priority), lane.clone(), e)),
                );
            }
            Err(err) if matches!(err.kind(), ErrorKind::NoSuchKey | ErrorKind::NoGroup) => {
                if priority == Priority::MIN {
                    missing = Some(err);
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    if let (true, Some(err)) = (lanes.is_empty(), missing) {
        return Err(err.into());
    }
    held.sort_by_key(|(priority, _, entry)| (entry.id, *priority));
    held.truncate(args.limit);
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for (priority, lane, entry) in held {
        ids.push(entry.id);
        let range = (Bound::Included(entry.id), Bound::Included(entry.id));
        let task = broker
            .xrange(&lane, range, Some(1))
            .await?
            .into_iter()
            .next()
            .and_then(|e| task_from_fields::<Value>(&e.fields).ok());
        rows.push(PendingRow {
            entry_id: entry.id.to_string(),
            stream: lane,
            priority,
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
        table(&stream, &group, &lanes, &rows)
    };
    emit(&text)?;
    Ok(())
}

fn table(stream: &str, group: &str, lanes: &[u8], rows: &[PendingRow]) -> String {
    let above: Vec<String> = lanes
        .iter()
        .filter(|p| **p > 0)
        .map(|p| format!("@{p}"))
        .collect();
    let mut text = format!("{} pending in group '{group}' of {stream}", rows.len());
    if !above.is_empty() {
        let _ = write!(text, " and its lanes {}", above.join(" "));
    }
    text.push('\n');
    if rows.is_empty() {
        return text;
    }
    // The lane column only when a lane above 0 holds some: a crew without
    // priorities reads as before lanes.
    let laned = rows.iter().any(|row| row.priority > 0);
    let lane = |label: String| {
        if laned {
            format!("{label:>4} ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        text,
        "{:<20} {}{:<24} {:>10} {:>10}  {:<42} {:<16} progress",
        "entry",
        lane("lane".to_owned()),
        "consumer",
        "idle",
        "deliveries",
        "task",
        "action"
    );
    for row in rows {
        let _ = writeln!(
            text,
            "{:<20} {}{:<24} {:>10} {:>10}  {:<42} {:<16} {}",
            row.entry_id,
            lane(format!("@{}", row.priority)),
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
