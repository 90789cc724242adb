//! Differential test: random sequences of `Broker` operations must get the
//! same replies from `MemoryBroker` and from a real Redis.
//!
//! proptest generates 10–60 operations over three streams, two groups and
//! three consumers. Each case runs them on a fresh `MemoryBroker` and, under a
//! fresh key prefix, on one private redis-server shared by the whole run
//! (and, in `differential_memory_vs_cluster`, on a private Redis Cluster);
//! then it reads back the whole state of both (the epilogue). Every reply is
//! compared: `Ok` values after normalisation, errors by `kind()`.
//!
//! Normalisation, and how the generator keeps replies comparable:
//! - idle times are dropped: the two backends run on different clocks, so
//!   `min_idle` is only ever zero or a day;
//! - explicit ids are small (`ms` below [`TIME_IDS_FROM`]) and kept as they
//!   are; ids a clock made are replaced by tokens (`t0`, `t1` ...) numbered
//!   per stream in order of first appearance on each backend: both backends
//!   hand out automatic ids in the same order, only not at the same ms;
//! - so that no id depends on a clock, a stream takes no "next" explicit id
//!   after its first automatic one (those adds become automatic), and "the id
//!   just after an entry" is only derived from explicit ids.
//!
//! - delayed sets (`delay_once`, `promote`, `delayed_len`) depend on the
//!   broker's clock: a member is due its delay after the broker's now. So
//!   delays are either 0 (due at once: any later promote finds it due, on
//!   both clocks) or a day (never due within a case), never in between;
//!   markers are kept a day (or for 0 ms, which both must reject); each
//!   member's token is a number given in generation order, zero-padded, so
//!   that members due in the same ms (ordered by member) and in different
//!   ms (ordered by time) come out in the same order on both backends; a
//!   promote's `next_due_in` is compared as none / due now (under an hour)
//!   / later; and a promoted entry's id is automatic, so its stream counts
//!   as one with automatic ids. Settles put members in delayed sets too, as
//!   a failed attempt's retry does (`SettleDelayed`).
//!
//! `PROPTEST_CASES` overrides the 256 cases. A failing case is shrunk, and its
//! seed saved in `tests/proptest-regressions/differential.txt`, which every
//! later run replays first.

use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::time::Duration;

use crewq_core::{
    Ack, AckAndAdd, AddId, AddedOnce, AutoClaim, Broker, ConsumerPruned, Delay, DelayOnce,
    DelayedOnce, DeletedRecord, ErrorKind, Fields, GroupStart, IdRange, NewEntry, PendingQuery,
    ReadFrom, ReadGroup, Settle, SettleItem, Settled, StreamEntry, StreamId, Trim,
};
use crewq_memory::MemoryBroker;
use crewq_tests::redis_cluster::TestCluster;
use crewq_tests::redis_server::TestRedis;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

const STREAMS: usize = 3;
const GROUPS: usize = 2;
const CONSUMERS: usize = 3;
/// Group indices from here on mean "one of the stream's groups" (see [`group`]).
const EXISTING_GROUP: u8 = 2;
/// Ids with at least this many ms came from a clock (explicit ones are tiny).
const TIME_IDS_FROM: u64 = 1_000_000_000_000;
/// The ms of [`IdGen::Future`] ids: the year 2128.
const FUTURE_MS: u64 = 5_000_000_000_000;
/// A `min_idle` no entry reaches during a case.
const HUGE_IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// Rows asked of `XPENDING` when reading back the whole pending list.
const ALL_ROWS: usize = 10_000;
const DEFAULT_CASES: u32 = 256;
/// The field of an `autoclaim_recorded` record naming the claimed stream.
const RECORD_FROM: &str = "deleted_from";
/// The field of an `autoclaim_recorded` record holding the deleted id.
const RECORD_ID: &str = "deleted_id";
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/differential.txt"
);

// ---------------------------------------------------------------------------
// The generated operations. Streams, groups and consumers are indices; ids
// are recipes resolved against what each backend has answered so far.

/// How an appended entry's id is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdGen {
    /// Explicit: the stream's top id plus a gap (`ms_gap` 0 bumps the seq).
    Next { ms_gap: u8, seq: u8 },
    /// `*`.
    Auto,
    /// Explicit `0-0`: always too small.
    Zero,
    /// Explicit, equal to the stream's top id: too small.
    EqualTop,
    /// Explicit, just below the stream's top id: too small.
    BelowTop,
    /// Explicit, the largest id: the stream is then exhausted.
    Max,
    /// Explicit, far in the future ([`FUTURE_MS`]) and above the top id:
    /// later automatic ids keep its ms and count up its seq, on every clock.
    Future,
}

/// An id an operation refers to.
#[derive(Clone, Copy, Debug)]
enum IdRef {
    /// The (n mod len)-th id ever added to the stream.
    Added(u8),
    /// The (n mod len)-th id a `New` read of the stream delivered (to any
    /// group): likely pending somewhere. `Added(n)` before the first one.
    Delivered(u8),
    /// Just after that id (the id itself when a clock made it).
    After(u8),
    /// A small literal `ms-seq`.
    Lit(u8, u8),
    Zero,
    Max,
}

#[derive(Clone, Copy, Debug)]
enum BoundGen {
    Unbounded,
    Included(IdRef),
    Excluded(IdRef),
}

#[derive(Clone, Copy, Debug)]
enum TrimGen {
    MaxLen(u64),
    MinId(IdRef),
}

#[derive(Clone, Copy, Debug)]
enum StartGen {
    Zero,
    Latest,
    After(IdRef),
}

#[derive(Clone, Copy, Debug)]
enum Idle {
    Zero,
    Huge,
}

#[derive(Clone, Copy, Debug)]
enum ClaimFrom {
    At(IdRef),
    /// The cursor the last autoclaim of this stream and group returned.
    Cursor,
}

