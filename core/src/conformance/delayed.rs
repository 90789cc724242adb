//! Cases for delayed sets: `settle` scheduling delays, `promote`,
//! `delay_once` and `delayed_len`.

use std::time::Duration;

use crate::{
    ALL_IDS, AddedOnce, Broker, Delay, DelayOnce, DelayedOnce, ErrorKind, NewEntry, OnceEntry,
    Settle, SettleItem, Settled, StreamId,
};

use super::Ctx;
use super::support::{IDLE_THRESHOLD, IDLE_WAIT, fields, group_from_start, id, read_new, seed};

/// A delay long past any case's run.
const LATER: Duration = Duration::from_secs(3600);

/// Time for the short delays of a case to pass, with room for a real
/// server's clock (the delays are tens of ms).
const PAST_SHORT_DELAYS: Duration = Duration::from_millis(300);

/// Settles entries `1-0..` of a fresh stream `tasks`, one per delay, each
/// scheduling into `ctx.key("delayed")` an entry whose field `n` is the
/// delay's name. Returns the set's key.
async fn schedule(broker: &dyn Broker, ctx: &Ctx, delays: &[(&str, Duration)]) -> String {
    let tasks = ctx.key("tasks");
    let set = ctx.key("delayed");
    seed(broker, &tasks, delays.len() as u64).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    let mut settle = Settle::new(&tasks, "g", "w");
    for (n, (name, after)) in (1..).zip(delays) {
        let delay = Delay::new(&set, *after, id(n).to_string(), fields(name));
        settle = settle.item(SettleItem::new(id(n)).delay(delay));
    }
    let outcomes = broker.settle(settle).await.expect("settle");
    assert!(
        outcomes.iter().all(|o| *o == Settled::Done(vec![])),
        "{outcomes:?}"
    );
    set
}

/// The `n` fields of `stream`'s entries, oldest first.
async fn names(broker: &dyn Broker, stream: &str) -> Vec<String> {
    let entries = broker.xrange(stream, ALL_IDS, None).await.expect("xrange");
    entries
        .iter()
        .map(|e| e.fields.get_str("n").unwrap_or("?").to_owned())
        .collect()
}

/// `settle`: an owned item's delay joins its set, a not-owned one's does
/// not, and the owned entry is acknowledged in the same step.
pub async fn settle_schedules_delays_of_owned_items(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = ctx.key("tasks");
    let set = ctx.key("delayed");
    seed(broker, &tasks, 2).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;
    let taken = broker
        .claim(&tasks, "g", "rescuer", IDLE_THRESHOLD, &[id(2)])
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    let settle = Settle::new(&tasks, "g", "w")
        .item(SettleItem::new(id(1)).delay(Delay::new(&set, LATER, "1-0", fields("mine"))))
        .item(SettleItem::new(id(2)).delay(Delay::new(&set, LATER, "2-0", fields("theirs"))));
    let outcomes = broker.settle(settle).await.expect("settle");
    assert_eq!(outcomes, [Settled::Done(vec![]), Settled::NotOwned]);
    assert_eq!(broker.delayed_len(&set).await.expect("delayed_len"), 1);
    let summary = broker.pending_summary(&tasks, "g").await.expect("pending");
    assert_eq!(
        summary.count, 1,
        "1-0 acknowledged, 2-0 still the rescuer's"
    );
}

/// `promote`: due members are appended in due order and leave the set; the
/// one not due stays, and the reply says when it is due.
pub async fn promote_moves_due_members_in_due_order(broker: &dyn Broker, ctx: &Ctx) {
    let ms = Duration::from_millis;
    let set = schedule(
        broker,
        ctx,
        &[
            ("c", ms(30)),
            ("a", ms(10)),
            ("later", LATER),
            ("b", ms(20)),
        ],
    )
    .await;
    let ready = ctx.key("ready");
    tokio::time::sleep(PAST_SHORT_DELAYS).await;
    let promoted = broker.promote(&set, &ready, 100).await.expect("promote");
    assert_eq!(promoted.entries.len(), 3, "{promoted:?}");
    assert_eq!(names(broker, &ready).await, ["a", "b", "c"]);
    let ids: Vec<_> = broker
        .xrange(&ready, ALL_IDS, None)
        .await
        .expect("xrange")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let reported: Vec<_> = promoted.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, reported);
    let fields: Vec<_> = promoted
        .entries
        .iter()
        .map(|e| e.fields.get_str("n"))
        .collect();
    assert_eq!(
        fields,
        [Some("a"), Some("b"), Some("c")],
        "the reply carries the fields"
    );
    assert_eq!(broker.delayed_len(&set).await.expect("delayed_len"), 1);
    let next = promoted.next_due_in.expect("one member left");
    assert!(
        next > LATER - Duration::from_secs(60) && next <= LATER,
        "{next:?}"
    );
    let again = broker.promote(&set, &ready, 100).await.expect("promote");
    assert!(again.entries.is_empty(), "{again:?}");
}

