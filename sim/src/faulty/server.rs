//! The error replies a real Redis gives during failovers, restarts and
//! memory pressure, as the Redis backend maps them
//! (`backend-redis/src/error.rs`): what a [`FaultyBroker`](super::FaultyBroker)
//! refuses a call with.
//!
//! Each is refused before the command runs, so nothing is applied, and each
//! is [`Error::Unavailable`]: transient, waited out by the worker. That
//! includes `MOVED` as the Redis Cluster link reports it: a redirect that
//! outlasted the cluster client's tries, while a failover or a resharding
//! moves the slot (`backend-redis/src/cluster.rs`). A standalone client
//! pointed at a cluster node gets `MOVED` as [`Error::Unsupported`]
//! instead, which stops a worker for good by design (an operator must point
//! it at the cluster): that is not injected, a run would only measure its
//! own restarts.

use crewq_core::Error;

use super::Op;

/// A server error reply that refuses a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerError {
    /// `READONLY`: the server became a replica in a failover; writes are
    /// refused until the client reaches the new primary.
    Readonly,
    /// `LOADING`: the server is loading its dataset after a restart; every
    /// command is refused until it is done.
    Loading,
    /// `OOM`: `maxmemory` is reached; commands that may grow memory are
    /// refused.
    Oom,
    /// `NOSCRIPT`: the script cache was flushed by a restart. The Redis
    /// backend loads the script again and retries on its own; what reaches
    /// the caller when that fails too is a transient error.
    Noscript,
    /// `MOVED` on the cluster link: the key's slot is moving (a failover, a
    /// resharding) and the redirects outlasted the client's tries; the
    /// command ran nowhere.
    Moved,
}

impl ServerError {
    /// Every reply, in a fixed order (draws index into it).
    pub const ALL: [ServerError; 5] = [
        ServerError::Readonly,
        ServerError::Loading,
        ServerError::Oom,
        ServerError::Noscript,
        ServerError::Moved,
    ];

    /// The replies a server can give `op`: a read is refused only while
    /// loading; a write by any of them.
    pub fn for_op(op: Op) -> &'static [ServerError] {
        if op.is_write() {
            &ServerError::ALL
        } else {
            &[ServerError::Loading]
        }
    }

    /// Its hit-count class (`failover_readonly` ...).
    pub fn class(self) -> &'static str {
        match self {
            ServerError::Readonly => "failover_readonly",
            ServerError::Loading => "failover_loading",
            ServerError::Oom => "failover_oom",
            ServerError::Noscript => "failover_noscript",
            ServerError::Moved => "failover_moved",
        }
    }

    /// Redis's own reply text.
    pub fn reply(self) -> &'static str {
        match self {
            ServerError::Readonly => "READONLY You can't write against a read only replica.",
            ServerError::Loading => "LOADING Redis is loading the dataset in memory",
            ServerError::Oom => "OOM command not allowed when used memory > 'maxmemory'.",
            ServerError::Noscript => "NOSCRIPT No matching script. Please use EVAL.",
            ServerError::Moved => {
                "still redirected after the cluster client's tries (MOVED 3999 127.0.0.1:7001): \
                 its slot is moving (a failover or resharding under way); nothing was applied"
            }
        }
    }

    /// The error the caller gets, as the Redis backend maps the reply.
    pub fn error(self) -> Error {
        Error::Unavailable(self.reply().to_owned())
    }
}

/// Why a settle item was refused: its destination holds another type, or
/// memory is full. Drawn per item.
pub(crate) const ITEM_REPLIES: [&str; 2] = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "OOM command not allowed when used memory > 'maxmemory'.",
];
