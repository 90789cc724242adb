//! What a [`FaultyBroker`](super::FaultyBroker) injects: the operations it
//! knows ([`Op`]), which of them faults apply to ([`OpSet`]), and how often
//! and how badly ([`FaultConfig`]).

use std::fmt;
use std::time::Duration;

/// A [`Broker`](crewq_core::Broker) method, one variant per trait method.
/// Names operations in an [`OpSet`] and in the fault log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// [`Broker::xadd`](crewq_core::Broker::xadd).
    Xadd,
    /// [`Broker::xadd_many`](crewq_core::Broker::xadd_many).
    XaddMany,
    /// [`Broker::xadd_once`](crewq_core::Broker::xadd_once).
    XaddOnce,
    /// [`Broker::xlen`](crewq_core::Broker::xlen).
    Xlen,
    /// [`Broker::xrange`](crewq_core::Broker::xrange).
    Xrange,
    /// [`Broker::xdel`](crewq_core::Broker::xdel).
    Xdel,
    /// [`Broker::xtrim`](crewq_core::Broker::xtrim).
    Xtrim,
    /// [`Broker::group_create`](crewq_core::Broker::group_create).
    GroupCreate,
    /// [`Broker::group_destroy`](crewq_core::Broker::group_destroy).
    GroupDestroy,
    /// [`Broker::consumer_delete`](crewq_core::Broker::consumer_delete).
    ConsumerDelete,
    /// [`Broker::read_group`](crewq_core::Broker::read_group).
    ReadGroup,
    /// [`Broker::ack`](crewq_core::Broker::ack).
    Ack,
    /// [`Broker::pending_summary`](crewq_core::Broker::pending_summary).
    PendingSummary,
    /// [`Broker::pending`](crewq_core::Broker::pending).
    Pending,
    /// [`Broker::claim`](crewq_core::Broker::claim).
    Claim,
    /// [`Broker::claim_ids`](crewq_core::Broker::claim_ids).
    ClaimIds,
    /// [`Broker::autoclaim`](crewq_core::Broker::autoclaim).
    Autoclaim,
    /// [`Broker::info_stream`](crewq_core::Broker::info_stream).
    InfoStream,
    /// [`Broker::info_groups`](crewq_core::Broker::info_groups).
    InfoGroups,
    /// [`Broker::info_consumers`](crewq_core::Broker::info_consumers).
    InfoConsumers,
    /// [`Broker::ack_and_add`](crewq_core::Broker::ack_and_add).
    AckAndAdd,
    /// [`Broker::settle`](crewq_core::Broker::settle).
    Settle,
    /// [`Broker::renew`](crewq_core::Broker::renew).
    Renew,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 23] = [
        Op::Xadd,
        Op::XaddMany,
        Op::XaddOnce,
        Op::Xlen,
        Op::Xrange,
        Op::Xdel,
        Op::Xtrim,
        Op::GroupCreate,
        Op::GroupDestroy,
        Op::ConsumerDelete,
        Op::ReadGroup,
        Op::Ack,
        Op::PendingSummary,
        Op::Pending,
        Op::Claim,
        Op::ClaimIds,
        Op::Autoclaim,
        Op::InfoStream,
        Op::InfoGroups,
        Op::InfoConsumers,
        Op::AckAndAdd,
        Op::Settle,
        Op::Renew,
    ];

    /// The trait method's name (`"read_group"`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Xadd => "xadd",
            Op::XaddMany => "xadd_many",
            Op::XaddOnce => "xadd_once",
            Op::Xlen => "xlen",
            Op::Xrange => "xrange",
            Op::Xdel => "xdel",
            Op::Xtrim => "xtrim",
            Op::GroupCreate => "group_create",
            Op::GroupDestroy => "group_destroy",
            Op::ConsumerDelete => "consumer_delete",
            Op::ReadGroup => "read_group",
            Op::Ack => "ack",
            Op::PendingSummary => "pending_summary",
            Op::Pending => "pending",
            Op::Claim => "claim",
            Op::ClaimIds => "claim_ids",
            Op::Autoclaim => "autoclaim",
            Op::InfoStream => "info_stream",
            Op::InfoGroups => "info_groups",
            Op::InfoConsumers => "info_consumers",
            Op::AckAndAdd => "ack_and_add",
            Op::Settle => "settle",
            Op::Renew => "renew",
        }
    }

    /// Whether the operation can change the broker's state.
    ///
    /// `read_group` counts as a write, as `XREADGROUP` does in Redis: it
    /// moves entries into the pending list and counts deliveries. Only the
    /// length, range, pending and info queries are reads.
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            Op::Xlen
                | Op::Xrange
                | Op::PendingSummary
                | Op::Pending
                | Op::InfoStream
                | Op::InfoGroups
                | Op::InfoConsumers
        )
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
pub struct OpSet(u32);

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
        OpSet(self.0 | op.bit())
    }

    /// This set without `op`.
    #[must_use]
    pub fn without(self, op: Op) -> Self {
        OpSet(self.0 & !op.bit())
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
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
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            error_before: 0.0,
            error_after: 0.0,
            latency: None,
            ops: OpSet::all(),
        }
    }
}