/// One entry to append: `n` fields named from `data`, `n`, `data` (a name
/// may repeat), valued `<tag>.<i>`, or empty when `tag` is a multiple of 16.
#[derive(Clone, Copy, Debug)]
struct AddGen {
    s: u8,
    id: IdGen,
    n: u8,
    tag: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Xadd {
        add: AddGen,
        trim: Option<TrimGen>,
    },
    XaddMany(Vec<AddGen>),
    Xlen(u8),
    Xrange {
        s: u8,
        lo: BoundGen,
        hi: BoundGen,
        count: Option<usize>,
    },
    Xdel {
        s: u8,
        ids: Vec<IdRef>,
    },
    Xtrim {
        s: u8,
        trim: TrimGen,
    },
    GroupCreate {
        s: u8,
        g: u8,
        start: StartGen,
        mkstream: bool,
    },
    GroupDestroy {
        s: u8,
        g: u8,
    },
    ConsumerDelete {
        s: u8,
        g: u8,
        c: u8,
    },
    ConsumerDeleteIfIdle {
        s: u8,
        g: u8,
        c: u8,
        min_idle: Idle,
    },
    ReadNew {
        s: u8,
        g: u8,
        c: u8,
        count: Option<usize>,
    },
    ReadPending {
        s: u8,
        g: u8,
        c: u8,
        after: IdRef,
        count: Option<usize>,
    },
    Ack {
        s: u8,
        g: u8,
        ids: Vec<IdRef>,
    },
    PendingSummary {
        s: u8,
        g: u8,
    },
    Pending {
        s: u8,
        g: u8,
        lo: BoundGen,
        hi: BoundGen,
        count: usize,
        consumer: Option<u8>,
        min_idle: Option<Idle>,
    },
    Claim {
        s: u8,
        g: u8,
        c: u8,
        min_idle: Idle,
        ids: Vec<IdRef>,
        just_id: bool,
    },
    AutoClaim {
        s: u8,
        g: u8,
        c: u8,
        min_idle: Idle,
        from: ClaimFrom,
        count: usize,
        /// `autoclaim_recorded`, its records appended to this stream.
        record: Option<u8>,
    },
    InfoStream(u8),
    InfoGroups(u8),
    InfoConsumers {
        s: u8,
        g: u8,
    },
    AckAndAdd {
        acks: Vec<(u8, u8, Vec<IdRef>)>,
        adds: Vec<AddGen>,
    },
    /// Items: an id and the entries to append when it is settled.
    Settle {
        s: u8,
        g: u8,
        c: u8,
        items: Vec<(IdRef, Vec<AddGen>)>,
    },
    Renew {
        s: u8,
        g: u8,
        c: u8,
        ids: Vec<IdRef>,
    },
    /// `delay_once` into the delayed set of stream `s`.
    DelayOnce {
        s: u8,
        entries: Vec<DelayGen>,
    },
    /// `promote` from the delayed set of stream `set` into stream `s`.
    Promote {
        set: u8,
        s: u8,
        count: usize,
    },
    DelayedLen(u8),
    /// A settle whose items each put entries in delayed sets (a failed
    /// attempt's retry), appending nothing.
    SettleDelayed {
        s: u8,
        g: u8,
        c: u8,
        items: Vec<(IdRef, Vec<DelayGen>)>,
    },
}

/// One entry of a `delay_once`: its fields as an append's, one of three
/// markers, due at once or in a day, a valid window (a day) or an invalid
/// one (0 ms), and its token, numbered by [`Plan::effective`].
#[derive(Clone, Copy, Debug)]
struct DelayGen {
    add: AddGen,
    marker: u8,
    later: bool,
    valid_window: bool,
    token: u32,
}

// Skewed towards the first stream and group so that state builds up where
// the reads and claims look.
fn stream() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![6 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)]
}

/// `0` and `1` name `g0` and `g1`; [`EXISTING_GROUP`] and above pick a group
/// the stream has, when it has one.
fn group() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        2 => Just(0u8),
        1 => Just(1u8),
        4 => EXISTING_GROUP..=EXISTING_GROUP + 1,
    ]
}

fn consumer() -> impl Strategy<Value = u8> + Clone {
    0..CONSUMERS as u8
}

fn id_ref() -> impl Strategy<Value = IdRef> + Clone {
    prop_oneof![
        5 => any::<u8>().prop_map(IdRef::Added),
        5 => any::<u8>().prop_map(IdRef::Delivered),
        2 => any::<u8>().prop_map(IdRef::After),
        2 => (0..12u8, 0..3u8).prop_map(|(ms, seq)| IdRef::Lit(ms, seq)),
        1 => Just(IdRef::Zero),
        1 => Just(IdRef::Max),
    ]
}

fn id_refs() -> impl Strategy<Value = Vec<IdRef>> + Clone {
    vec(id_ref(), 0..4)
}

fn bound() -> impl Strategy<Value = BoundGen> + Clone {
    prop_oneof![
        2 => Just(BoundGen::Unbounded),
        3 => id_ref().prop_map(BoundGen::Included),
        2 => id_ref().prop_map(BoundGen::Excluded),
    ]
}

fn id_gen() -> impl Strategy<Value = IdGen> + Clone {
    prop_oneof![
        40 => (0..3u8, 0..3u8).prop_map(|(ms_gap, seq)| IdGen::Next { ms_gap, seq }),
        6 => Just(IdGen::Auto),
        1 => Just(IdGen::Zero),
        1 => Just(IdGen::EqualTop),
        1 => Just(IdGen::BelowTop),
        1 => Just(IdGen::Max),
        1 => Just(IdGen::Future),
    ]
}

fn add_with(ids: impl Strategy<Value = IdGen> + Clone) -> impl Strategy<Value = AddGen> + Clone {
    let n = prop_oneof![1 => Just(0u8), 12 => Just(1u8), 4 => Just(2u8), 2 => Just(3u8)];
    (stream(), ids, n, any::<u8>()).prop_map(|(s, id, n, tag)| AddGen { s, id, n, tag })
}

fn trim() -> impl Strategy<Value = TrimGen> + Clone {
    prop_oneof![
        (0..4u64).prop_map(TrimGen::MaxLen),
        id_ref().prop_map(TrimGen::MinId),
    ]
}

fn start_gen() -> impl Strategy<Value = StartGen> + Clone {
    prop_oneof![
        2 => Just(StartGen::Zero),
        2 => Just(StartGen::Latest),
        2 => id_ref().prop_map(StartGen::After),
    ]
}

fn read_count() -> impl Strategy<Value = Option<usize>> + Clone {
    prop_oneof![2 => Just(None), 1 => Just(Some(0)), 3 => (1..4usize).prop_map(Some)]
}

fn idle_gen() -> impl Strategy<Value = Idle> + Clone {
    prop_oneof![3 => Just(Idle::Zero), 1 => Just(Idle::Huge)]
}

