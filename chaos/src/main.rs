//! `crewq-chaos`: runs the chaos scenarios (and is the worker process they
//! start). See the crate docs and RELIABILITY.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: its report goes to stdout"
)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use crewq_chaos::harness::{Report, Settings};
use crewq_chaos::scenarios::{self, NAMES, Sizes};
use crewq_chaos::worker::{self, WorkerArgs};

/// The producer's default retention today (`MAXLEN ~ 100000`): the backlog
/// scenario's default is twice it.
const DEFAULT_BACKLOG: u64 = 200_000;

#[derive(Parser)]
#[command(
    name = "crewq-chaos",
    about = "crewq under real faults, every task accounted for"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every scenario; exits 1 if any failed.
    All(SuiteArgs),
    /// Runs one scenario (kill-workers, redis-restart, proxy, poison,
    /// backlog, redis-outage); exits 1 if it failed.
    Scenario {
        /// The scenario.
        name: String,
        #[command(flatten)]
        suite: SuiteArgs,
    },
    /// One worker process (started by the scenarios).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(clap::Args, Clone)]
struct SuiteArgs {
    /// One JSON object per scenario instead of text lines.
    #[arg(long)]
    json: bool,
    /// Tasks of the backlog scenario (default: twice the default retention).
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    backlog: u64,
    /// Trim the backlog scenario's task stream with the unsafe opt-in `MAXLEN ~ N` (cuts unread work) instead of
    /// the producer's default (a smaller-scale run; not the default config).
    #[arg(long, value_name = "N")]
    backlog_retention: Option<u64>,
    /// Seconds Redis stays down in the redis-outage scenario.
    #[arg(long, default_value_t = 35)]
    outage_secs: u64,
    /// Seconds the crew gets to drain after the faults before what is left
    /// counts as stuck.
    #[arg(long, default_value_t = 40)]
    drain_secs: u64,
    /// The workers' lease, in ms.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// Keep each scenario's directory (worker logs, redis.log, AOF).
    #[arg(long)]
    keep: bool,
    /// Skip these scenarios (comma-separated) in `all`.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("crewq-chaos: no runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Worker(args) => match runtime.block_on(worker::run(args)) {
            // Its stderr goes to the scenario's directory (see --keep).
            Ok(report) => {
                eprintln!("worker stopped: {report:?}");
                ExitCode::SUCCESS
            }
            Err((code, why)) => {
                eprintln!("worker failed: {why}");
                ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
        },
        Cmd::All(suite) => {
            let names: Vec<String> = NAMES
                .iter()
                .filter(|n| !suite.skip.iter().any(|s| s == *n))
                .map(|n| (*n).to_owned())
                .collect();
            runtime.block_on(run_suite(names, suite))
        }
        Cmd::Scenario { name, suite } => runtime.block_on(run_suite(vec![name], suite)),
    }
}

async fn run_suite(names: Vec<String>, suite: SuiteArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("crewq-chaos: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        exe,
        lease_ms: suite.lease_ms,
        drain: Duration::from_secs(suite.drain_secs),
        keep: suite.keep,
    };
    let sizes = Sizes {
        backlog: suite.backlog,
        backlog_retention: suite.backlog_retention,
        outage: Duration::from_secs(suite.outage_secs),
    };
    let mut failed = Vec::new();
    for name in names {
        if !suite.json {
            eprintln!("==> scenario {name}");
        }
        // Ctrl-C drops the scenario, whose drop guards kill every process
        // it started.
        let outcome = tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => {
                eprintln!("crewq-chaos: interrupted; stopping every process started");
                return ExitCode::from(130);
            }
            outcome = scenarios::run(&name, &settings, &sizes) => outcome,
        };
        match outcome {
            Ok(report) => {
                print_report(&report, suite.json);
                if !report.passed {
                    failed.push(name);
                }
            }
            Err(err) => {
                eprintln!("crewq-chaos: scenario {name} could not run: {err}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        if !suite.json {
            eprintln!("crewq-chaos: FAILED: {}", failed.join(", "));
        }
        ExitCode::FAILURE
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("crewq-chaos: cannot encode the report: {err}"),
        }
    } else {
        println!("{}", report.line());
        for (figure, ids) in &report.tally.examples {
            println!("    {figure}, e.g.: {}", ids.join(", "));
        }
        for note in &report.notes {
            println!("    {note}");
        }
    }
}