/// `promote`: what is due is decided by the broker's clock: a zero delay is
/// due at once and a long one is not, with no clock of the caller's asked.
pub async fn promote_goes_by_the_brokers_clock(broker: &dyn Broker, ctx: &Ctx) {
    let set = schedule(broker, ctx, &[("now", Duration::ZERO), ("later", LATER)]).await;
    let ready = ctx.key("ready");
    let promoted = broker.promote(&set, &ready, 100).await.expect("promote");
    assert_eq!(names(broker, &ready).await, ["now"], "{promoted:?}");
    let due_in = promoted.next_due_in.expect("later is left");
    assert!(
        due_in > LATER - Duration::from_secs(60) && due_in <= LATER,
        "{due_in:?}"
    );
}

/// `promote`: racing promotes append every due member exactly once.
pub async fn promote_racing_appends_each_member_once(broker: &dyn Broker, ctx: &Ctx) {
    let delays: Vec<(String, Duration)> = (0..24)
        .map(|n| (format!("m{n:02}"), Duration::from_millis(n % 5)))
        .collect();
    let borrowed: Vec<(&str, Duration)> = delays.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let set = schedule(broker, ctx, &borrowed).await;
    let ready = ctx.key("ready");
    tokio::time::sleep(PAST_SHORT_DELAYS).await;
    loop {
        let racers = (0..6).map(|_| broker.promote(&set, &ready, 3));
        let replies = futures::future::join_all(racers).await;
        let moved: usize = replies
            .into_iter()
            .map(|r| r.expect("promote").entries.len())
            .sum();
        if moved == 0 {
            break;
        }
    }
    let mut got = names(broker, &ready).await;
    got.sort();
    let mut want: Vec<String> = delays.into_iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(got, want, "each member once");
    assert_eq!(broker.delayed_len(&set).await.expect("delayed_len"), 0);
}

/// `promote`: `count` limits the members moved; a missing set moves none
/// and has no next due time.
pub async fn promote_honours_count_and_missing_sets(broker: &dyn Broker, ctx: &Ctx) {
    let ready = ctx.key("ready");
    let none = broker
        .promote(&ctx.key("missing"), &ready, 10)
        .await
        .expect("promote");
    assert_eq!((none.entries.len(), none.next_due_in), (0, None));
    let set = schedule(
        broker,
        ctx,
        &[
            ("a", Duration::ZERO),
            ("b", Duration::ZERO),
            ("c", Duration::ZERO),
        ],
    )
    .await;
    let two = broker.promote(&set, &ready, 2).await.expect("promote");
    assert_eq!(two.entries.len(), 2, "{two:?}");
    assert_eq!(two.next_due_in, Some(Duration::ZERO), "c is due already");
    let last = broker.promote(&set, &ready, 2).await.expect("promote");
    assert_eq!((last.entries.len(), last.next_due_in), (1, None));
    assert_eq!(names(broker, &ready).await.len(), 3);
}

/// `delayed_len`: counts members added by settles and not promoted; 0 for a
/// missing set.
pub async fn delayed_len_counts_waiting_members(broker: &dyn Broker, ctx: &Ctx) {
    assert_eq!(
        broker.delayed_len(&ctx.key("missing")).await.expect("len"),
        0
    );
    let set = schedule(
        broker,
        ctx,
        &[("a", Duration::ZERO), ("b", LATER), ("c", LATER)],
    )
    .await;
    assert_eq!(broker.delayed_len(&set).await.expect("len"), 3);
    broker
        .promote(&set, &ctx.key("ready"), 10)
        .await
        .expect("promote");
    assert_eq!(broker.delayed_len(&set).await.expect("len"), 2);
}

