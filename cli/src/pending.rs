//! `crewq pending AGENT`: the entries an agent type's workers hold and have
//! not acknowledged, with which consumer holds each, for how long, how
//! often it was delivered, and the newest progress its handler reported
//! ([`Context::progress`](crewq_core::worker::Context::progress), read from
//! the agent type's progress stream).

use std::error::Error;
use std::fmt::Write as _;
use std::ops::Bound;
use std::time::Duration;

use std::collections::BTreeMap;

use crewq_core::worker::{PROGRESS_AT, PROGRESS_ENTRY_ID, PROGRESS_VALUE};
use crewq_core::{AgentType, Broker, ErrorKind, PendingQuery, task_from_fields};
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

/// The newest progress report of each entry of `entries` in `stream`:
/// the stream is read oldest first, so the last report of an entry stays.
/// A missing stream holds none.
async fn newest_progress(
    broker: &impl Broker,
    stream: &str,
    entries: &[String],
) -> crewq_core::Result<BTreeMap<String, (Value, String)>> {
    let mut newest = BTreeMap::new();
    if entries.is_empty() {
        return Ok(newest);
    }
    let reports = match broker
        .xrange(stream, (Bound::Unbounded, Bound::Unbounded), None)
        .await
    {
        Ok(reports) => reports,
        Err(err) if err.kind() == ErrorKind::NoSuchKey => return Ok(newest),
        Err(err) => return Err(err),
    };
    for report in reports {
        let text = |field| report.fields.get_str(field).unwrap_or_default().to_owned();
        let entry = text(PROGRESS_ENTRY_ID);
        if !entries.contains(&entry) {
            continue;
        }
        let raw = text(PROGRESS_VALUE);
        let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
        newest.insert(entry, (value, text(PROGRESS_AT)));
    }
    Ok(newest)
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
    for entry in broker.pending(&stream, &group, &query).await? {
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
    let ids: Vec<String> = rows.iter().map(|r| r.entry_id.clone()).collect();
    let mut newest = newest_progress(&broker, &keyspace.progress(&agent), &ids).await?;
    for row in &mut rows {
        if let Some((value, at)) = newest.remove(&row.entry_id) {
            row.progress = Some(value);
            row.progress_at = Some(at);
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
