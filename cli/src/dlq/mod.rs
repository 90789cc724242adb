//! `crewq dlq`: list, show, replay and purge dead letters, with core's
//! [`DeadLetters`]. Replay and purge ask first on a terminal; elsewhere they
//! need `--yes`.

pub(crate) mod view;

use std::error::Error;
use std::io::{BufRead, IsTerminal, Write};

use crewq_core::dlq::{DeadLetters, DlqFilter};
use crewq_core::{AgentType, Broker, StreamId};
use serde_json::json;

use crate::out::emit;
use crate::target::{Target, agent_types};
use view::LetterView;

/// `crewq dlq`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters, oldest first.
    List(Select),
    /// Shows one dead letter, its task in full.
    Show(ById),
    /// Puts dead letters back on their task stream (each in one atomic
    /// step), where workers run them again with all their attempts.
    Replay(Destructive),
    /// Deletes dead letters for good.
    Purge(Destructive),
}

/// Which dead letters, by filters.
#[derive(Debug, clap::Args)]
pub struct Select {
    #[command(flatten)]
    pub target: Target,
    /// The agent types whose dead-letter streams to read (repeat for more).
    #[arg(long = "agent", value_name = "A", required = true)]
    pub agents: Vec<String>,
    /// Only reasons starting with this (`max_retries`, `poison` ...).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Only tasks of this trace id.
    #[arg(long, value_name = "T")]
    pub trace: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// One dead letter, by id.
#[derive(Debug, clap::Args)]
pub struct ById {
    #[command(flatten)]
    pub target: Target,
    /// The agent type whose dead-letter stream holds it.
    #[arg(long = "agent", value_name = "A")]
    pub agent: String,
    /// Its entry id (as `crewq dlq list` shows it).
    pub id: StreamId,
}

/// Replay's and purge's selection: one id, `--all`, or filters.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all", "reason", "trace"])))]
pub struct Destructive {
    #[command(flatten)]
    pub select: Select,
    /// One dead letter by entry id (with exactly one `--agent`).
    #[arg(conflicts_with_all = ["all", "reason", "trace", "limit"])]
    pub id: Option<StreamId>,
    /// Every dead letter of the agent types.
    #[arg(long, conflicts_with_all = ["reason", "trace"])]
    pub all: bool,
    /// Do it without asking.
    #[arg(long)]
    pub yes: bool,
}

impl DlqCommand {
    fn target(&self) -> &Target {
        match self {
            DlqCommand::List(select) => &select.target,
            DlqCommand::Show(by_id) => &by_id.target,
            DlqCommand::Replay(d) | DlqCommand::Purge(d) => &d.select.target,
        }
    }
}

/// Runs one `crewq dlq` subcommand.
pub async fn run(command: DlqCommand) -> Result<(), Box<dyn Error>> {
    let target = command.target();
    let json = target.json;
    let (broker, keyspace) = target.open().await?;
    let letters = DeadLetters::new(&broker, keyspace);
    let text = match &command {
        DlqCommand::List(select) => {
            let listed = letters.list(&filter(select)?).await?;
            let views: Vec<LetterView> = listed.iter().map(LetterView::from).collect();
            if json {
                serde_json::to_string_pretty(&views)? + "\n"
            } else {
                view::table(&views)
            }
        }
        DlqCommand::Show(by_id) => {
            let agent = AgentType::new(by_id.agent.as_str())?;
            let entry = letters
                .inspect(&agent, by_id.id)
                .await?
                .ok_or_else(|| format!("no dead letter {} for agent type {agent}", by_id.id))?;
            let view = LetterView::from(&entry);
            if json {
                serde_json::to_string_pretty(&view)? + "\n"
            } else {
                view::detail(&view)
            }
        }
        DlqCommand::Replay(d) => replay(&letters, d).await?,
        DlqCommand::Purge(d) => purge(&letters, &&broker, d).await?,
    };
    emit(&text)?;
    Ok(())
}

async fn replay<B: Broker>(
    letters: &DeadLetters<B>,
    d: &Destructive,
) -> Result<String, Box<dyn Error>> {
    let json = d.select.target.json;
    if let Some(id) = d.id {
        let agent = only_agent(&d.select)?;
        confirm(d, &format!("replay dead letter {id} of {agent}"))?;
        let replayed = letters.replay(&agent, id).await?;
        return Ok(if json {
            json!({"replayed": [{"entry_id": id.to_string(), "task_id": replayed.task_id,
                    "new_entry_id": replayed.new_entry_id.to_string()}], "skipped": []})
            .to_string()
                + "\n"
        } else {
            format!(
                "replayed {id} as task entry {} (task {})\n",
                replayed.new_entry_id, replayed.task_id
            )
        });
    }
    let filter = filter(&d.select)?;
    confirm(d, &format!("replay {}", described(&filter)))?;
    let report = letters.replay_matching(&filter).await?;
    if json {
        let replayed: Vec<_> = report
            .replayed
            .iter()
            .map(|r| {
                json!({"agent_type": r.agent_type.as_str(), "entry_id": r.dlq_entry_id.to_string(),
                            "task_id": r.task_id, "new_entry_id": r.new_entry_id.to_string()})
            })
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|s| {
                json!({"agent_type": s.agent_type.as_str(), "entry_id": s.entry_id.to_string(),
                            "reason": s.reason})
            })
            .collect();
        return Ok(json!({"replayed": replayed, "skipped": skipped}).to_string() + "\n");
    }
    let mut text = format!(
        "replayed {}, skipped {}\n",
        report.replayed.len(),
        report.skipped.len()
    );
    for skipped in &report.skipped {
        text += &format!(
            "  skipped {} of {}: {}\n",
            skipped.entry_id, skipped.agent_type, skipped.reason
        );
    }
    Ok(text)
}

