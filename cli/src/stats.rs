//! `crewq stats`: per agent type, its stream's length, each group's lag and
//! pending work, its consumers' idle times and its dead letters, read with
//! core's [`Monitor`]. With priority lanes in use the agent type's row adds
//! up every lane, and a table of lanes breaks it down.

use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use crewq_core::monitor::{AgentStats, GroupStats, Monitor};

use crate::duration::show;
use crate::out::{emit, json_line};
use crate::target::{Target, agent_types};

/// `crewq stats`'s options.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// The agent types to show (the broker cannot list keys, so name them).
    #[arg(required = true, value_name = "AGENT")]
    pub agents: Vec<String>,
    /// Refresh in place every `--every` until interrupted (with `--json`,
    /// one JSON line per refresh).
    #[arg(long)]
    pub watch: bool,
    /// How often `--watch` refreshes.
    #[arg(long, value_parser = crate::duration::parse, default_value = "2s")]
    pub every: Duration,
}

/// Shows the numbers once, or every `--every` with `--watch`.
pub async fn run(args: StatsArgs) -> Result<(), Box<dyn Error>> {
    let (broker, keyspace) = args.target.open().await?;
    let agents = agent_types(&args.agents)?;
    let monitor = Monitor::new(&broker, keyspace);
    loop {
        let stats = monitor.stats(&agents).await?;
        let text = if args.target.json {
            if args.watch {
                json_line(&stats)?
            } else {
                serde_json::to_string_pretty(&stats)? + "\n"
            }
        } else if args.watch {
            // Home the cursor and clear the screen: the table redraws in place.
            format!("\x1b[H\x1b[2J{}", table(&stats))
        } else {
            table(&stats)
        };
        emit(&text)?;
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(args.every).await;
    }
}

/// One row per agent type, then one per priority lane in use (when any
/// agent type uses lanes above 0), one per consumer, one per rate limit.
pub fn table(stats: &[AgentStats]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<16} {:>8} {:>6} {:>8} {:>10} {:>14} {:>6} {:>8}",
        "agent", "length", "lag", "pending", "consumers", "oldest pending", "dlq", "delayed"
    );
    for agent in stats {
        let (lag, pending, consumers, oldest) = figures(&agent.groups, agent.tasks.length);
        let _ = writeln!(
            text,
            "{:<16} {:>8} {:>6} {:>8} {:>10} {:>14} {:>6} {:>8}",
            agent.agent_type.as_str(),
            agent.tasks.length,
            lag,
            pending,
            consumers,
            oldest,
            agent.dlq_length,
            agent.delayed_length
        );
    }
    let lanes: Vec<_> = stats
        .iter()
        .flat_map(|a| a.lanes.iter().map(move |lane| (a, lane)))
        .collect();
    if !lanes.is_empty() {
        let _ = writeln!(text);
        let _ = writeln!(
            text,
            "{:<16} {:>5} {:>8} {:>6} {:>8} {:>14} {:>8}",
            "agent", "lane", "length", "lag", "pending", "oldest pending", "delayed"
        );
        for (agent, lane) in lanes {
            let (lag, pending, _, oldest) = figures(&lane.groups, lane.tasks.length);
            let _ = writeln!(
                text,
                "{:<16} {:>5} {:>8} {:>6} {:>8} {:>14} {:>8}",
                agent.agent_type.as_str(),
                format!("@{}", lane.priority),
                lane.tasks.length,
                lag,
                pending,
                oldest,
                lane.delayed_length
            );
        }
    }
    let consumers: Vec<_> = stats
        .iter()
        .flat_map(|a| a.groups.iter().map(move |g| (a, g)))
        .flat_map(|(a, g)| g.consumers.iter().map(move |c| (a, g, c)))
        .collect();
    if !consumers.is_empty() {
        let _ = writeln!(text);
        let _ = writeln!(
            text,
            "{:<16} {:<24} {:<24} {:>8} {:>10}",
            "agent", "group", "consumer", "pending", "idle"
        );
        for (agent, group, consumer) in consumers {
            let _ = writeln!(
                text,
                "{:<16} {:<24} {:<24} {:>8} {:>10}",
                agent.agent_type.as_str(),
                group.name,
                consumer.name,
                consumer.pending,
                show(consumer.idle)
            );
        }
    }
    let limited: Vec<_> = stats
        .iter()
        .filter_map(|a| a.rate.as_ref().map(|r| (a, r)))
        .collect();
    if !limited.is_empty() {
        let _ = writeln!(text);
        let _ = writeln!(
            text,
            "{:<16} {:<24} {:>8} {:>8} {:>10}",
            "agent", "rate limit", "starts", "running", "paused"
        );
        for (agent, rate) in limited {
            let _ = writeln!(
                text,
                "{:<16} {:<24} {:>8} {:>8} {:>10}",
                agent.agent_type.as_str(),
                rate.limit,
                rate.starts_in_window,
                rate.running,
                rate.paused.map_or_else(|| "-".to_owned(), show)
            );
        }
    }
    text
}

/// Lag (the stream's length without groups, `?` when unknown), pending
/// entries, consumers and the oldest pending entry's idle time of a
/// stream's `groups`.
fn figures(groups: &[GroupStats], length: u64) -> (String, u64, usize, String) {
    let lag: Option<u64> = groups
        .iter()
        .try_fold(0, |sum, g| g.lag.map(|lag| sum + lag));
    let lag = match (groups.is_empty(), lag) {
        (true, _) => length.to_string(),
        (false, Some(lag)) => lag.to_string(),
        (false, None) => "?".to_owned(),
    };
    let pending = groups.iter().map(|g| g.pending).sum();
    let consumers = groups.iter().map(|g| g.consumers.len()).sum();
    let oldest = groups
        .iter()
        .filter_map(|g| g.oldest_pending_idle)
        .max()
        .map_or_else(|| "-".to_owned(), show);
    (lag, pending, consumers, oldest)
}