fn op() -> impl Strategy<Value = Op> {
    let arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            14,
            (add_with(id_gen()), prop::option::weighted(0.2, trim()))
                .prop_map(|(add, trim)| Op::Xadd { add, trim })
                .boxed(),
        ),
        (
            3,
            vec(add_with(id_gen()), 0..5).prop_map(Op::XaddMany).boxed(),
        ),
        (1, stream().prop_map(Op::Xlen).boxed()),
        (
            3,
            (stream(), bound(), bound(), read_count())
                .prop_map(|(s, lo, hi, count)| Op::Xrange { s, lo, hi, count })
                .boxed(),
        ),
        (
            3,
            (stream(), id_refs())
                .prop_map(|(s, ids)| Op::Xdel { s, ids })
                .boxed(),
        ),
        (
            2,
            (stream(), trim())
                .prop_map(|(s, trim)| Op::Xtrim { s, trim })
                .boxed(),
        ),
        (
            10,
            (stream(), group(), start_gen(), prop::bool::weighted(0.8))
                .prop_map(|(s, g, start, mkstream)| Op::GroupCreate {
                    s,
                    g,
                    start,
                    mkstream,
                })
                .boxed(),
        ),
        (
            1,
            (stream(), group())
                .prop_map(|(s, g)| Op::GroupDestroy { s, g })
                .boxed(),
        ),
        (
            1,
            (stream(), group(), consumer())
                .prop_map(|(s, g, c)| Op::ConsumerDelete { s, g, c })
                .boxed(),
        ),
        (
            2,
            (stream(), group(), consumer(), idle_gen())
                .prop_map(|(s, g, c, min_idle)| Op::ConsumerDeleteIfIdle { s, g, c, min_idle })
                .boxed(),
        ),
        (
            10,
            (stream(), group(), consumer(), read_count())
                .prop_map(|(s, g, c, count)| Op::ReadNew { s, g, c, count })
                .boxed(),
        ),
        (
            5,
            (stream(), group(), consumer(), id_ref(), read_count())
                .prop_map(|(s, g, c, after, count)| Op::ReadPending {
                    s,
                    g,
                    c,
                    after,
                    count,
                })
                .boxed(),
        ),
        (
            5,
            (stream(), group(), id_refs())
                .prop_map(|(s, g, ids)| Op::Ack { s, g, ids })
                .boxed(),
        ),
        (
            2,
            (stream(), group())
                .prop_map(|(s, g)| Op::PendingSummary { s, g })
                .boxed(),
        ),
        (
            3,
            (
                stream(),
                group(),
                bound(),
                bound(),
                0..5usize,
                prop::option::of(consumer()),
                prop::option::of(idle_gen()),
            )
                .prop_map(|(s, g, lo, hi, count, consumer, min_idle)| Op::Pending {
                    s,
                    g,
                    lo,
                    hi,
                    count,
                    consumer,
                    min_idle,
                })
                .boxed(),
        ),
        (
            6,
            (
                stream(),
                group(),
                consumer(),
                idle_gen(),
                id_refs(),
                any::<bool>(),
            )
                .prop_map(|(s, g, c, min_idle, ids, just_id)| Op::Claim {
                    s,
                    g,
                    c,
                    min_idle,
                    ids,
                    just_id,
                })
                .boxed(),
        ),
        (
            6,
            (
                stream(),
                group(),
                consumer(),
                idle_gen(),
                prop_oneof![
                    2 => id_ref().prop_map(ClaimFrom::At),
                    1 => Just(ClaimFrom::Cursor),
                ],
                prop_oneof![1 => Just(0usize), 8 => 1..4usize],
                prop_oneof![1 => Just(None), 1 => stream().prop_map(Some)],
            )
                .prop_map(|(s, g, c, min_idle, from, count, record)| Op::AutoClaim {
                    s,
                    g,
                    c,
                    min_idle,
                    from,
                    count,
                    record,
                })
                .boxed(),
        ),
        (2, stream().prop_map(Op::InfoStream).boxed()),
        (2, stream().prop_map(Op::InfoGroups).boxed()),
        (
            2,
            (stream(), group())
                .prop_map(|(s, g)| Op::InfoConsumers { s, g })
                .boxed(),
        ),
        (
            3,
            (
                vec((stream(), group(), id_refs()), 0..3),
                vec(
                    add_with(prop_oneof![12 => Just(IdGen::Auto), 1 => id_gen()]),
                    0..3,
                ),
            )
                .prop_map(|(acks, adds)| Op::AckAndAdd { acks, adds })
                .boxed(),
        ),
        (
            4,
            (
                stream(),
                group(),
                consumer(),
                vec(
                    (
                        id_ref(),
                        vec(
                            add_with(prop_oneof![12 => Just(IdGen::Auto), 1 => id_gen()]),
                            0..3,
                        ),
                    ),
                    0..4,
                ),
            )
                .prop_map(|(s, g, c, items)| Op::Settle { s, g, c, items })
                .boxed(),
        ),
        (
            3,
            (stream(), group(), consumer(), vec(id_ref(), 0..4))
                .prop_map(|(s, g, c, ids)| Op::Renew { s, g, c, ids })
                .boxed(),
        ),
        (
            4,
            (stream(), vec(delay_gen(), 0..4))
                .prop_map(|(s, entries)| Op::DelayOnce { s, entries })
                .boxed(),
        ),
        (
            3,
            (stream(), stream(), 1..4usize)
                .prop_map(|(set, s, count)| Op::Promote { set, s, count })
                .boxed(),
        ),
        (1, stream().prop_map(Op::DelayedLen).boxed()),
        (
            3,
            (
                stream(),
                group(),
                consumer(),
                vec((id_ref(), vec(delay_gen(), 0..3)), 0..3),
            )
                .prop_map(|(s, g, c, items)| Op::SettleDelayed { s, g, c, items })
                .boxed(),
        ),
    ];
    Union::new_weighted(arms)
}

/// Up to 6 set-up operations (groups and entries, so that reads find
/// something), then 10 to 54 of any kind. Each is optional only so that
/// shrinking can drop it (an `Option` shrinks to `None`) below the minimum
/// length.
fn sequence() -> impl Strategy<Value = Vec<Option<Op>>> {
    let optional = |op| prop::option::weighted(0.97, op);
    (
        vec(optional(set_up_op().boxed()), 0..=6),
        vec(optional(op().boxed()), 10..=54),
    )
        .prop_map(|(mut set_up, ops)| {
            set_up.extend(ops);
            set_up
        })
}

fn delay_gen() -> impl Strategy<Value = DelayGen> + Clone {
    (
        add_with(Just(IdGen::Auto)),
        0..3u8,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.95),
    )
        .prop_map(|(add, marker, later, valid_window)| DelayGen {
            add,
            marker,
            later,
            valid_window,
            token: 0,
        })
}

fn set_up_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (stream(), group(), start_gen(), prop::bool::weighted(0.9)).prop_map(
            |(s, g, start, mkstream)| Op::GroupCreate { s, g, start, mkstream }
        ),
        2 => add_with(id_gen()).prop_map(|add| Op::Xadd { add, trim: None }),
        1 => vec(add_with(id_gen()), 1..5).prop_map(Op::XaddMany),
    ]
}

/// Reads back everything both backends hold, after the generated operations.
fn epilogue() -> Vec<Op> {
    let all = |s| Op::Xrange {
        s,
        lo: BoundGen::Unbounded,
        hi: BoundGen::Unbounded,
        count: None,
    };
    let mut ops = Vec::new();
    for s in 0..STREAMS as u8 {
        ops.extend([all(s), Op::InfoStream(s), Op::InfoGroups(s)]);
        for g in 0..GROUPS as u8 {
            ops.push(Op::PendingSummary { s, g });
            ops.push(Op::Pending {
                s,
                g,
                lo: BoundGen::Unbounded,
                hi: BoundGen::Unbounded,
                count: ALL_ROWS,
                consumer: None,
                min_idle: None,
            });
            ops.push(Op::InfoConsumers { s, g });
        }
        ops.push(Op::DelayedLen(s));
    }
    ops
}

// ---------------------------------------------------------------------------
// Normalised replies.

/// An id as compared: literal, or the token of a clock-made id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NId {
    Lit(StreamId),
    Token(usize),
}

impl fmt::Debug for NId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NId::Lit(id) => write!(f, "{id}"),
            NId::Token(n) => write!(f, "t{n}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    id: NId,
    fields: Option<Fields>,
}

#[derive(Debug, PartialEq, Eq)]
struct Group {
    name: String,
    consumers: u64,
    pending: u64,
    last_delivered_id: NId,
    entries_read: Option<u64>,
    lag: Option<u64>,
}

