//! crewq-redis: the [`Broker`](crewq_core::Broker) contract on Redis Streams.
//!
//! [`RedisBroker`] speaks to one Redis server (7.0 or later) through
//! redis-rs: one shared multiplexed connection that reconnects after a drop
//! and is replaced after a response time-out (a half-open link) or a
//! `READONLY` reply (a failover), TCP keepalive on every connection,
//! dedicated connections for blocking reads, pipelined batches of appends,
//! and `MULTI`/`EXEC` for the atomic ack-and-append step. Replies are read
//! into crewq's types by hand (RESP2, or RESP3 with `?protocol=resp3`), and
//! Redis's error replies become crewq's [`Error`](crewq_core::Error) kinds
//! (`NOGROUP` is `NoGroup`; `LOADING`, `READONLY`, `OOM` are a transient
//! `Unavailable` ...). [`RedisConfig::wait_for_server`] makes connecting
//! wait, with a bound, for a server that is not up yet.
//!
//! [`RedisConfig::wait_for_replicas`] is an opt-in durability for dispatch:
//! every append waits (Redis `WAIT`) until that many replicas have it, or
//! fails with the transient
//! [`Error::NotReplicated`](crewq_core::Error::NotReplicated).
//!
//! With [`RedisConfig::cluster`], the same broker speaks to a Redis Cluster
//! through redis-rs's cluster client (redirects, failovers and retries are
//! its job); the commands, scripts and reply parsing are shared with the
//! single-node path, each script or `MULTI` is checked to keep its keys in
//! one slot before it is sent, and batches are split by slot.
//!
//! ```no_run
//! # async fn demo() -> crewq_core::Result<()> {
//! use std::time::Duration;
//! use crewq_core::{Broker, GroupStart, ReadGroup};
//! use crewq_redis::RedisConfig;
//!
//! let broker = RedisConfig::new("redis://crew:secret@127.0.0.1:6379/0")
//!     .response_timeout(Duration::from_secs(2))
//!     .connect()
//!     .await?;
//! // Logs and Debug never show the password.
//! assert_eq!(broker.redacted_url(), "redis://crew:***@127.0.0.1:6379/0");
//! broker.group_create("agent:tasks:research", "research", GroupStart::BEGINNING, true).await?;
//! let read = ReadGroup::new("agent:tasks:research", "research", "worker-1")
//!     .count(16)
//!     .block(Duration::from_secs(5)); // on a connection of its own
//! let entries = broker.read_group(&read).await?;
//! # drop(entries); Ok(()) }
//! ```
//!
//! With feature `tls`, `rediss://` URLs connect over TLS (rustls with
//! *ring*), trusting the platform's roots or a private CA; see
//! [`RedisConfig`]'s `# TLS`.

mod batch;
mod blocking;
mod broker;
mod cluster;
mod commands;
mod config;
mod connect;
mod delayed;
mod error;
mod guarded;
mod lanes;
mod once;
mod parse;
mod prune;
mod rate;
mod reclaim;
mod redact;
mod replicated;
mod shared;
#[cfg(feature = "tls")]
mod tls;

pub use broker::RedisBroker;
pub use config::RedisConfig;
