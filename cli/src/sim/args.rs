//! `crewq sim`'s command-line options.

use crewq_sim::Mutant;

/// `crewq sim`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Run this one seed: its summary and trace hash.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run a campaign of this many seeds (from --first-seed), spread over
    /// the cores; each seed is deterministic. The default without --seed.
    /// At least 1: a campaign of no seed would pass having checked nothing.
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: Option<u64>,
    /// The first seed of a campaign.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Tasks per run.
    #[arg(long, default_value_t = 100)]
    pub tasks: u32,
    /// Workers per agent type.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Agent types, comma-separated; tasks are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "research")]
    pub agent_types: Vec<String>,
    /// Retries before a task is dead-lettered: it runs at most this many + 1 times.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// The workers' lease in ms (virtual on the memory backend).
    #[arg(long, default_value_t = 1000)]
    pub lease_ms: u64,
    /// Swarm testing: draw the fault rates themselves per seed.
    #[arg(long)]
    pub swarm: bool,
    /// No faults at all.
    #[arg(long, conflicts_with = "swarm")]
    pub no_faults: bool,
    /// Run a deliberately broken worker: ack-before-handle, no-reclaim,
    /// dlq-without-ack, dlq-on-first-failure, fatal-on-unavailable,
    /// failed-item-acked, trust-task-agent-type, ignore-deleted,
    /// reclaim-failure-starves-read, no-renew-in-grace, settle-gives-up,
    /// recreate-group-at-end, remember-settled, trust-newest-sample,
    /// record-cancelled, retry-non-retryable, retry-at-once,
    /// ignore-rate-limit, ignore-slow-down, or the broken producer
    /// schedule-at-once. The checker must catch it.
    #[arg(long, value_name = "NAME", value_parser = parse_mutant)]
    pub mutant: Option<Mutant>,
    /// Run against this Redis (redis:// or rediss://) in real time instead
    /// of the memory backend; keys go under a fresh crewq-sim-* prefix.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With --redis: put each seed's keys under `<PREFIX>-<seed>` instead
    /// of a fresh `crewq-sim-<seed>-<time>` (both are left in place).
    #[arg(long, value_name = "PREFIX", requires = "redis")]
    pub key_prefix: Option<String>,
    #[arg(long, requires = "redis", help = crate::target::CLUSTER_HELP)]
    pub cluster: bool,
    /// Run each seed twice: check every invariant of each run, and compare
    /// the histories event by event.
    #[arg(long)]
    pub double_run: bool,
    /// Threads for a campaign (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --seed: print the whole history, one event per line.
    #[arg(long)]
    pub trace: bool,
}

fn parse_mutant(name: &str) -> Result<Mutant, String> {
    name.parse()
}

fn parse_seeds(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("a campaign needs at least one seed: 0 seeds would check nothing".into()),
        Ok(seeds) => Ok(seeds),
        Err(err) => Err(format!("not a number of seeds: {err}")),
    }
}