/// A schedule-once of `name` into `ctx.key("delayed")`, due at once,
/// remembered by `marker` for a minute.
fn delay_once(ctx: &Ctx, marker: &str, name: &str) -> DelayOnce {
    let delay = Delay::new(ctx.key("delayed"), Duration::ZERO, name, fields(name));
    DelayOnce::new(delay, ctx.key(marker), Duration::from_secs(60))
}

/// `delay_once`: a marker schedules once, also within one call; an
/// append-once with the marker then finds it set (recording `0-0`).
pub async fn delay_once_schedules_once_per_marker(broker: &dyn Broker, ctx: &Ctx) {
    let replies = broker
        .delay_once(vec![
            delay_once(ctx, "m1", "first"),
            delay_once(ctx, "m1", "again"),
            delay_once(ctx, "m2", "other"),
        ])
        .await
        .expect("delay_once");
    let replies: Vec<_> = replies.into_iter().map(|r| r.expect("scheduled")).collect();
    assert_eq!(
        replies,
        [
            DelayedOnce::Scheduled,
            DelayedOnce::Duplicate(StreamId::ZERO),
            DelayedOnce::Scheduled
        ]
    );
    let set = ctx.key("delayed");
    assert_eq!(broker.delayed_len(&set).await.expect("len"), 2);
    let ready = ctx.key("ready");
    let once = OnceEntry::new(
        NewEntry::new(&ready, fields("now")),
        ctx.key("m1"),
        Duration::from_secs(60),
    );
    let added = broker.xadd_once(vec![once]).await.expect("xadd_once");
    assert!(
        matches!(added[..], [Ok(AddedOnce::Duplicate(StreamId::ZERO))]),
        "{added:?}"
    );
    broker.promote(&set, &ready, 10).await.expect("promote");
    assert_eq!(names(broker, &ready).await, ["first", "other"]);
}

/// `delay_once`: a marker an append-once set makes the schedule a
/// duplicate of that entry.
pub async fn delay_once_respects_append_markers(broker: &dyn Broker, ctx: &Ctx) {
    let ready = ctx.key("ready");
    let once = OnceEntry::new(
        NewEntry::new(&ready, fields("now")),
        ctx.key("m1"),
        Duration::from_secs(60),
    );
    let added = broker.xadd_once(vec![once]).await.expect("xadd_once");
    let Ok(AddedOnce::Added(id)) = added[0] else {
        panic!("appended: {added:?}");
    };
    let replies = broker
        .delay_once(vec![delay_once(ctx, "m1", "later")])
        .await
        .expect("delay_once");
    assert!(
        matches!(replies[..], [Ok(DelayedOnce::Duplicate(d))] if d == id),
        "{replies:?}"
    );
    assert_eq!(
        broker.delayed_len(&ctx.key("delayed")).await.expect("len"),
        0
    );
}

/// `delay_once`: an entry without fields or with a window under 1 ms fails
/// alone with `InvalidArgument`; the others are scheduled.
pub async fn delay_once_rejects_malformed_entries(broker: &dyn Broker, ctx: &Ctx) {
    let empty = DelayOnce::new(
        Delay::new(
            ctx.key("delayed"),
            Duration::ZERO,
            "e",
            crate::Fields::new(),
        ),
        ctx.key("m1"),
        Duration::from_secs(60),
    );
    let mut short = delay_once(ctx, "m2", "short");
    short.window = Duration::from_micros(500);
    let replies = broker
        .delay_once(vec![empty, delay_once(ctx, "m3", "fine"), short])
        .await
        .expect("delay_once");
    assert_eq!(replies.len(), 3);
    let kinds: Vec<_> = replies
        .iter()
        .map(|r| r.as_ref().map_err(crate::Error::kind).copied())
        .collect();
    assert_eq!(
        kinds,
        [
            Err(ErrorKind::InvalidArgument),
            Ok(DelayedOnce::Scheduled),
            Err(ErrorKind::InvalidArgument)
        ]
    );
    assert_eq!(
        broker.delayed_len(&ctx.key("delayed")).await.expect("len"),
        1
    );
}
