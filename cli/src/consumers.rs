//! `crewq consumers prune AGENT --idle D`: deletes the consumers of an agent
//! type's group that hold nothing and have been idle that long (workers
//! that stopped long ago). A consumer that holds entries is never deleted:
//! its entries would lose their owner.

use std::error::Error;
use std::time::Duration;

use crewq_core::{AgentType, Broker};
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
    for consumer in broker.info_consumers(&stream, &group).await? {
        if consumer.pending > 0 || consumer.idle < args.idle {
            kept += 1;
            continue;
        }
        // XINFO and XGROUP DELCONSUMER are two commands: a worker that
        // woke up between them and read would lose its entries from the
        // pending list (DELCONSUMER drops them). The window is one round
        // trip after `--idle` of silence; say so loudly if it happened.
        if !args.dry_run {
            let held = broker
                .consumer_delete(&stream, &group, &consumer.name)
                .await?;
            if held > 0 {
                return Err(format!(
                    "consumer {} read {held} entries after it was found idle, and deleting it \
                     dropped them from the pending list: they will not be redelivered \
                     unless dispatched again",
                    consumer.name
                )
                .into());
            }
        }
        pruned.push((consumer.name, consumer.idle));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let text = if args.target.json {
        let names: Vec<&str> = pruned.iter().map(|(name, _)| name.as_str()).collect();
        json!({ "pruned": names, "kept": kept, "dry_run": args.dry_run }).to_string() + "\n"
    } else {
        let mut text = format!(
            "{verb} {} consumer(s) of group '{group}', kept {kept}\n",
            pruned.len()
        );
        for (name, idle) in &pruned {
            text += &format!("  {name} (idle {})\n", show(*idle));
        }
        text
    };
    emit(&text)?;
    Ok(())
}
