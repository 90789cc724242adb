//! [`BrokerLayer`]: a broker that wraps another is written as what it
//! changes, the way OpenDAL writes its layers.
//!
//! Fault injection, recording, a link that hangs, a broker rolled back to a
//! snapshot: each wraps a [`Broker`] and changes one or two of its methods,
//! or every call the same way. Forwarding the other twenty-odd methods by
//! hand is most of such a wrapper, and the part where a typo goes unseen.
//! Here each [`Broker`] method is listed once, in `broker_ops!`: that list
//! makes the [`BrokerOp`] enum, the [`BrokerLayer`] trait whose every method
//! forwards by default, and the one `impl Broker` for every layer.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaim, AutoClaimed, AutoClaimedRecorded, Broker,
    ConsumerInfo, ConsumerPruned, DelayOnce, DelayedOnce, DeletedRecord, DeliveredEntry, GroupInfo,
    GroupStart, IdRange, LanesRead, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, Promoted, RateAcquire, RateGrant, RateKeys, RateState, ReadGroup, ReadLanes,
    Result, Settle, Settled, StreamEntry, StreamId, StreamInfo, Trim,
};

/// A call on a broker, not started yet, as [`BrokerLayer::around`] takes
/// and returns it: boxed, as `async_trait` makes every [`Broker`] call.
pub type BrokerCall<'a, T> = BoxFuture<'a, Result<T>>;

/// Makes, from one line per [`Broker`] method (its [`BrokerOp`] variant,
/// whether it can change state, its signature), the enum, the layer trait
/// and the blanket `impl Broker`, so the three cannot disagree.
macro_rules! broker_ops {
    ($(
        $op:ident $kind:ident fn $name:ident($($arg:ident: $arg_ty:ty),*) -> $ret:ty;
    )*) => {
        /// A [`Broker`] method, one variant per trait method, in the trait's
        /// order: what [`BrokerLayer::around`] is told it wraps.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum BrokerOp {
            $(
                #[doc = concat!("[`Broker::", stringify!($name), "`].")]
                $op,
            )*
        }

        impl BrokerOp {
            /// Every operation, in declaration order.
            pub const ALL: [BrokerOp; [$(stringify!($op)),*].len()] = [$(BrokerOp::$op),*];

            /// The trait method's name (`"read_group"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(BrokerOp::$op => stringify!($name),)*
                }
            }

            /// Whether the operation can change the broker's state.
            ///
            /// `read_group` counts as a write, as `XREADGROUP` does in Redis:
            /// it moves entries into the pending list and counts deliveries.
            /// Only the length, range, pending and info queries are reads.
            pub fn is_write(self) -> bool {
                match self {
                    $(BrokerOp::$op => broker_ops!(@is_write $kind),)*
                }
            }
        }

        /// A [`Broker`] that wraps another and changes only some of what it
        /// does: implement [`inner`](BrokerLayer::inner) and the methods that
        /// change, and the type is a [`Broker`].
        ///
        /// Every [`Broker`] method has a default here that calls the inner
        /// broker's through [`around`](BrokerLayer::around), so a wrapper
        /// that does the same to every call (delay it, fail it, count it)
        /// overrides `around` alone, and one that changes a method overrides
        /// that method (whose override then skips `around`, unless it calls
        /// it). `Arc<B>`, `Box<B>` and `&B` are layers that change nothing.
        ///
        /// Name the trait by its path in the `impl` rather than importing it
        /// where wrappers are used: with both traits in scope, a method call
        /// on a wrapper could be either, and Rust refuses it as ambiguous.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> crewq_core::Result<()> {
        /// use std::sync::atomic::{AtomicU64, Ordering};
        ///
        /// use crewq_core::{Broker, BrokerCall, BrokerOp, Fields, GroupStart, NewEntry};
        /// use crewq_core::{ReadGroup, Result, StreamId};
        ///
        /// /// Counts acknowledged entries, and every call that can write.
        /// struct Counting<B> {
        ///     inner: B,
        ///     acked: AtomicU64,
        ///     writes: AtomicU64,
        /// }
        ///
        /// #[async_trait::async_trait]
        /// impl<B: Broker> crewq_core::BrokerLayer for Counting<B> {
        ///     type Inner = B;
        ///
        ///     fn inner(&self) -> &B {
        ///         &self.inner
        ///     }
        ///
        ///     fn around<'a, T: Send + 'a>(
        ///         &'a self,
        ///         op: BrokerOp,
        ///         call: BrokerCall<'a, T>,
        ///     ) -> BrokerCall<'a, T> {
        ///         if op.is_write() {
        ///             self.writes.fetch_add(1, Ordering::Relaxed);
        ///         }
        ///         call
        ///     }
        ///
        ///     async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        ///         let acked = self.inner.ack(stream, group, ids).await?;
        ///         self.acked.fetch_add(acked, Ordering::Relaxed);
        ///         Ok(acked)
        ///     }
        /// }
        ///
        /// let broker = Counting {
        ///     inner: crewq_memory::MemoryBroker::new(),
        ///     acked: AtomicU64::new(0),
        ///     writes: AtomicU64::new(0),
        /// };
        /// broker.group_create("tasks", "workers", GroupStart::BEGINNING, true).await?;
        /// broker.xadd(NewEntry::new("tasks", Fields::new().with("data", "{}"))).await?;
        /// let read = ReadGroup::new("tasks", "workers", "worker-1");
        /// for entry in broker.read_group(&read).await? {
        ///     broker.ack("tasks", "workers", &[entry.id, entry.id]).await?;
        /// }
        /// assert_eq!(broker.xlen("tasks").await?, 1, "a read: not counted");
        /// assert_eq!(broker.acked.load(Ordering::Relaxed), 1);
        /// // group_create, xadd, read_group; ack is overridden, so not `around`.
        /// assert_eq!(broker.writes.load(Ordering::Relaxed), 3);
        /// # Ok(()) }
        /// ```
        #[async_trait::async_trait]
        pub trait BrokerLayer: Send + Sync {
            /// The broker wrapped.
            type Inner: Broker + ?Sized;

            /// The broker wrapped, which the default methods call.
            fn inner(&self) -> &Self::Inner;

            /// Runs `call`, a call of `op` on the inner broker not started
            /// yet, for every method not overridden. The default runs it as
            /// it is; override it to change every call alike.
            fn around<'a, T: Send + 'a>(
                &'a self,
                op: BrokerOp,
                call: BrokerCall<'a, T>,
            ) -> BrokerCall<'a, T> {
                let _ = op;
                call
            }

            $(
                #[doc = concat!(
                    "[`Broker::", stringify!($name), "`] of the inner broker, through ",
                    "[`around`](BrokerLayer::around)."
                )]
                async fn $name(&self, $($arg: $arg_ty),*) -> $ret {
                    self.around(BrokerOp::$op, self.inner().$name($($arg),*)).await
                }
            )*
        }

        #[async_trait::async_trait]
        impl<L: BrokerLayer> Broker for L {
            $(
                async fn $name(&self, $($arg: $arg_ty),*) -> $ret {
                    BrokerLayer::$name(self, $($arg),*).await
                }
            )*
        }
    };
    (@is_write write) => { true };
    (@is_write read) => { false };
}