/// A reply with idle times dropped and clock-made ids tokenised.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Unit,
    Bool(bool),
    Count(u64),
    Id(NId),
    Ids(Vec<NId>),
    Adds(Vec<Result<NId, ErrorKind>>),
    Entries(Vec<Entry>),
    Summary {
        count: u64,
        min_id: Option<NId>,
        max_id: Option<NId>,
        consumers: Vec<(String, u64)>,
    },
    /// `(id, consumer, deliveries)`.
    Pending(Vec<(NId, String, u64)>),
    AutoClaimed {
        next: NId,
        claimed: Vec<Entry>,
        deleted: Vec<NId>,
        /// `autoclaim_recorded`'s records: appended now (`true`) or found
        /// by their marker, and the id; `Err` when the append failed.
        records: Option<Vec<Result<(bool, NId), ()>>>,
    },
    Stream {
        length: u64,
        last_generated_id: NId,
        max_deleted_entry_id: NId,
        entries_added: u64,
        recorded_first_entry_id: NId,
        groups: u64,
        first_entry: Option<Entry>,
        last_entry: Option<Entry>,
    },
    Groups(Vec<Group>),
    /// `(name, pending)`.
    Consumers(Vec<(String, u64)>),
    /// `consumer_delete_if_idle`'s outcome, its idle time dropped: `Busy`
    /// with its pending count.
    Pruned(&'static str, Option<u64>),
    AckAndAdd {
        acked: Vec<u64>,
        ids: Vec<NId>,
    },
    /// Per item: the appended ids, `None` when not owned, or `Err` when its
    /// appends failed (the texts differ between backends; the fact does not).
    Settled(Vec<Result<Option<Vec<NId>>, ()>>),
    /// Per entry of a `delay_once`: scheduled (`None`), or the id its
    /// marker recorded.
    Delayed(Vec<Result<Option<NId>, ErrorKind>>),
    /// A promote's entries, and when the next member is due: `none`,
    /// `now` (under an hour: the clocks differ) or `later`.
    Promoted {
        entries: Vec<Entry>,
        next_due: &'static str,
    },
}

type Outcome = Result<Reply, ErrorKind>;

// ---------------------------------------------------------------------------
// Running operations on one backend.

/// What both backends share: which streams have had an automatic id, and
/// the tokens given to delayed members so far.
#[derive(Default)]
struct Plan {
    auto: [bool; STREAMS],
    tokens: u32,
}

impl Plan {
    /// The operation as both backends run it: once a stream has taken an
    /// automatic id, a "next" explicit id would depend on the clock, so it
    /// becomes automatic too.
    fn effective(&mut self, op: &Op) -> Op {
        let mut op = op.clone();
        let adds: &mut [AddGen] = match &mut op {
            Op::Xadd { add, .. } => std::slice::from_mut(add),
            Op::XaddMany(adds) | Op::AckAndAdd { adds, .. } => adds,
            Op::Settle { items, .. } => {
                for (_, adds) in items.iter_mut() {
                    self.pin(adds);
                }
                return op;
            }
            // Records get automatic ids (maybe none: it is safe to assume).
            Op::AutoClaim {
                record: Some(r), ..
            } => {
                self.auto[usize::from(*r) % STREAMS] = true;
                return op;
            }
            // So do promoted entries.
            Op::Promote { s, .. } => {
                self.auto[usize::from(*s) % STREAMS] = true;
                return op;
            }
            Op::DelayOnce { entries, .. } => {
                for entry in entries.iter_mut() {
                    entry.token = self.tokens;
                    self.tokens += 1;
                }
                return op;
            }
            Op::SettleDelayed { items, .. } => {
                for entry in items.iter_mut().flat_map(|(_, delays)| delays.iter_mut()) {
                    entry.token = self.tokens;
                    self.tokens += 1;
                }
                return op;
            }
            _ => &mut [],
        };
        self.pin(adds);
        op
    }

    /// Makes "next" explicit ids automatic in streams that had an automatic one.
    fn pin(&mut self, adds: &mut [AddGen]) {
        for add in adds {
            let s = usize::from(add.s) % STREAMS;
            match add.id {
                IdGen::Auto => self.auto[s] = true,
                IdGen::Next { .. } if self.auto[s] => add.id = IdGen::Auto,
                _ => {}
            }
        }
    }
}

/// One backend, with what it answered so far.
struct Side<'a> {
    broker: &'a dyn Broker,
    keys: &'a [String],
    /// Every id it gave an append, per stream, in order.
    added: [Vec<StreamId>; STREAMS],
    /// Every id a `New` read delivered, per stream, in order.
    delivered: [Vec<StreamId>; STREAMS],
    /// The groups each stream has, as this backend said.
    groups: [std::collections::BTreeSet<usize>; STREAMS],
    /// The last autoclaim cursor per stream and group.
    cursors: HashMap<(usize, usize), StreamId>,
    /// Tokens of clock-made ids per stream.
    tokens: [HashMap<StreamId, usize>; STREAMS],
}

fn consumer_name(c: u8) -> String {
    format!("c{}", usize::from(c) % CONSUMERS)
}

fn fields(add: &AddGen) -> Fields {
    const NAMES: [&str; 3] = ["data", "n", "data"];
    (0..usize::from(add.n).min(NAMES.len()))
        .map(|i| match add.tag % 16 {
            0 => (NAMES[i], String::new()),
            _ => (NAMES[i], format!("{}.{i}", add.tag)),
        })
        .collect()
}

fn idle(idle: Idle) -> Duration {
    match idle {
        Idle::Zero => Duration::ZERO,
        Idle::Huge => HUGE_IDLE,
    }
}

fn is_clock_made(id: StreamId) -> bool {
    id.ms >= TIME_IDS_FROM && id.ms != u64::MAX
}

impl<'a> Side<'a> {
    fn new(broker: &'a dyn Broker, keys: &'a [String]) -> Self {
        Side {
            broker,
            keys,
            added: Default::default(),
            delivered: Default::default(),
            groups: Default::default(),
            cursors: HashMap::new(),
            tokens: Default::default(),
        }
    }

    /// A group index below [`EXISTING_GROUP`] as it is; above, the
    /// (n mod count)-th group the stream has, or `g0` when it has none.
    fn group(&self, s: u8, g: u8) -> usize {
        let Some(n) = g.checked_sub(EXISTING_GROUP) else {
            return usize::from(g);
        };
        let groups = &self.groups[usize::from(s) % STREAMS];
        let nth = usize::from(n) % groups.len().max(1);
        groups.iter().nth(nth).copied().unwrap_or(0)
    }

    fn group_name(&self, s: u8, g: u8) -> String {
        format!("g{}", self.group(s, g))
    }

    /// Where an autoclaim starts: at an id, or at the last cursor.
    fn claim_start(&self, si: usize, gi: usize, s: u8, from: ClaimFrom) -> StreamId {
        match from {
            ClaimFrom::At(r) => self.id(s, r),
            ClaimFrom::Cursor => self
                .cursors
                .get(&(si, gi))
                .copied()
                .unwrap_or(StreamId::ZERO),
        }
    }

