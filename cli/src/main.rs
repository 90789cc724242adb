//! `crewq`: the command line. Only this crate prints.

// The one crate whose job is printing (print.rs).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod print;

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
    /// Measures throughput and latency of the real Producer and Worker on
    /// the in-memory broker or on Redis.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => {
            let json = args.json;
            match demo::run(args).await {
                Ok(report) if json => print::demo_json(&report),
                Ok(report) => print::demo_table(&report),
                Err(err) => {
                    print::error(err.as_ref());
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Bench(args) => {
            let json = args.json;
            match bench::run(args).await {
                Ok(report) if json => print::bench_json(&report),
                Ok(report) => print::bench_text(&report),
                Err(err) => {
                    print::error(err.as_ref());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
