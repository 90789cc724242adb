//! Support for crewq's cross-crate tests: a private redis-server or Redis
//! Cluster per test, and cases run on both backends.

pub mod backends;
pub mod redis_cluster;
pub mod redis_replica;
pub mod redis_server;

// The README's Rust examples compile and run as doc tests of this crate, so
// they cannot drift from the API.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