    fn key(&self, s: u8) -> &'a str {
        &self.keys[usize::from(s) % STREAMS]
    }

    /// The delayed set of stream `s` (in the case's hash tag on a cluster).
    fn delayed_key(&self, s: u8) -> String {
        format!("{}:delayed", self.key(s))
    }

    /// `d` as a member of the delayed set of its entry's stream: due at
    /// once or in a day, its token zero-padded.
    fn delay(&self, d: &DelayGen) -> Delay {
        let after = if d.later { HUGE_IDLE } else { Duration::ZERO };
        let token = format!("d{:06}", d.token);
        Delay::new(self.delayed_key(d.add.s), after, token, fields(&d.add))
    }

    /// Marker `m` of `delay_once` (in the case's hash tag on a cluster).
    fn marker_key(&self, m: u8) -> String {
        format!("{}:marker{}", self.key(0), usize::from(m) % 3)
    }

    /// The stream's last id: appends are the only thing that moves it.
    fn top(&self, s: usize) -> StreamId {
        self.added[s]
            .iter()
            .copied()
            .max()
            .unwrap_or(StreamId::ZERO)
    }

    /// The id of an append to a stream whose last id is `top`.
    fn new_id(top: StreamId, id: IdGen) -> AddId {
        let explicit = match id {
            IdGen::Auto => return AddId::Auto,
            IdGen::Next { ms_gap: 0, seq } => top
                .seq
                .checked_add(1 + u64::from(seq))
                .map_or(StreamId::MAX, |q| StreamId::new(top.ms, q)),
            IdGen::Next { ms_gap, seq } => top
                .ms
                .checked_add(u64::from(ms_gap))
                .map_or(StreamId::MAX, |ms| StreamId::new(ms, u64::from(seq))),
            IdGen::Zero => StreamId::ZERO,
            IdGen::EqualTop => top,
            IdGen::BelowTop => match (top.ms, top.seq) {
                (_, 1..) => StreamId::new(top.ms, top.seq - 1),
                (1.., 0) => StreamId::new(top.ms - 1, u64::MAX),
                (0, 0) => StreamId::ZERO,
            },
            IdGen::Max => StreamId::MAX,
            IdGen::Future => {
                if top.ms < FUTURE_MS {
                    StreamId::new(FUTURE_MS, 0)
                } else {
                    top.successor().unwrap_or(top)
                }
            }
        };
        AddId::Explicit(explicit)
    }

    /// Builds the appends of one call, each "next" id after the previous
    /// explicit one in the same call.
    fn entries(&self, adds: &[AddGen]) -> Vec<(usize, NewEntry)> {
        let mut tops: [StreamId; STREAMS] = std::array::from_fn(|s| self.top(s));
        adds.iter()
            .map(|add| {
                let s = usize::from(add.s) % STREAMS;
                let id = Self::new_id(tops[s], add.id);
                let mut entry = NewEntry::new(self.key(add.s), fields(add));
                if let AddId::Explicit(id) = id {
                    // Counted as if it succeeds: a deterministic guess, the
                    // same on both backends.
                    tops[s] = tops[s].max(id);
                    entry = entry.with_id(id);
                }
                (s, entry)
            })
            .collect()
    }

    fn id(&self, s: u8, r: IdRef) -> StreamId {
        let s = usize::from(s) % STREAMS;
        let pick = |ids: &[StreamId], n: u8| ids.get(usize::from(n) % ids.len().max(1)).copied();
        let nth = |n: u8| pick(&self.added[s], n);
        match r {
            IdRef::Added(n) => nth(n).unwrap_or(StreamId::new(1, 0)),
            IdRef::Delivered(n) => pick(&self.delivered[s], n)
                .or_else(|| nth(n))
                .unwrap_or(StreamId::new(1, 0)),
            IdRef::After(n) => match nth(n) {
                Some(id) if is_clock_made(id) => id,
                Some(id) => id.successor().unwrap_or(id),
                None => StreamId::new(1, 1),
            },
            IdRef::Lit(ms, seq) => StreamId::new(ms.into(), seq.into()),
            IdRef::Zero => StreamId::ZERO,
            IdRef::Max => StreamId::MAX,
        }
    }

    fn ids(&self, s: u8, refs: &[IdRef]) -> Vec<StreamId> {
        refs.iter().map(|r| self.id(s, *r)).collect()
    }

    fn bound(&self, s: u8, b: BoundGen) -> Bound<StreamId> {
        match b {
            BoundGen::Unbounded => Bound::Unbounded,
            BoundGen::Included(r) => Bound::Included(self.id(s, r)),
            BoundGen::Excluded(r) => Bound::Excluded(self.id(s, r)),
        }
    }

    fn range(&self, s: u8, lo: BoundGen, hi: BoundGen) -> IdRange {
        (self.bound(s, lo), self.bound(s, hi))
    }

    fn trim(&self, s: u8, trim: TrimGen) -> Trim {
        match trim {
            TrimGen::MaxLen(n) => Trim::max_len(n),
            TrimGen::MinId(r) => Trim::min_id(self.id(s, r)),
        }
    }

    fn norm(&mut self, s: usize, id: StreamId) -> NId {
        if !is_clock_made(id) {
            return NId::Lit(id);
        }
        let next = self.tokens[s].len();
        NId::Token(*self.tokens[s].entry(id).or_insert(next))
    }

    fn norm_ids(&mut self, s: usize, ids: Vec<StreamId>) -> Vec<NId> {
        ids.into_iter().map(|id| self.norm(s, id)).collect()
    }

    fn norm_entry(&mut self, s: usize, e: StreamEntry) -> Entry {
        Entry {
            id: self.norm(s, e.id),
            fields: Some(self.norm_record(e.fields)),
        }
    }

    /// A record `autoclaim_recorded` wrote names the deleted id (in
    /// [`RECORD_ID`]) of the stream its [`RECORD_FROM`] names: a clock-made
    /// id there becomes its token too. Other fields are kept as they are.
    fn norm_record(&mut self, fields: Fields) -> Fields {
        let from = fields
            .get_str(RECORD_FROM)
            .and_then(|f| f.parse::<usize>().ok());
        let id = fields.get_str(RECORD_ID).and_then(|id| id.parse().ok());
        let (Some(si), Some(id)) = (from, id) else {
            return fields;
        };
        let named = format!("{:?}", self.norm(si % STREAMS, id));
        fields
            .iter()
            .map(|(name, value)| match name.as_ref() {
                n if n == RECORD_ID.as_bytes() => (name.clone(), named.clone().into()),
                _ => (name.clone(), value.clone()),
            })
            .collect()
    }

    fn norm_entries(&mut self, s: usize, entries: Vec<StreamEntry>) -> Vec<Entry> {
        entries.into_iter().map(|e| self.norm_entry(s, e)).collect()
    }

    /// Runs one operation and normalises its reply.
    async fn apply(&mut self, op: &Op) -> Outcome {
        let b = self.broker;
        let k = |e: crewq_core::Error| e.kind();
        Ok(match op {
            Op::Xadd { add, trim } => {
                let (s, mut entry) = self.entries(std::slice::from_ref(add)).remove(0);
                if let Some(t) = trim {
                    entry = entry.with_trim(self.trim(add.s, *t));
                }
                let id = b.xadd(entry).await.map_err(k)?;
                self.added[s].push(id);
                Reply::Id(self.norm(s, id))
            }
            Op::XaddMany(adds) => {
                let entries = self.entries(adds);
                let streams: Vec<usize> = entries.iter().map(|(s, _)| *s).collect();
                let replies = b
                    .xadd_many(entries.into_iter().map(|(_, e)| e).collect())
                    .await
                    .map_err(k)?;
                let mut out = Vec::new();
                for (s, reply) in streams.into_iter().zip(replies) {
                    out.push(match reply {
                        Ok(id) => {
                            self.added[s].push(id);
                            Ok(self.norm(s, id))
                        }
                        Err(e) => Err(e.kind()),
                    });
                }
                Reply::Adds(out)
            }
            Op::Xlen(s) => Reply::Count(b.xlen(self.key(*s)).await.map_err(k)?),
            Op::Xrange { s, lo, hi, count } => {
                let range = self.range(*s, *lo, *hi);
                let entries = b.xrange(self.key(*s), range, *count).await.map_err(k)?;
                Reply::Entries(self.norm_entries(usize::from(*s) % STREAMS, entries))
            }
            Op::Xdel { s, ids } => {
                Reply::Count(b.xdel(self.key(*s), &self.ids(*s, ids)).await.map_err(k)?)
            }
            Op::Xtrim { s, trim } => Reply::Count(
                b.xtrim(self.key(*s), self.trim(*s, *trim))
                    .await
                    .map_err(k)?,
            ),
            Op::GroupCreate {
                s,
                g,
                start,
                mkstream,
            } => {
                let start = match start {
                    StartGen::Zero => GroupStart::BEGINNING,
                    StartGen::Latest => GroupStart::Latest,
                    StartGen::After(r) => GroupStart::After(self.id(*s, *r)),
                };
                let gi = self.group(*s, *g);
                b.group_create(self.key(*s), &self.group_name(*s, *g), start, *mkstream)
                    .await
                    .map_err(k)?;
                self.groups[usize::from(*s) % STREAMS].insert(gi);
                Reply::Unit
            }
            Op::GroupDestroy { s, g } => {
                let gi = self.group(*s, *g);
                let existed = b
                    .group_destroy(self.key(*s), &self.group_name(*s, *g))
                    .await
                    .map_err(k)?;
                self.groups[usize::from(*s) % STREAMS].remove(&gi);
                Reply::Bool(existed)
            }
            Op::ConsumerDelete { s, g, c } => Reply::Count(
                b.consumer_delete(self.key(*s), &self.group_name(*s, *g), &consumer_name(*c))
                    .await
                    .map_err(k)?,
            ),
            Op::ConsumerDeleteIfIdle { s, g, c, min_idle } => {
                let pruned = b
                    .consumer_delete_if_idle(
                        self.key(*s),
                        &self.group_name(*s, *g),
                        &consumer_name(*c),
                        idle(*min_idle),
                    )
                    .await
                    .map_err(k)?;
                match pruned {
                    ConsumerPruned::Deleted { .. } => Reply::Pruned("deleted", None),
                    ConsumerPruned::Busy { pending } => Reply::Pruned("busy", Some(pending)),
                    ConsumerPruned::Active { .. } => Reply::Pruned("active", None),
                    ConsumerPruned::Missing => Reply::Pruned("missing", None),
                }
            }
            Op::ReadNew { s, g, c, count } | Op::ReadPending { s, g, c, count, .. } => {
                let mut read =
                    ReadGroup::new(self.key(*s), self.group_name(*s, *g), consumer_name(*c));
                read.count = *count;
                if let Op::ReadPending { after, .. } = op {
                    read = read.pending_after(self.id(*s, *after));
                }
                let delivered = b.read_group(&read).await.map_err(k)?;
                let s = usize::from(*s) % STREAMS;
                if read.from == ReadFrom::New {
                    self.delivered[s].extend(delivered.iter().map(|e| e.id));
                }
                Reply::Entries(
                    delivered
                        .into_iter()
                        .map(|e| Entry {
                            id: self.norm(s, e.id),
                            // A record `autoclaim_recorded` wrote, read back
                            // from its stream, names a clock-made id too.
                            fields: e.fields.map(|fields| self.norm_record(fields)),
                        })
                        .collect(),
                )
            }
            Op::Ack { s, g, ids } => Reply::Count(
                b.ack(self.key(*s), &self.group_name(*s, *g), &self.ids(*s, ids))
                    .await
                    .map_err(k)?,
            ),
            Op::PendingSummary { s, g } => {
                let sum = b
                    .pending_summary(self.key(*s), &self.group_name(*s, *g))
                    .await
                    .map_err(k)?;
                let s = usize::from(*s) % STREAMS;
                Reply::Summary {
                    count: sum.count,
                    min_id: sum.min_id.map(|id| self.norm(s, id)),
                    max_id: sum.max_id.map(|id| self.norm(s, id)),
                    consumers: sum.consumers,
                }
            }
            Op::Pending {
                s,
                g,
                lo,
                hi,
                count,
                consumer,
                min_idle,
            } => {
                let mut query = PendingQuery::new(*count).range(self.range(*s, *lo, *hi));
                query.consumer = consumer.map(consumer_name);
                query.min_idle = min_idle.map(idle);
                let rows = b
                    .pending(self.key(*s), &self.group_name(*s, *g), &query)
                    .await
                    .map_err(k)?;
                let s = usize::from(*s) % STREAMS;
                Reply::Pending(
                    rows.into_iter()
                        .map(|row| (self.norm(s, row.id), row.consumer, row.deliveries))
                        .collect(),
                )
            }
            Op::Claim {
                s,
                g,
                c,
                min_idle,
                ids,
                just_id,
            } => {
                let (key, group, consumer) =
                    (self.key(*s), self.group_name(*s, *g), consumer_name(*c));
                let ids = self.ids(*s, ids);
                let si = usize::from(*s) % STREAMS;
                if *just_id {
                    let claimed = b
                        .claim_ids(key, &group, &consumer, idle(*min_idle), &ids)
                        .await
                        .map_err(k)?;
                    Reply::Ids(self.norm_ids(si, claimed))
                } else {
                    let claimed = b
                        .claim(key, &group, &consumer, idle(*min_idle), &ids)
                        .await
                        .map_err(k)?;
                    Reply::Entries(self.norm_entries(si, claimed))
                }
            }
            Op::AutoClaim {
                s,
                g,
                c,
                min_idle,
                from,
                count,
                record: Some(r),
            } => {
                let si = usize::from(*s) % STREAMS;
                let gi = self.group(*s, *g);
                let start = self.claim_start(si, gi, *s, *from);
                let claim =
                    AutoClaim::new(self.key(*s), self.group_name(*s, *g), consumer_name(*c))
                        .min_idle(idle(*min_idle))
                        .start(start)
                        .count(*count);
                let fields = Fields::new().with(RECORD_FROM, si.to_string());
                let template = NewEntry::new(self.key(*r), fields);
                let marker = format!("{}:gone:", self.key(*r));
                let record = DeletedRecord::new(template, RECORD_ID, marker, HUGE_IDLE);
                let got = b.autoclaim_recorded(&claim, &record).await.map_err(k)?;
                self.cursors.insert((si, gi), got.claim.next);
                let ri = usize::from(*r) % STREAMS;
                let mut records = Vec::new();
                for written in got.records {
                    records.push(match written {
                        Ok(AddedOnce::Added(id)) => {
                            self.added[ri].push(id);
                            Ok((true, self.norm(ri, id)))
                        }
                        Ok(AddedOnce::Duplicate(id)) => Ok((false, self.norm(ri, id))),
                        Err(_) => Err(()),
                    });
                }
                Reply::AutoClaimed {
                    next: self.norm(si, got.claim.next),
                    claimed: self.norm_entries(si, got.claim.claimed),
                    deleted: self.norm_ids(si, got.claim.deleted),
                    records: Some(records),
                }
            }
            Op::AutoClaim {
                s,
                g,
                c,
                min_idle,
                from,
                count,
                record: None,
            } => {
                let si = usize::from(*s) % STREAMS;
                let gi = self.group(*s, *g);
                let start = self.claim_start(si, gi, *s, *from);
                let got = b
                    .autoclaim(
                        self.key(*s),
                        &self.group_name(*s, *g),
                        &consumer_name(*c),
                        idle(*min_idle),
                        start,
                        *count,
                    )
                    .await
                    .map_err(k)?;
                self.cursors.insert((si, gi), got.next);
                Reply::AutoClaimed {
                    next: self.norm(si, got.next),
                    claimed: self.norm_entries(si, got.claimed),
                    deleted: self.norm_ids(si, got.deleted),
                    records: None,
                }
            }
            Op::InfoStream(s) => {
                let info = b.info_stream(self.key(*s)).await.map_err(k)?;
                let s = usize::from(*s) % STREAMS;
                Reply::Stream {
                    length: info.length,
                    last_generated_id: self.norm(s, info.last_generated_id),
                    max_deleted_entry_id: self.norm(s, info.max_deleted_entry_id),
                    entries_added: info.entries_added,
                    recorded_first_entry_id: self.norm(s, info.recorded_first_entry_id),
                    groups: info.groups,
                    first_entry: info.first_entry.map(|e| self.norm_entry(s, e)),
                    last_entry: info.last_entry.map(|e| self.norm_entry(s, e)),
                }
            }
            Op::InfoGroups(s) => {
                let groups = b.info_groups(self.key(*s)).await.map_err(k)?;
                let s = usize::from(*s) % STREAMS;
                Reply::Groups(
                    groups
                        .into_iter()
                        .map(|g| Group {
                            last_delivered_id: self.norm(s, g.last_delivered_id),
                            name: g.name,
                            consumers: g.consumers,
                            pending: g.pending,
                            entries_read: g.entries_read,
                            lag: g.lag,
                        })
                        .collect(),
                )
            }
            Op::InfoConsumers { s, g } => Reply::Consumers(
                b.info_consumers(self.key(*s), &self.group_name(*s, *g))
                    .await
                    .map_err(k)?
                    .into_iter()
                    .map(|c| (c.name, c.pending))
                    .collect(),
            ),
            Op::AckAndAdd { acks, adds } => {
                let mut step = AckAndAdd::new();
                for (s, g, ids) in acks {
                    step = step.ack(Ack::new(
                        self.key(*s),
                        self.group_name(*s, *g),
                        self.ids(*s, ids),
                    ));
                }
                let entries = self.entries(adds);
                let streams: Vec<usize> = entries.iter().map(|(s, _)| *s).collect();
                for (_, entry) in entries {
                    step = step.append(entry);
                }
                let reply = b.ack_and_add(step).await.map_err(k)?;
                let mut ids = Vec::new();
                for (s, id) in streams.into_iter().zip(reply.ids) {
                    self.added[s].push(id);
                    ids.push(self.norm(s, id));
                }
                Reply::AckAndAdd {
                    acked: reply.acked,
                    ids,
                }
            }
            Op::Settle { s, g, c, items } => {
                let mut settle =
                    Settle::new(self.key(*s), self.group_name(*s, *g), consumer_name(*c));
                let mut streams: Vec<Vec<usize>> = Vec::new();
                for (id, adds) in items {
                    let id = self.id(*s, *id);
                    let mut item = SettleItem::new(id);
                    let entries = self.entries(adds);
                    streams.push(entries.iter().map(|(s, _)| *s).collect());
                    for (_, entry) in entries {
                        item = item.append(entry);
                    }
                    settle = settle.item(item);
                }
                let outcomes = b.settle(settle).await.map_err(k)?;
                let mut settled = Vec::new();
                for (streams, outcome) in streams.into_iter().zip(outcomes) {
                    settled.push(match outcome {
                        Settled::NotOwned => Ok(None),
                        Settled::Failed(_) => Err(()),
                        Settled::Done(ids) => Ok(Some(
                            streams
                                .into_iter()
                                .zip(ids)
                                .map(|(s, id)| {
                                    self.added[s].push(id);
                                    self.norm(s, id)
                                })
                                .collect(),
                        )),
                    });
                }
                Reply::Settled(settled)
            }
            Op::Renew { s, g, c, ids } => {
                let ids = self.ids(*s, ids);
                let renewed = b
                    .renew(
                        self.key(*s),
                        &self.group_name(*s, *g),
                        &consumer_name(*c),
                        &ids,
                    )
                    .await
                    .map_err(k)?;
                Reply::Ids(self.norm_ids(usize::from(*s) % STREAMS, renewed))
            }
            Op::DelayOnce { s, entries } => {
                let schedules = entries
                    .iter()
                    .map(|d| {
                        let window = if d.valid_window {
                            HUGE_IDLE
                        } else {
                            Duration::ZERO
                        };
                        let delay = Delay {
                            set: self.delayed_key(*s),
                            ..self.delay(d)
                        };
                        DelayOnce::new(delay, self.marker_key(d.marker), window)
                    })
                    .collect();
                let replies = b.delay_once(schedules).await.map_err(k)?;
                let si = usize::from(*s) % STREAMS;
                Reply::Delayed(
                    replies
                        .into_iter()
                        .map(|reply| match reply {
                            Ok(DelayedOnce::Scheduled) => Ok(None),
                            Ok(DelayedOnce::Duplicate(id)) => Ok(Some(self.norm(si, id))),
                            Err(e) => Err(e.kind()),
                        })
                        .collect(),
                )
            }
            Op::Promote { set, s, count } => {
                let promoted = b
                    .promote(&self.delayed_key(*set), self.key(*s), *count)
                    .await
                    .map_err(k)?;
                let si = usize::from(*s) % STREAMS;
                self.added[si].extend(promoted.entries.iter().map(|e| e.id));
                let next_due = match promoted.next_due_in {
                    None => "none",
                    Some(due) if due < Duration::from_secs(3600) => "now",
                    Some(_) => "later",
                };
                Reply::Promoted {
                    entries: self.norm_entries(si, promoted.entries),
                    next_due,
                }
            }
            Op::SettleDelayed { s, g, c, items } => {
                let mut settle =
                    Settle::new(self.key(*s), self.group_name(*s, *g), consumer_name(*c));
                for (id, delays) in items {
                    let mut item = SettleItem::new(self.id(*s, *id));
                    for d in delays {
                        item = item.delay(self.delay(d));
                    }
                    settle = settle.item(item);
                }
                let outcomes = b.settle(settle).await.map_err(k)?;
                Reply::Settled(
                    outcomes
                        .into_iter()
                        .map(|outcome| match outcome {
                            Settled::NotOwned => Ok(None),
                            Settled::Failed(_) => Err(()),
                            Settled::Done(ids) => Ok(Some(ids.into_iter().map(NId::Lit).collect())),
                        })
                        .collect(),
                )
            }
            Op::DelayedLen(s) => {
                Reply::Count(b.delayed_len(&self.delayed_key(*s)).await.map_err(k)?)
            }
        })
    }
}

