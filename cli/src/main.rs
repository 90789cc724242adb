//! `crewq`: the command line.
//!
//! Commands arrive with the layers they drive: `crewq demo` with the
//! coordination layer, `crewq sim` with the simulator, `crewq bench` with the
//! benchmark. Until then it answers `--help` and `--version`.

use clap::Parser;

/// crewq: a coordination layer for AI agent crews on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "crewq", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
