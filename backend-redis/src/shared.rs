//! The shared multiplexed connection, replaced when it can no longer be
//! trusted.
//!
//! redis-rs's `ConnectionManager` re-opens a connection the server closed,
//! but keeps one that merely went silent (a half-open link: no FIN, no RST,
//! every command times out) and one to a server a failover demoted to a
//! replica (every write answers `READONLY`). Either way the crew would stall
//! until something reset the socket. So after a response time-out or a
//! `READONLY` reply the manager is swapped for a fresh one, which connects
//! on first use: the next call goes out on a new socket (and, behind a
//! failover's DNS name or proxy, to the new primary).
//!
//! Each handle carries the generation it was taken from, so the many calls
//! that time out together on one dead link replace it once, not once each.

use std::sync::{Mutex, PoisonError};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Value};

/// The error code of a write sent to a replica.
const READONLY: &str = "READONLY";

/// The current shared connection and how to make the next one.
pub(crate) struct Shared {
    client: Client,
    config: ConnectionManagerConfig,
    redacted_url: String,
    current: Mutex<Current>,
}

struct Current {
    generation: u64,
    manager: ConnectionManager,
}

/// A handle on the shared connection, with the generation it belongs to.
pub(crate) struct Handle {
    pub generation: u64,
    pub conn: ConnectionManager,
}

impl Shared {
    /// Wraps `manager`, the first connection, made from `client` and
    /// `config` as later ones will be.
    pub fn new(
        client: Client,
        config: ConnectionManagerConfig,
        manager: ConnectionManager,
        redacted_url: String,
    ) -> Self {
        Shared {
            client,
            config,
            redacted_url,
            current: Mutex::new(Current {
                generation: 0,
                manager,
            }),
        }
    }

    /// A handle on the current connection (cheap: it is multiplexed).
    pub fn get(&self) -> Handle {
        let current = self.lock();
        Handle {
            generation: current.generation,
            conn: current.manager.clone(),
        }
    }

    /// How many times the connection was replaced (for tests and logs).
    pub fn replacements(&self) -> u64 {
        self.lock().generation
    }

    /// Replaces the connection of `generation` after `err`, when `err`
    /// says it cannot be trusted; a later generation is left alone.
    pub fn after_error(&self, generation: u64, err: &RedisError) {
        if err.is_timeout() {
            self.replace(generation, "no reply in time; the link may be half-open");
        } else if err.code() == Some(READONLY) {
            self.replace(generation, "the server is a replica now (READONLY)");
        }
    }

    /// [`Shared::after_error`] for the replies of a pipeline whose error
    /// replies came back in place, or inside a script's reply (a settle's
    /// items that failed on a replica).
    pub fn after_replies(&self, generation: u64, replies: &[Value]) {
        if replies.iter().any(is_readonly) {
            self.replace(generation, "the server is a replica now (READONLY)");
        }
    }

    fn replace(&self, generation: u64, why: &str) {
        let mut current = self.lock();
        if current.generation != generation {
            return;
        }
        // Lazy: it connects on its first command, so this never blocks, and
        // a server that is down costs the next call, not this one.
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(manager) => {
                current.generation += 1;
                current.manager = manager;
                tracing::warn!(
                    url = %self.redacted_url,
                    generation = current.generation,
                    reason = why,
                    "replacing the shared Redis connection"
                );
            }
            Err(err) => {
                tracing::warn!(url = %self.redacted_url, error = %err, reason = why,
                    "cannot replace the shared Redis connection; keeping it");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A connection handle stays valid whatever panicked while locked.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `reply` is, or holds, a `READONLY` error reply.
fn is_readonly(reply: &Value) -> bool {
    match reply {
        Value::ServerError(err) => err.code() == READONLY,
        Value::Array(items) => items.iter().any(is_readonly),
        _ => false,
    }
}
