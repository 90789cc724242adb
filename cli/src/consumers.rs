//! `crewq consumers prune AGENT --idle D`: deletes the consumers of an agent
//! type's group that hold nothing and have been idle that long (workers
//! that stopped long ago). A consumer that holds entries is never deleted:
//! its entries would lose their owner.
//!
//! The listing (`XINFO CONSUMERS`) only picks candidates. Each one is then
//! deleted by [`Broker::consumer_delete_if_idle`], which checks again and
//! deletes in one atomic step: a worker that woke up and read since the
//! listing keeps its consumer and what it read.

use std::error::Error;
use std::time::Duration;

use crewq_core::{AgentType, Broker, ConsumerPruned};
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
    let (stream, group) = (keyspace.tasks(&agent), keyspace.group(&agent));
    let mut pruned = Vec::new();
    let mut kept = 0;
    let mut came_back = Vec::new();
    for consumer in broker.info_consumers(&stream, &group).await? {
        if consumer.pending > 0 || consumer.idle < args.idle {
            kept += 1;
            continue;
        }
        if args.dry_run {
            pruned.push((consumer.name, consumer.idle));
            continue;
        }
        match broker
            .consumer_delete_if_idle(&stream, &group, &consumer.name, args.idle)
            .await?
        {
            ConsumerPruned::Deleted { idle } => pruned.push((consumer.name, idle)),
            // It read or claimed since the listing: a live worker after all.
            ConsumerPruned::Busy { .. } | ConsumerPruned::Active { .. } => {
                kept += 1;
                came_back.push(consumer.name);
            }
            // Someone else deleted it meanwhile: neither pruned nor kept.
            ConsumerPruned::Missing => {}
        }
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let text = if args.target.json {
        let names: Vec<&str> = pruned.iter().map(|(name, _)| name.as_str()).collect();
        json!({
            "pruned": names,
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
        for (name, idle) in &pruned {
            text += &format!("  {name} (idle {})\n", show(*idle));
        }
        for name in &came_back {
            text += &format!("  kept {name}: it read or claimed since it was listed\n");
        }
        text
    };
    emit(&text)?;
    Ok(())
}
