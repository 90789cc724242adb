//! `crewq task ID`: where a task is (waiting, pending with which consumer,
//! acknowledged, completed with its result, dead-lettered with its reason),
//! or with `--trace` every task of a workflow; core's [`Locator`] looks.

use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use crewq_core::locate::{Locator, Place, Sighting, Wanted};

use crate::duration::show;
use crate::out::emit;
use crate::target::{Target, agent_types};

/// `crewq task`'s options.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    pub target: Target,
    /// The task id, or with `--trace` the trace id.
    pub id: String,
    /// ID is a trace id: show every task of that workflow.
    #[arg(long)]
    pub trace: bool,
    /// The agent types to look in (repeat for more). By default the one a
    /// generated task id starts with (`research-1a2b...` is `research`).
    #[arg(long = "agent", value_name = "A")]
    pub agents: Vec<String>,
}

/// Looks the task up; fails when it is nowhere.
pub async fn run(args: TaskArgs) -> Result<(), Box<dyn Error>> {
    let names = if args.agents.is_empty() {
        match args.id.rsplit_once('-') {
            Some((agent, _)) if !args.trace => vec![agent.to_owned()],
            _ => return Err("name the agent types to look in with --agent".into()),
        }
    } else {
        args.agents.clone()
    };
    let agents = agent_types(&names)?;
    let (broker, keyspace) = args.target.open().await?;
    let wanted = if args.trace {
        Wanted::TraceId(args.id.clone())
    } else {
        Wanted::TaskId(args.id.clone())
    };
    let found = Locator::new(&broker, keyspace)
        .find(&agents, &wanted)
        .await?;
    if found.is_empty() {
        return Err(format!(
            "{} not found in the streams of {}",
            args.id,
            names.join(", ")
        )
        .into());
    }
    let text = if args.target.json {
        serde_json::to_string_pretty(&found)? + "\n"
    } else {
        table(&found)
    };
    emit(&text)?;
    Ok(())
}

fn table(found: &[Sighting]) -> String {
    let mut text = String::new();
    for sighting in found {
        let _ = writeln!(
            text,
            "{:<42} {:<12} {}",
            sighting.task_id,
            sighting.agent_type.as_str(),
            described(&sighting.place)
        );
    }
    text
}

fn described(place: &Place) -> String {
    match place {
        Place::Waiting {
            stream, entry_id, ..
        } => format!("waiting      {entry_id} in {stream}"),
        Place::Pending {
            stream,
            entry_id,
            consumer,
            deliveries,
            idle_ms,
            priority,
        } => format!(
            "pending      {entry_id}{} with {consumer}, delivered {deliveries}x, idle {}",
            lane(*priority, stream),
            show(Duration::from_millis(*idle_ms))
        ),
        Place::Acknowledged {
            stream,
            priority,
            entry_id,
        } => format!("acknowledged {entry_id}{}", lane(*priority, stream)),
        Place::Completed {
            status,
            output,
            error,
            duration_ms,
            ..
        } => {
            let detail = match (output, error) {
                (_, Some(error)) => error.clone(),
                (Some(output), None) => output.to_string(),
                (None, None) => String::new(),
            };
            format!("result       {status} in {duration_ms}ms: {detail}")
        }
        Place::Progress {
            consumer,
            attempt,
            progress,
            at,
            ..
        } => format!("progress     {progress} (attempt {attempt} on {consumer}, {at})"),
        Place::DeadLettered {
            entry_id,
            reason,
            error,
            retries,
            ..
        } => format!(
            "dead letter  {entry_id} ({}, {retries} retries): {error}",
            reason.as_deref().unwrap_or("no reason")
        ),
    }
}

/// ` in STREAM` for an entry of a priority lane, nothing for the task
/// stream's (as before lanes).
fn lane(priority: u8, stream: &str) -> String {
    if priority == 0 {
        String::new()
    } else {
        format!(" in {stream}")
    }
}
