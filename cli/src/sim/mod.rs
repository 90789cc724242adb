//! `crewq sim`: the deterministic simulator from the command line. One seed
//! (its summary and trace hash), a campaign of many on every core, a
//! double run that compares histories, a mutant that the checker must
//! catch, or the same scenario against a real Redis.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crewq_redis::RedisConfig;
use crewq_sim::{
    Campaign, CampaignReport, Counts, Faults, Hits, Report, Scenario, SimError, Simulation,
    double_run_campaign, run_campaign,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

mod args;

pub use args::SimArgs;

/// What `crewq sim` found, as printed.
#[derive(Debug, Serialize)]
pub struct SimSummary {
    /// `memory` or the Redis URL.
    pub backend: String,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose every invariant held (and, in a double run, whose two
    /// histories were the same).
    pub passed: u64,
    /// Tasks per class (ok, duplicated, dead_lettered, lost, stuck,
    /// unexpected), over every seed.
    #[serde(flatten)]
    pub counts: Counts,
    /// Invariant violations.
    pub violations: u64,
    /// How often each fault class fired, by class name, over every seed:
    /// a class missing here was never reached.
    pub hits: Hits,
    /// Seeds per second of wall-clock time.
    pub seeds_per_sec: f64,
    /// The trace hash, for a single seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_hash: Option<String>,
    /// Seeds that broke an invariant, diverged or could not run.
    pub failing_seeds: Vec<u64>,
    /// The command that replays the first failing seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
    /// Each violation of the first failing seeds, as text.
    pub details: Vec<String>,
    /// Seeds whose two runs differed: the first differing event of each.
    pub divergences: Vec<String>,
    /// Seeds that could not run, and why.
    pub errors: Vec<String>,
    /// Failing seeds' reports, for the text output.
    #[serde(skip)]
    pub failures: Vec<Report>,
    /// A single seed's history, with --trace.
    #[serde(skip)]
    pub history: Option<String>,
}

impl SimSummary {
    /// Whether everything passed.
    pub fn passed(&self) -> bool {
        self.passed == self.seeds && self.errors.is_empty()
    }
}

/// Runs what `args` ask for.
///
/// # Errors
///
/// [`SimError::Scenario`] for a scenario that cannot run, before any seed
/// runs (a usage error, see [`exit_code`]); other [`SimError`]s when a run
/// cannot happen.
pub fn run(args: &SimArgs) -> Result<SimSummary, SimError> {
    let simulation = Simulation::standard(scenario(args));
    simulation.validate()?;
    let started = Instant::now();
    let mut summary = match (args.seed, &args.redis) {
        (Some(seed), _) if args.double_run => double_run(args, &simulation, seed, 1)?,
        (Some(seed), redis) => {
            let (report, history) = match redis {
                Some(url) => (on_redis(args, &simulation, url, seed)?, None),
                None => {
                    let (report, history) = simulation.run_recorded(seed)?;
                    (report, args.trace.then(|| history.encode()))
                }
            };
            let mut summary = from_reports(args, vec![report]);
            summary.history = history;
            summary
        }
        (None, _) if args.double_run => double_run(
            args,
            &simulation,
            args.first_seed,
            args.seeds.unwrap_or(100),
        )?,
        (None, Some(url)) => {
            let seeds = args.seeds.unwrap_or(3);
            let bar = progress(seeds, args.json);
            let mut reports = Vec::new();
            for seed in args.first_seed..args.first_seed.saturating_add(seeds) {
                reports.push(on_redis(args, &simulation, url, seed)?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            from_reports(args, reports)
        }
        (None, None) => {
            let campaign = campaign(args, args.seeds.unwrap_or(100));
            let bar = progress(campaign.seeds, args.json);
            let report = run_campaign(&simulation, &campaign, |_| bar.inc(1));
            bar.finish_and_clear();
            from_campaign(args, report)
        }
    };
    summary.seeds_per_sec = summary.seeds as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(summary)
}

fn on_redis(
    args: &SimArgs,
    simulation: &Simulation,
    url: &str,
    seed: u64,
) -> Result<Report, SimError> {
    if !args.cluster {
        return match &args.key_prefix {
            Some(prefix) => simulation.run_on_redis_under(url, &format!("{prefix}-{seed}"), seed),
            None => simulation.run_on_redis(url, seed),
        };
    }
    let prefix = match &args.key_prefix {
        Some(prefix) => format!("{prefix}-{seed}"),
        None => {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("crewq-sim-{seed}-{stamp}")
        }
    };
    let keyspace = crate::target::layout(true)
        .with_prefix(prefix)
        .map_err(|e| SimError::Scenario(e.to_string()))?;
    simulation.run_on_redis_with(RedisConfig::new(url).cluster(), keyspace, seed)
}

fn scenario(args: &SimArgs) -> Scenario {
    let faults = if args.no_faults {
        Faults::None
    } else if args.swarm {
        Faults::Swarm
    } else {
        Scenario::default().faults
    };
    Scenario::default()
        .tasks(args.tasks)
        .agent_types(args.agent_types.iter().cloned())
        .workers(args.workers)
        .max_retries(args.max_retries)
        .lease(Duration::from_millis(args.lease_ms))
        .faults(faults)
        .mutant(args.mutant)
}

fn campaign(args: &SimArgs, seeds: u64) -> Campaign {
    let campaign = Campaign::new(args.first_seed, seeds);
    match args.jobs {
        Some(jobs) => campaign.jobs(jobs),
        None => campaign,
    }
}

/// Runs `count` seeds from `first` twice each and compares the histories.
fn double_run(
    args: &SimArgs,
    simulation: &Simulation,
    first: u64,
    count: u64,
) -> Result<SimSummary, SimError> {
    if args.redis.is_some() {
        return Err(SimError::Scenario(
            "--double-run compares virtual-time runs; it cannot run on Redis".into(),
        ));
    }
    let bar = progress(count, args.json);
    let campaign = Campaign {
        first_seed: first,
        ..campaign(args, count)
    };
    let runs = double_run_campaign(simulation, &campaign, |_| bar.inc(1));
    bar.finish_and_clear();
    // Each run is checked as a single run is; a seed whose two histories
    // differ fails as well, even where both runs held every invariant.
    let mut report = CampaignReport::default();
    let mut diverged = Vec::new();
    let mut hash = None;
    for (seed, run) in runs {
        match run {
            Ok(run) => {
                match run.repeat {
                    Ok(repeated) => hash = Some(repeated),
                    Err(d) => diverged.push((seed, run.report.passed(), d)),
                }
                report.add(seed, Ok(run.report));
            }
            Err(err) => report.add(seed, Err(err)),
        }
    }
    let mut summary = from_campaign(args, report);
    for (seed, passed, d) in diverged {
        if passed {
            summary.passed -= 1;
            summary.failing_seeds.push(seed);
        }
        summary.divergences.push(format!(
            "seed {seed}: event {}: first run `{}`, second run `{}`",
            d.index,
            d.first.as_deref().unwrap_or("(ended)"),
            d.second.as_deref().unwrap_or("(ended)")
        ));
    }
    summary.failing_seeds.sort_unstable();
    if count == 1 {
        summary.trace_hash = hash.map(|h| h.to_string());
    }
    summary.replay = summary.failing_seeds.first().map(|s| replay(args, *s));
    Ok(summary)
}

/// The process's exit status for an error that stopped `crewq sim` before
/// a verdict: 2 for a usage error (a scenario that cannot run), as for a
/// flag clap refuses; 1 otherwise. A broken invariant is 1 too, so that a
/// script can tell "caught" from "misspelled".
pub fn exit_code(err: &SimError) -> u8 {
    match err {
        SimError::Scenario(_) => 2,
        _ => 1,
    }
}

fn empty(args: &SimArgs) -> SimSummary {
    SimSummary {
        backend: args.redis.clone().unwrap_or_else(|| "memory".to_owned()),
        seeds: 0,
        passed: 0,
        counts: Counts::default(),
        violations: 0,
        hits: Hits::new(),
        seeds_per_sec: 0.0,
        trace_hash: None,
        failing_seeds: Vec::new(),
        replay: None,
        details: Vec::new(),
        divergences: Vec::new(),
        errors: Vec::new(),
        failures: Vec::new(),
        history: None,
    }
}

fn from_reports(args: &SimArgs, reports: Vec<Report>) -> SimSummary {
    let mut campaign = CampaignReport::default();
    let hash = match reports.as_slice() {
        [one] => Some(one.trace_hash.to_string()),
        _ => None,
    };
    for report in reports {
        campaign.add(report.seed, Ok(report));
    }
    SimSummary {
        trace_hash: hash,
        ..from_campaign(args, campaign)
    }
}

fn from_campaign(args: &SimArgs, report: CampaignReport) -> SimSummary {
    let mut summary = SimSummary {
        seeds: report.seeds,
        passed: report.passed,
        counts: report.counts,
        violations: report.violations,
        hits: report.hits,
        ..empty(args)
    };
    summary.failing_seeds = report.failures.iter().map(|r| r.seed).collect();
    for (seed, err) in &report.errors {
        summary.failing_seeds.push(*seed);
        summary.errors.push(format!("seed {seed}: {err}"));
    }
    summary.failing_seeds.sort_unstable();
    summary.details = report
        .failures
        .iter()
        .take(3)
        .flat_map(|r| {
            r.violations
                .iter()
                .map(move |v| format!("seed {}: {v}", r.seed))
        })
        .collect();
    summary.replay = summary.failing_seeds.first().map(|s| replay(args, *s));
    summary.failures = report.failures;
    summary
}

/// The one-line command that replays `seed` with the same scenario.
pub fn replay(args: &SimArgs, seed: u64) -> String {
    let defaults = Scenario::default();
    let mut command = format!("crewq sim --seed {seed}");
    let mut flag = |name: &str, value: String| command.push_str(&format!(" --{name} {value}"));
    if args.tasks != defaults.tasks {
        flag("tasks", args.tasks.to_string());
    }
    if args.workers != defaults.workers {
        flag("workers", args.workers.to_string());
    }
    if args.agent_types != defaults.agent_types {
        flag("agent-types", args.agent_types.join(","));
    }
    if args.max_retries != defaults.max_retries {
        flag("max-retries", args.max_retries.to_string());
    }
    if args.lease_ms != 1000 {
        flag("lease-ms", args.lease_ms.to_string());
    }
    if let Some(mutant) = args.mutant {
        flag("mutant", mutant.to_string());
    }
    if let Some(url) = &args.redis {
        flag("redis", url.clone());
    }
    if args.cluster {
        command.push_str(" --cluster");
    }
    if args.swarm {
        command.push_str(" --swarm");
    }
    if args.no_faults {
        command.push_str(" --no-faults");
    }
    if args.double_run {
        command.push_str(" --double-run");
    }
    command
}

fn progress(len: u64, quiet: bool) -> ProgressBar {
    if quiet || len < 2 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
