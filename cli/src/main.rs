//! `crewq`: the command line. Only this crate prints.

// The one crate whose job is printing (print.rs).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod print;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// crewq: a coordination layer for AI agent crews on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "crewq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the first seed's research workflow: a supervisor fans research
    /// tasks out to two workers, then a report agent summarises them.
    Demo(demo::DemoArgs),
    /// Runs the deterministic simulator: the real producer, supervisor and
    /// workers under injected crashes, pauses, handler and broker faults,
    /// checked for lost tasks and misrouted dead letters. Exits non-zero
    /// when an invariant is violated, printing the command that replays
    /// the seed.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The simulator builds a runtime per seed (paused time): no runtime here.
        Command::Sim(args) => match sim::run(&args) {
            Ok(summary) => {
                if args.json {
                    print::sim_json(&summary);
                } else {
                    print::sim_text(&args, &summary);
                }
                if !summary.passed() {
                    return ExitCode::FAILURE;
                }
            }
            Err(err) => {
                print::error(&err);
                return ExitCode::FAILURE;
            }
        },
        Command::Demo(args) => return demo_main(args),
    }
    ExitCode::SUCCESS
}

/// `crewq demo`, on a multi-threaded runtime.
#[tokio::main]
async fn demo_main(args: demo::DemoArgs) -> ExitCode {
    let json = args.json;
    match demo::run(args).await {
        Ok(report) if json => print::demo_json(&report),
        Ok(report) => print::demo_table(&report),
        Err(err) => {
            print::error(err.as_ref());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