// ---------------------------------------------------------------------------
// One case, and the test.

/// Runs `ops` and then the epilogue on a fresh memory broker and on Redis
/// under `prefix`, and fails at the first reply that differs.
async fn run_case(redis: &dyn Broker, prefix: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let memory = MemoryBroker::new();
    let keys: Vec<String> = (0..STREAMS).map(|i| format!("{prefix}diff:s{i}")).collect();
    let mut plan = Plan::default();
    let mut mem = Side::new(&memory, &keys);
    let mut red = Side::new(redis, &keys);
    let mut agreed: Vec<String> = Vec::new();
    for (i, op) in ops.iter().chain(&epilogue()).enumerate() {
        let op = plan.effective(op);
        let from_memory = mem.apply(&op).await;
        let from_redis = red.apply(&op).await;
        if from_memory != from_redis {
            return Err(TestCaseError::fail(report(
                i,
                &op,
                &from_memory,
                &from_redis,
                ops,
                &agreed,
            )));
        }
        agreed.push(format!("{from_memory:?}"));
    }
    Ok(())
}

fn label(i: usize, len: usize) -> String {
    if i < len {
        format!("#{i}")
    } else {
        format!("epilogue #{}", i - len)
    }
}

/// The failure message: where, what, both replies, and the whole sequence
/// with the replies both backends agreed on.
fn report(
    at: usize,
    op: &Op,
    memory: &Outcome,
    redis: &Outcome,
    ops: &[Op],
    agreed: &[String],
) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "memory and Redis disagree at op {} (as run: {op:?})\n  memory: {memory:?}\n  redis:  {redis:?}\n\
         sequence ({} ops; `=>` the reply both gave):\n",
        label(at, ops.len()),
        ops.len(),
    );
    for (i, op) in ops.iter().enumerate() {
        let _ = match agreed.get(i) {
            Some(reply) => writeln!(out, "  #{i} {op:?} => {reply}"),
            None if i == at => writeln!(out, "  #{i} {op:?} <== DIFFERS"),
            None => writeln!(out, "  #{i} {op:?}"),
        };
    }
    out
}