async fn purge<B: Broker>(
    letters: &DeadLetters<B>,
    broker: &B,
    d: &Destructive,
) -> Result<String, Box<dyn Error>> {
    let deleted = if let Some(id) = d.id {
        let agent = only_agent(&d.select)?;
        confirm(d, &format!("delete dead letter {id} of {agent}"))?;
        let dlq = letters.keyspace().dlq(&agent);
        let deleted = broker.xdel(&dlq, &[id]).await?;
        if deleted == 0 {
            return Err(format!("no dead letter {id} for agent type {agent}").into());
        }
        deleted
    } else if d.all {
        let agents = agent_types(&d.select.agents)?;
        confirm(
            d,
            &format!("delete every dead letter of {}", names(&agents)),
        )?;
        let mut deleted = 0;
        for agent in &agents {
            deleted += letters.purge_all(agent).await?;
        }
        deleted
    } else {
        let filter = filter(&d.select)?;
        confirm(d, &format!("delete {}", described(&filter)))?;
        letters.purge(&filter).await?
    };
    Ok(if d.select.target.json {
        json!({ "purged": deleted }).to_string() + "\n"
    } else {
        format!("purged {deleted} dead letter(s)\n")
    })
}

fn filter(select: &Select) -> Result<DlqFilter, Box<dyn Error>> {
    let mut filter = DlqFilter::new(agent_types(&select.agents)?);
    filter.reason.clone_from(&select.reason);
    filter.trace_id.clone_from(&select.trace);
    filter.limit = select.limit;
    Ok(filter)
}

fn only_agent(select: &Select) -> Result<AgentType, Box<dyn Error>> {
    match agent_types(&select.agents)?.as_slice() {
        [agent] => Ok(agent.clone()),
        _ => Err("an entry id belongs to one dead-letter stream: give exactly one --agent".into()),
    }
}

fn names(agents: &[AgentType]) -> String {
    let names: Vec<&str> = agents.iter().map(AgentType::as_str).collect();
    names.join(", ")
}

fn described(filter: &DlqFilter) -> String {
    let mut text = format!("the dead letters of {}", names(&filter.agent_types));
    if let Some(reason) = &filter.reason {
        text += &format!(" with reason {reason}*");
    }
    if let Some(trace) = &filter.trace_id {
        text += &format!(" of trace {trace}");
    }
    if let Some(limit) = filter.limit {
        text += &format!(" (at most {limit})");
    }
    text
}

/// Goes ahead with `--yes`; else asks on a terminal, and refuses when there
/// is no terminal to ask on.
fn confirm(d: &Destructive, what: &str) -> Result<(), Box<dyn Error>> {
    if d.yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(format!("not asking on a non-terminal: pass --yes to {what}").into());
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("not confirmed: nothing changed".into())
    }
}
