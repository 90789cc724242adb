//! Support for crewq's cross-crate tests: a private redis-server per test.

pub mod redis_server;
