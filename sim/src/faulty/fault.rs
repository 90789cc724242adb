//! What a [`FaultyBroker`](super::FaultyBroker) did to a call: a
//! [`Fault`], logged as a [`FaultEvent`].

use super::{Conn, Op, ServerError};

/// A fault that took effect on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The call failed with a transient connection error before it reached
    /// the inner broker: nothing was applied.
    Before,
    /// The inner broker applied the call, and the caller got a transient
    /// time-out instead of its reply.
    After,
    /// The call was held back this many milliseconds before it went on.
    Delay(u64),
    /// The server refused the call with an error reply (a failover, a
    /// restart, memory pressure): nothing applied.
    Refused(ServerError),
    /// The call hung on a silent connection of a half-open link until the
    /// time-out; `applied` says whether the server had run it.
    HalfOpen {
        /// The connection it went on.
        conn: Conn,
        /// Whether the call was applied.
        applied: bool,
    },
    /// Item `item` (from 0) of a settle was refused on its own
    /// ([`Settled::Failed`](crewq_core::Settled::Failed)); the rest settled.
    ItemFailed {
        /// The item's index in the call.
        item: u32,
    },
    /// The call started during an outage of the broker: refused at once,
    /// nothing applied.
    Outage,
}

impl Fault {
    /// The fault class it counts under in a campaign's hit counts
    /// (`broker_error_before`, `failover_readonly`, `half_open` ...).
    pub fn class(self) -> &'static str {
        match self {
            Fault::Before => "broker_error_before",
            Fault::After => "broker_error_after",
            Fault::Delay(_) => "broker_latency",
            Fault::Refused(server) => server.class(),
            Fault::HalfOpen { .. } => "half_open",
            Fault::ItemFailed { .. } => "settle_item_failed",
            Fault::Outage => "outage",
        }
    }

    /// Whether the caller saw an error or a refused item (not only a delay).
    pub fn is_error(self) -> bool {
        !matches!(self, Fault::Delay(_))
    }
}

/// One entry of the fault log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultEvent {
    /// The call's number: calls through the wrapper are numbered from 0 in
    /// the order they start, whether faults touch them or not.
    pub seq: u64,
    /// The operation called.
    pub op: Op,
    /// What was done to it.
    pub fault: Fault,
}

/// The faults a [`FaultyBroker`](super::FaultyBroker) injected, in the order they took effect
/// (a call's delay before its error; an [`Fault::After`] once the inner
/// call has returned).
pub type FaultLog = Vec<FaultEvent>;
