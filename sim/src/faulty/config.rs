//! What a [`FaultyBroker`](super::FaultyBroker) injects: the operations it
//! knows ([`Op`]), which of them faults apply to ([`OpSet`]), and how often
//! and how badly ([`FaultConfig`]).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A [`Broker`](crewq_core::Broker) method: names operations in an
/// [`OpSet`] and in the fault log. The same as
/// [`BrokerOp`](crewq_core::BrokerOp), which
/// [`BrokerLayer::around`](crewq_core::BrokerLayer::around) is told.
pub use crewq_core::BrokerOp as Op;

/// The bit of `op` in an [`OpSet`].
fn bit(op: Op) -> u64 {
    1 << (op as u64)
}

/// A set of [`Op`]s: the operations faults apply to.
///
/// ```
/// use crewq_sim::{Op, OpSet};
///
/// assert!(OpSet::all().contains(Op::Xlen));
/// assert!(!OpSet::writes().contains(Op::Xlen));
/// assert!(OpSet::writes().contains(Op::ReadGroup));
/// let acks: OpSet = [Op::Settle, Op::AckAndAdd].into_iter().collect();
/// assert_eq!(acks.iter().collect::<Vec<_>>(), [Op::AckAndAdd, Op::Settle]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpSet(u64);

impl OpSet {
    /// No operation.
    pub fn none() -> Self {
        OpSet(0)
    }

    /// Every operation.
    pub fn all() -> Self {
        Op::ALL.into_iter().collect()
    }

    /// The operations that can change state ([`Op::is_write`]).
    pub fn writes() -> Self {
        Op::ALL.into_iter().filter(|op| op.is_write()).collect()
    }

    /// Exactly these operations.
    pub fn only(ops: impl IntoIterator<Item = Op>) -> Self {
        ops.into_iter().collect()
    }

    /// This set and `op`.
    #[must_use]
    pub fn with(self, op: Op) -> Self {
        OpSet(self.0 | bit(op))
    }

    /// This set without `op`.
    #[must_use]
    pub fn without(self, op: Op) -> Self {
        OpSet(self.0 & !bit(op))
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        self.0 & bit(op) != 0
    }

    /// The operations in the set, in [`Op::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |op| self.contains(*op))
    }
}

impl Default for OpSet {
    /// Every operation.
    fn default() -> Self {
        OpSet::all()
    }
}

impl FromIterator<Op> for OpSet {
    fn from_iter<I: IntoIterator<Item = Op>>(ops: I) -> Self {
        ops.into_iter().fold(OpSet::none(), OpSet::with)
    }
}

impl fmt::Debug for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Op::name)).finish()
    }
}

/// How a [`FaultyBroker`](super::FaultyBroker) misbehaves.
/// [`FaultConfig::default`] injects nothing.
///
/// Each call to an operation in [`ops`](FaultConfig::ops) draws, in call
/// order from one generator seeded with [`seed`](FaultConfig::seed), first
/// its extra latency (when [`latency`](FaultConfig::latency) is set), then
/// one number `u` in `[0, 1)`: `u < error_before` fails it before it reaches
/// the inner broker, else `u < error_before + error_after` fails it after.
/// So the two probabilities are exact, and exclusive; if they add up to
/// more than 1, `error_after` gets what is left. Calls to other operations,
/// and every call while faults are switched off, draw nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seeds the one generator every decision is drawn from: the same seed
    /// and the same sequence of calls give the same faults.
    pub seed: u64,
    /// The probability that a call fails with a transient
    /// [`Error::Connection`](crewq_core::Error::Connection) *before* it
    /// reaches the inner broker: nothing was applied, the caller may retry
    /// safely (but cannot know that, as with a real dropped connection).
    /// 0 (never) to 1 (always).
    pub error_before: f64,
    /// The probability that a call is applied by the inner broker and the
    /// caller then gets a transient
    /// [`Error::Timeout`](crewq_core::Error::Timeout) instead of the reply:
    /// the outcome is unknown to the caller, so a retried `xadd` appends
    /// twice, a retried `settle` finds its entry no longer pending, and
    /// entries a lost `read_group` or `autoclaim` delivered stay pending
    /// until reclaimed. 0 (never) to 1 (always).
    pub error_after: f64,
    /// Extra delay before each call, uniform between the two bounds (either
    /// order) at millisecond granularity, slept with `tokio::time::sleep`,
    /// so it is virtual time under a paused runtime. A blocking read's
    /// delay is taken out of its `BLOCK` time, never added to it.
    pub latency: Option<(Duration, Duration)>,
    /// The operations faults apply to; the others pass through untouched.
    pub ops: OpSet,
    /// The probability that a call is refused by the server with an error
    /// reply of a failover, restart or memory pressure
    /// ([`ServerError`](super::ServerError): `READONLY`, `LOADING`, `OOM`,
    /// `NOSCRIPT`), as [`Error::Unavailable`](crewq_core::Error::Unavailable):
    /// nothing applied. Drawn after the two above, from its own generator
    /// stream, only for a call they leave alone. 0 (never) to 1 (always).
    pub refused: f64,
    /// The probability that each item of a `settle` call is refused on its
    /// own ([`Settled::Failed`](crewq_core::Settled::Failed) with a
    /// `WRONGTYPE` or `OOM` text): nothing is written for it and it stays
    /// pending, while the other items of the call settle. 0 to 1.
    pub item_failure: f64,
    /// Half-open links: calls on a connection one silenced hang until its
    /// time-out (see [`HalfOpen`]).
    pub half_open: Vec<HalfOpen>,
    /// Outages: every call that starts in one of these windows (tokio
    /// time) fails at once with a transient connection error, nothing
    /// applied, as against a server that is down ([`Fault::Outage`](super::Fault::Outage)).
    pub outages: Vec<std::ops::Range<tokio::time::Instant>>,
}