broker_ops! {
    Xadd write fn xadd(entry: NewEntry) -> Result<StreamId>;
    XaddMany write fn xadd_many(entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>>;
    XaddOnce write fn xadd_once(entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>>;
    Xlen read fn xlen(stream: &str) -> Result<u64>;
    Xrange read fn xrange(stream: &str, range: IdRange, count: Option<usize>)
        -> Result<Vec<StreamEntry>>;
    Xdel write fn xdel(stream: &str, ids: &[StreamId]) -> Result<u64>;
    Xtrim write fn xtrim(stream: &str, trim: Trim) -> Result<u64>;
    GroupCreate write fn group_create(stream: &str, group: &str, start: GroupStart, mkstream: bool)
        -> Result<()>;
    GroupDestroy write fn group_destroy(stream: &str, group: &str) -> Result<bool>;
    ConsumerDelete write fn consumer_delete(stream: &str, group: &str, consumer: &str)
        -> Result<u64>;
    ConsumerDeleteIfIdle write fn consumer_delete_if_idle(
        stream: &str, group: &str, consumer: &str, min_idle: Duration
    ) -> Result<ConsumerPruned>;
    ReadGroup write fn read_group(read: &ReadGroup) -> Result<Vec<DeliveredEntry>>;
    ReadLanes write fn read_lanes(read: &ReadLanes) -> Result<LanesRead>;
    Ack write fn ack(stream: &str, group: &str, ids: &[StreamId]) -> Result<u64>;
    PendingSummary read fn pending_summary(stream: &str, group: &str) -> Result<PendingSummary>;
    Pending read fn pending(stream: &str, group: &str, query: &PendingQuery)
        -> Result<Vec<PendingEntry>>;
    Claim write fn claim(
        stream: &str, group: &str, consumer: &str, min_idle: Duration, ids: &[StreamId]
    ) -> Result<Vec<StreamEntry>>;
    ClaimIds write fn claim_ids(
        stream: &str, group: &str, consumer: &str, min_idle: Duration, ids: &[StreamId]
    ) -> Result<Vec<StreamId>>;
    Autoclaim write fn autoclaim(
        stream: &str, group: &str, consumer: &str, min_idle: Duration, start: StreamId,
        count: usize
    ) -> Result<AutoClaimed>;
    AutoclaimRecorded write fn autoclaim_recorded(claim: &AutoClaim, record: &DeletedRecord)
        -> Result<AutoClaimedRecorded>;
    InfoStream read fn info_stream(stream: &str) -> Result<StreamInfo>;
    InfoGroups read fn info_groups(stream: &str) -> Result<Vec<GroupInfo>>;
    InfoConsumers read fn info_consumers(stream: &str, group: &str) -> Result<Vec<ConsumerInfo>>;
    AckAndAdd write fn ack_and_add(step: AckAndAdd) -> Result<AckAndAddReply>;
    Settle write fn settle(settle: Settle) -> Result<Vec<Settled>>;
    Renew write fn renew(stream: &str, group: &str, consumer: &str, ids: &[StreamId])
        -> Result<Vec<StreamId>>;
    Promote write fn promote(set: &str, stream: &str, count: usize) -> Result<Promoted>;
    DelayOnce write fn delay_once(entries: Vec<DelayOnce>) -> Result<Vec<Result<DelayedOnce>>>;
    DelayedLen read fn delayed_len(set: &str) -> Result<u64>;
    RateAcquire write fn rate_acquire(acquire: RateAcquire) -> Result<RateGrant>;
    RateRenew write fn rate_renew(keys: &RateKeys, permits: &[String], lease: Duration)
        -> Result<Vec<String>>;
    RateRelease write fn rate_release(keys: &RateKeys, finished: &[String], unused: &[String])
        -> Result<u64>;
    RatePause write fn rate_pause(keys: &RateKeys, pause: Duration) -> Result<Duration>;
    RateState read fn rate_state(keys: &RateKeys) -> Result<RateState>;
}

impl std::fmt::Display for BrokerOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
