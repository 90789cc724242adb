//! `crewq consumers prune AGENT --idle D`: deletes the consumers of an agent
//! type's group that hold nothing and have been idle that long (workers
//! that stopped long ago). A consumer that holds entries is never deleted:
//! its entries would lose their owner.
//!
//! The listing (`XINFO CONSUMERS`) only picks candidates. Each one is then
//! deleted by [`Broker::consumer_delete_if_idle`], which checks again and
//! deletes in one atomic step: a worker that woke up and read since the
//! listing keeps its consumer and what it read.
//!
//! A worker has a consumer in the group of every priority lane it reads
//! (the same group name on each lane's stream): each lane in use is pruned
//! on its own, a consumer that holds entries in one lane kept there.

use std::error::Error;
use std::time::Duration;

use crewq_core::{AgentType, Broker, ConsumerPruned, ErrorKind, Priority};
use serde_json::json;

use crate::duration::show;
use crate::out::emit;
use crate::target::Target;

/// `crewq consumers`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConsumersCommand {
    /// Deletes idle consumers with nothing pending.
    Prune(PruneArgs),
}

/// `crewq consumers prune`'s options.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub target: Target,
    /// The agent type.
    pub agent: String,
    /// Only consumers idle at least this long: `10m`, `1d`.
    #[arg(long, value_parser = crate::duration::parse)]
    pub idle: Duration,
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a `crewq consumers` subcommand.
pub async fn run(command: ConsumersCommand) -> Result<(), Box<dyn Error>> {
    let ConsumersCommand::Prune(args) = command;
    let (broker, keyspace) = args.target.open().await?;
    let agent = AgentType::new(args.agent.as_str())?;
    let group = keyspace.group(&agent);
    let mut pruned = Vec::new();
    let mut kept = 0;
    let mut came_back = Vec::new();
    let mut found = false;
    let mut missing = None;
    for priority in (0..=10u8).filter_map(|p| Priority::new(p).ok()) {
        let stream = keyspace.lane(&agent, priority);
        let lane = u8::from(priority);
        let consumers = match broker.info_consumers(&stream, &group).await {
            Ok(consumers) => consumers,
            Err(err) if matches!(err.kind(), ErrorKind::NoSuchKey | ErrorKind::NoGroup) => {
                if priority == Priority::MIN {
                    missing = Some(err);
                }
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        found = true;
        for consumer in consumers {
            if consumer.pending > 0 || consumer.idle < args.idle {
                kept += 1;
                continue;
            }
            if args.dry_run {
                pruned.push((consumer.name, lane, consumer.idle));
                continue;
            }
            match broker
                .consumer_delete_if_idle(&stream, &group, &consumer.name, args.idle)
                .await?
            {
                ConsumerPruned::Deleted { idle } => pruned.push((consumer.name, lane, idle)),
                // It read or claimed since the listing: a live worker after all.
                ConsumerPruned::Busy { .. } | ConsumerPruned::Active { .. } => {
                    kept += 1;
                    came_back.push((consumer.name, lane));
                }
                // Someone else deleted it meanwhile: neither pruned nor kept.
                ConsumerPruned::Missing => {}
            }
        }
    }
    if let (false, Some(err)) = (found, missing) {
        return Err(err.into());
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let text = if args.target.json {
        let names: Vec<&str> = pruned.iter().map(|(name, ..)| name.as_str()).collect();
        let lanes: Vec<u8> = pruned.iter().map(|(_, lane, _)| *lane).collect();
        let came_back: Vec<&str> = came_back.iter().map(|(name, _)| name.as_str()).collect();
        json!({
            "pruned": names,
            "pruned_lanes": lanes,
            "kept": kept,
            "came_back": came_back,
            "dry_run": args.dry_run,
        })
        .to_string()
            + "\n"
    } else {
        let mut text = format!(
            "{verb} {} consumer(s) of group '{group}', kept {kept}\n",
            pruned.len()
        );
        for (name, lane, idle) in &pruned {
            text += &format!("  {name}{} (idle {})\n", in_lane(*lane), show(*idle));
        }
        for (name, lane) in &came_back {
            text += &format!(
                "  kept {name}{}: it read or claimed since it was listed\n",
                in_lane(*lane)
            );
        }
        text
    };
    emit(&text)?;
    Ok(())
}

/// ` in lane @P` for a lane above 0, nothing for the task stream.
fn in_lane(priority: u8) -> String {
    if priority == 0 {
        String::new()
    } else {
        format!(" in lane @{priority}")
    }
}