#[test]
fn differential_memory_vs_redis() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let server = TestRedis::start();
    let redis = rt.block_on(server.broker());
    run_campaign(&rt, &redis, || server.unique_prefix());
}

/// The same campaign against a Redis Cluster: each case's keys under one
/// hash tag, its prefix, as its atomic steps write several streams; the
/// cases spread over the masters.
#[test]
fn differential_memory_vs_cluster() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cluster = TestCluster::start();
    let redis = rt.block_on(cluster.broker());
    run_campaign(&rt, &redis, || format!("{{{}}}", cluster.unique_prefix()));
}

/// Runs `PROPTEST_CASES` generated cases on `redis` and memory, each under
/// a fresh prefix from `prefix`.
fn run_campaign(rt: &tokio::runtime::Runtime, redis: &dyn Broker, prefix: impl Fn() -> String) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&sequence(), |ops| {
        let ops: Vec<Op> = ops.into_iter().flatten().collect();
        rt.block_on(run_case(redis, &prefix(), &ops))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "{reason}(minimal sequence: {} ops; its seed is saved in {REGRESSIONS})",
            ops.iter().flatten().count()
        ),
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
}

/// A shorthand for a one-field append.
fn add(s: u8, id: IdGen) -> AddGen {
    AddGen {
        s,
        id,
        n: 1,
        tag: 1,
    }
}

