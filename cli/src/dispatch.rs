//! `crewq dispatch`: puts tasks on their task streams with core's
//! [`Producer`] (validated, deduplicated by task id): one from the
//! arguments, or many as JSON lines on stdin.

use std::error::Error;
use std::io::BufRead;
use std::time::{Duration, UNIX_EPOCH};

use crewq_core::Task;
use crewq_core::producer::Producer;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::out::emit;
use crate::target::Target;

/// `crewq dispatch`'s options.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without AGENT and ACTION, reads one task per line on stdin: \
    {\"agent_type\": \"research\", \"action\": \"search_docs\", \"payload\": {...}} \
    with optional task_id, trace_id, priority, max_retries and timeout_ms."
)]
pub struct DispatchArgs {
    #[command(flatten)]
    pub target: Target,
    /// The agent type.
    #[arg(requires = "action")]
    pub agent: Option<String>,
    /// The action.
    pub action: Option<String>,
    /// The payload: JSON, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE", default_value = "{}")]
    pub payload: String,
    /// The trace id (the workflow it belongs to).
    #[arg(long)]
    pub trace: Option<String>,
    /// The task id; a fresh one by default. Dispatching an id again within
    /// the dedupe window appends nothing.
    #[arg(long)]
    pub task_id: Option<String>,
    /// Priority, 0 to 10.
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Retries before the task is dead-lettered.
    #[arg(long, default_value_t = crewq_core::DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,
    /// How long one run may take (`30s`, `500ms` ...), overriding the
    /// worker's time-out; at most 24h.
    #[arg(long, value_name = "D", value_parser = crate::duration::parse)]
    pub timeout: Option<std::time::Duration>,
    /// Start the task(s) this long from now (`30s`, `5m`), on the broker's
    /// clock: they wait in the agent type's delayed set until due.
    #[arg(long = "in", value_name = "DURATION", value_parser = crate::duration::parse, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Start the task(s) at this time: seconds since the Unix epoch
    /// (`date -d 16:00 +%s`). A time past is due at once.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
}

/// A task as one JSON line on stdin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    agent_type: String,
    action: String,
    #[serde(default)]
    payload: Value,
    task_id: Option<String>,
    trace_id: Option<String>,
    priority: Option<u8>,
    max_retries: Option<u32>,
    timeout_ms: Option<u64>,
}

/// Dispatches, printing each task's id and entry (or why it was refused);
/// fails when any task was not dispatched.
pub async fn run(args: DispatchArgs) -> Result<(), Box<dyn Error>> {
    let lines = match (&args.agent, &args.action) {
        (Some(agent), Some(action)) => vec![Line {
            agent_type: agent.clone(),
            action: action.clone(),
            payload: payload(&args.payload)?,
            task_id: args.task_id.clone(),
            trace_id: args.trace.clone(),
            priority: Some(args.priority),
            max_retries: Some(args.max_retries),
            timeout_ms: args
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }],
        _ => stdin_lines()?,
    };
    let mut tasks = Vec::with_capacity(lines.len());
    for (number, line) in lines.into_iter().enumerate() {
        let mut builder = Task::new(line.agent_type, line.action, line.payload)
            .priority(line.priority.unwrap_or(0))
            .max_retries(line.max_retries.unwrap_or(crewq_core::DEFAULT_MAX_RETRIES));
        if let Some(id) = line.task_id {
            builder = builder.task_id(id);
        }
        if let Some(trace) = line.trace_id {
            builder = builder.trace_id(trace);
        }
        if let Some(ms) = line.timeout_ms {
            builder = builder.timeout(std::time::Duration::from_millis(ms));
        }
        tasks.push(
            builder
                .build()
                .map_err(|e| format!("task {}: {e}", number + 1))?,
        );
    }
    let (broker, keyspace) = args.target.open().await?;
    let producer = Producer::new(broker).with_keyspace(keyspace);
    let results = match (args.delay, args.at) {
        (None, None) => producer.dispatch_batch(&tasks).await?,
        (delay, at) => {
            // One schedule per task: a later start is rarely a bulk job.
            let mut results = Vec::with_capacity(tasks.len());
            for task in &tasks {
                results.push(match (delay, at) {
                    (Some(delay), _) => producer.dispatch_in(task, delay).await,
                    (None, at) => {
                        let at = UNIX_EPOCH + Duration::from_secs(at.unwrap_or(0));
                        producer.dispatch_at(task, at).await
                    }
                });
            }
            results
        }
    };
    let mut text = String::new();
    let mut refused = 0;
    for (task, result) in tasks.iter().zip(results) {
        let row = match result {
            Ok(d) => json!({"task_id": d.task_id, "agent_type": d.agent_type, "stream": d.stream,
                            "entry_id": d.entry_id.to_string(), "duplicate": d.duplicate}),
            Err(err) => {
                refused += 1;
                json!({"task_id": task.task_id, "agent_type": task.agent_type, "error": err.to_string()})
            }
        };
        text += &if args.target.json {
            row.to_string()
        } else {
            readable(&row)
        };
        text.push('\n');
    }
    emit(&text)?;
    if refused > 0 {
        return Err(format!("{refused} of {} task(s) not dispatched", tasks.len()).into());
    }
    Ok(())
}

/// `--payload`: JSON text, or `@path` for a file holding it.
fn payload(arg: &str) -> Result<Value, Box<dyn Error>> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("--payload is not JSON: {e}").into())
}

fn stdin_lines() -> Result<Vec<Line>, Box<dyn Error>> {
    let mut lines = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push(
            serde_json::from_str(&line).map_err(|e| format!("stdin line {}: {e}", number + 1))?,
        );
    }
    if lines.is_empty() {
        return Err("nothing to dispatch: give AGENT ACTION, or JSON lines on stdin".into());
    }
    Ok(lines)
}

fn readable(row: &Value) -> String {
    let field = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
    if row["error"].is_string() {
        format!("refused   {}  {}", field("task_id"), field("error"))
    } else if row["duplicate"] == true {
        format!(
            "duplicate {}  already {} in {}",
            field("task_id"),
            field("entry_id"),
            field("stream")
        )
    } else if row["entry_id"] == "0-0" {
        format!(
            "scheduled  {}  in the delayed set of {}",
            field("task_id"),
            field("stream")
        )
    } else {
        format!(
            "dispatched {}  {} in {}",
            field("task_id"),
            field("entry_id"),
            field("stream")
        )
    }
}