/// A link gone silent (no FIN, no RST) for a window of time, on some of
/// one client's connections.
///
/// It strikes connections, not calls, as crewq meets it on Redis: the
/// backend sends ordinary calls on one shared multiplexed connection and
/// each blocking read of new entries on a pooled connection of its own
/// ([`Conn`]); a middlebox that loses or blackholes flows (a NAT or
/// conntrack table, a load balancer, an ECMP path) silences flows, so
/// [`flows`](HalfOpen::flows) says which kind goes silent.
///
/// A connection of that kind in use at [`from`](HalfOpen::from), or opened
/// before [`until`](HalfOpen::until), is silent: every call on it hangs for
/// [`timeout`](HalfOpen::timeout), as the backend's response time-out (or a
/// blocking read's deadline) lets it, then fails with
/// [`Error::Timeout`](crewq_core::Error::Timeout). Whether the server got
/// the command before the link went silent is drawn per call: it may have
/// applied. The backend drops a connection that timed out and opens a new
/// one for the next call, so a silent connection stays silent past `until`
/// until a call on it times out; one opened after `until` works. Faults
/// switched off end it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfOpen {
    /// When the link goes silent (tokio time).
    pub from: tokio::time::Instant,
    /// When connections opened from then on work again.
    pub until: tokio::time::Instant,
    /// How long a call hangs before it times out.
    pub timeout: Duration,
    /// Which connections go silent.
    pub flows: Flows,
}

/// Which of a client's connections a call goes on, as the Redis backend
/// routes it (`backend-redis/src/broker.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conn {
    /// The shared multiplexed connection: every call but a blocking read.
    Shared,
    /// A pooled connection of its own: a read of new entries with `BLOCK`.
    Blocking,
}

impl Conn {
    /// Its index among a client's connection kinds.
    pub(super) fn index(self) -> usize {
        match self {
            Conn::Shared => 0,
            Conn::Blocking => 1,
        }
    }
}

/// Which connections of a client a [`HalfOpen`] link silences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flows {
    /// The shared connection: ordinary calls hang, blocking reads work.
    Shared,
    /// The blocking-read connections: reads of new entries hang, the rest
    /// works.
    Blocking,
    /// Every connection of the client.
    All,
}

impl Flows {
    /// Every choice, in a fixed order (draws index into it).
    pub const ALL: [Flows; 3] = [Flows::Shared, Flows::Blocking, Flows::All];

    /// Whether a link of these flows silences `conn`.
    pub fn silences(self, conn: Conn) -> bool {
        match self {
            Flows::Shared => conn == Conn::Shared,
            Flows::Blocking => conn == Conn::Blocking,
            Flows::All => true,
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            error_before: 0.0,
            error_after: 0.0,
            latency: None,
            ops: OpSet::all(),
            refused: 0.0,
            item_failure: 0.0,
            half_open: Vec::new(),
            outages: Vec::new(),
        }
    }
}