/// The minimal sequences of divergences this test found, kept as code so
/// that they stay tested whatever the generator becomes (the seeds in
/// `proptest-regressions/` only replay the same cases while it stays the
/// same).
fn found_divergences() -> Vec<(&'static str, Vec<Op>)> {
    let next = IdGen::Next { ms_gap: 0, seq: 0 };
    vec![
        (
            "an empty '>' read creates no consumer",
            vec![
                Op::Xadd {
                    add: add(0, next),
                    trim: None,
                },
                Op::GroupCreate {
                    s: 0,
                    g: 0,
                    start: StartGen::Latest,
                    mkstream: false,
                },
                Op::ReadNew {
                    s: 0,
                    g: 0,
                    c: 0,
                    count: None,
                },
            ],
        ),
        (
            "XPENDING with an impossible exclusive end, missing group",
            vec![Op::Pending {
                s: 0,
                g: 0,
                lo: BoundGen::Unbounded,
                hi: BoundGen::Excluded(IdRef::Zero),
                count: 0,
                consumer: None,
                min_idle: None,
            }],
        ),
        (
            "XRANGE with an impossible exclusive start",
            vec![
                Op::Xadd {
                    add: add(0, next),
                    trim: None,
                },
                Op::Xrange {
                    s: 0,
                    lo: BoundGen::Excluded(IdRef::Max),
                    hi: BoundGen::Unbounded,
                    count: None,
                },
            ],
        ),
        (
            "XCLAIM of no ids on a missing group",
            vec![
                Op::Claim {
                    s: 0,
                    g: 0,
                    c: 0,
                    min_idle: Idle::Zero,
                    ids: vec![],
                    just_id: false,
                },
                Op::Claim {
                    s: 0,
                    g: 0,
                    c: 0,
                    min_idle: Idle::Zero,
                    ids: vec![],
                    just_id: true,
                },
            ],
        ),
        (
            "a history read after the largest id reads like '>'",
            vec![
                Op::Xadd {
                    add: add(0, IdGen::Next { ms_gap: 1, seq: 0 }),
                    trim: None,
                },
                Op::GroupCreate {
                    s: 0,
                    g: 1,
                    start: StartGen::Zero,
                    mkstream: false,
                },
                Op::ReadPending {
                    s: 0,
                    g: 1,
                    c: 0,
                    after: IdRef::Max,
                    count: None,
                },
            ],
        ),
        (
            "after the largest id, every append is IdExhausted, explicit ones too",
            vec![
                Op::XaddMany(vec![add(0, IdGen::Max), add(0, IdGen::EqualTop)]),
                Op::Xadd {
                    add: add(0, next),
                    trim: None,
                },
                Op::Xadd {
                    add: add(0, IdGen::Zero),
                    trim: None,
                },
                Op::Xadd {
                    add: add(0, IdGen::Auto),
                    trim: None,
                },
            ],
        ),
        (
            "an id twice in one settle is settled once (the ack of a batch comes last)",
            vec![
                Op::GroupCreate {
                    s: 0,
                    g: 0,
                    start: StartGen::Zero,
                    mkstream: true,
                },
                Op::Xadd {
                    add: add(0, next),
                    trim: None,
                },
                Op::ReadNew {
                    s: 0,
                    g: 0,
                    c: 0,
                    count: None,
                },
                Op::Settle {
                    s: 0,
                    g: 0,
                    c: 0,
                    items: vec![
                        (IdRef::Added(0), vec![]),
                        (IdRef::Added(0), vec![add(1, IdGen::Auto)]),
                    ],
                },
            ],
        ),
        (
            "an append failing inside ack_and_add does not undo the others (EXEC has no rollback)",
            vec![
                Op::XaddMany(vec![add(0, IdGen::Max)]),
                Op::AckAndAdd {
                    acks: vec![],
                    adds: vec![add(0, IdGen::Auto), add(1, IdGen::Auto)],
                },
            ],
        ),
    ]
}

#[test]
fn differential_found_divergences_stay_fixed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let server = TestRedis::start();
    let redis = rt.block_on(server.broker());
    let failures: Vec<String> = found_divergences()
        .into_iter()
        .filter_map(|(name, ops)| {
            let prefix = server.unique_prefix();
            rt.block_on(run_case(&redis, &prefix, &ops))
                .err()
                .map(|e| format!("--- {name}:\n{e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
