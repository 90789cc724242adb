//! `crewq`: the command line. Only this crate prints.

// The one crate whose job is printing (print.rs).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod consumers;
mod demo;
mod dispatch;
mod dlq;
mod duration;
mod out;
mod pending;
mod print;
mod serve;
mod sim;
mod stats;
mod target;
mod task;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The binary's choice, not the libraries': under many threads allocating
// small buffers (commands, replies, JSON) glibc's malloc took a third of
// `crewq bench`'s CPU time; mimalloc's thread-local heaps do not contend.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// crewq: a task queue for AI agent crews on Redis Streams.
///
/// Agents hand each other tasks through one Redis stream per agent type,
/// read by consumer groups: a task is delivered at least once, retried,
/// reclaimed from a worker that died, and dead-lettered when it keeps
/// failing. This command runs the demo, the simulator and the benchmark,
/// lets an operator see and act on a running crew's queues, and serves
/// their Prometheus metrics and a live web dashboard.
#[derive(Debug, Parser)]
#[command(name = "crewq", version)]
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
    /// Per agent type: stream length, lag, pending entries, consumers and
    /// their idle time, oldest pending entry, dead letters.
    Stats(stats::StatsArgs),
    /// The entries an agent type's workers hold and have not acknowledged.
    Pending(pending::PendingArgs),
    /// Lists, shows, replays and purges dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Dispatches a task (or JSON lines on stdin) to its agent type's stream.
    Dispatch(dispatch::DispatchArgs),
    /// Manages an agent type's consumers.
    #[command(subcommand)]
    Consumers(consumers::ConsumersCommand),
    /// Where a task is: waiting, pending with which consumer, completed
    /// with its result, dead-lettered with its reason (or a whole trace).
    Task(task::TaskArgs),
    /// Serves Prometheus metrics (/metrics) and a live web dashboard (/)
    /// of a running crew: queues, consumers, dead letters (replay, purge)
    /// and task lookup.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The simulator builds a runtime per seed (paused time): no runtime here.
        Command::Sim(args) => sim_main(&args),
        Command::Demo(args) => demo_main(args),
        Command::Bench(args) => bench_main(args),
        Command::Stats(args) => operate(stats::run(args)),
        Command::Pending(args) => operate(pending::run(args)),
        Command::Dlq(command) => operate(dlq::run(command)),
        Command::Dispatch(args) => operate(dispatch::run(args)),
        Command::Consumers(command) => operate(consumers::run(command)),
        Command::Task(args) => operate(task::run(args)),
        Command::Serve(args) => operate(serve::run(args)),
    }
}

/// An operator command, on a runtime of its own: it prints as it goes and
/// fails with its error.
fn operate(command: impl Future<Output = Result<(), Box<dyn std::error::Error>>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            print::error(&err);
            return ExitCode::FAILURE;
        }
    };
    shown(runtime.block_on(command), |()| {})
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
