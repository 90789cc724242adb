//! `crewq`: the command line. Only this crate prints.

// The one crate whose job is printing (print.rs).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod print;
mod sim;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The binary's choice, not the libraries': under many threads allocating
// small buffers (commands, replies, JSON) glibc's malloc took a third of
// `crewq bench`'s CPU time; mimalloc's thread-local heaps do not contend.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Measures throughput and latency of the real Producer and Worker on
    /// the in-memory broker or on Redis.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The simulator builds a runtime per seed (paused time): no runtime here.
        Command::Sim(args) => sim_main(&args),
        Command::Demo(args) => demo_main(args),
        Command::Bench(args) => bench_main(args),
    }
}

/// `crewq sim`: exits 1 when an invariant was violated, 2 on a usage error.
fn sim_main(args: &sim::SimArgs) -> ExitCode {
    match sim::run(args) {
        Ok(summary) => {
            if args.json {
                print::sim_json(&summary);
            } else {
                print::sim_text(args, &summary);
            }
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            print::error(&err);
            ExitCode::from(sim::exit_code(&err))
        }
    }
}

/// `crewq demo`, on a multi-threaded runtime.
#[tokio::main]
async fn demo_main(args: demo::DemoArgs) -> ExitCode {
    let json = args.json;
    shown(demo::run(args).await, |report| {
        if json {
            print::demo_json(report);
        } else {
            print::demo_table(report);
        }
    })
}

/// `crewq bench`, on a multi-threaded runtime.
#[tokio::main]
async fn bench_main(args: bench::BenchArgs) -> ExitCode {
    let json = args.json;
    shown(bench::run(args).await, |report| {
        if json {
            print::bench_json(report);
        } else {
            print::bench_text(report);
        }
    })
}

/// Shows a command's report, or its error (then fails).
fn shown<R>(result: Result<R, Box<dyn std::error::Error>>, show: impl FnOnce(&R)) -> ExitCode {
    match result {
        Ok(report) => {
            show(&report);
            ExitCode::SUCCESS
        }
        Err(err) => {
            print::error(err.as_ref());
            ExitCode::FAILURE
        }
    }
}
