//! Placeholder: memory broker throughput bench.
fn main() {}
