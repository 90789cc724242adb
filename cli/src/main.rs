//! `crewq`: the command line.

fn main() {}
