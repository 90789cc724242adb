//! Cases for `read_lanes`: priority lanes read in one atomic step.

use std::time::Duration;

use crate::{
    Broker, Delay, DelayOnce, DelayedOnce, ErrorKind, Lane, LanesRead, NewEntry, ReadLanes,
    StreamId,
};

use super::Ctx;
use super::support::{expect_kind, fields, group_from_start, pending_owners};

/// A bound no entry of a case reaches.
const NEVER_STARVES: Duration = Duration::from_secs(3600);

/// The bound an entry left alone for [`PAST_STARVATION`] passes and one
/// appended just before the read does not, with room for a real server.
const STARVATION: Duration = Duration::from_millis(250);
const PAST_STARVATION: Duration = Duration::from_millis(600);

/// Appends `names` to `stream` with automatic ids (the broker's clock:
/// what the starvation bound is judged by).
async fn add(broker: &dyn Broker, stream: &str, names: &[&str]) -> Vec<StreamId> {
    let mut ids = Vec::new();
    for name in names {
        let id = broker
            .xadd(NewEntry::new(stream, fields(name)))
            .await
            .unwrap_or_else(|e| panic!("xadd {stream}: {e}"));
        ids.push(id);
    }
    ids
}

/// The `(lane, n)` of each entry taken, in order.
fn taken(read: &LanesRead) -> Vec<(usize, String)> {
    read.entries
        .iter()
        .map(|(lane, entry)| {
            let n = entry
                .fields
                .as_ref()
                .and_then(|f| f.get_str("n"))
                .unwrap_or("?");
            (*lane, n.to_owned())
        })
        .collect()
}

fn pairs(expected: &[(usize, &str)]) -> Vec<(usize, String)> {
    expected
        .iter()
        .map(|(l, n)| (*l, (*n).to_owned()))
        .collect()
}

/// Three lanes `low` (0), `mid` (5), `high` (9), each with `group` made from
/// the start.
async fn three_lanes(broker: &dyn Broker, ctx: &Ctx, group: &str) -> Vec<Lane> {
    let lanes = vec![
        Lane::new(ctx.key("high"), 9),
        Lane::new(ctx.key("mid"), 5),
        Lane::new(ctx.key("low"), 0),
    ];
    for lane in &lanes {
        group_from_start(broker, &lane.stream, group).await;
    }
    lanes
}

async fn read(
    broker: &dyn Broker,
    lanes: &[Lane],
    group: &str,
    count: usize,
    bound: Duration,
) -> LanesRead {
    let mut read = ReadLanes::new(group, "w", count, bound);
    read.lanes = lanes.to_vec();
    broker
        .read_lanes(&read)
        .await
        .unwrap_or_else(|e| panic!("read_lanes: {e}"))
}

/// `read_lanes`: under a backlog a higher lane is emptied before a lower
/// one is touched, each oldest first, up to the count in all.
pub async fn read_lanes_takes_the_highest_priority_first(broker: &dyn Broker, ctx: &Ctx) {
    let lanes = three_lanes(broker, ctx, "g").await;
    // The lowest first: its entries are the oldest, and still wait.
    add(broker, &lanes[2].stream, &["low1", "low2"]).await;
    add(broker, &lanes[1].stream, &["mid1", "mid2"]).await;
    add(broker, &lanes[0].stream, &["high1", "high2"]).await;
    let first = read(broker, &lanes, "g", 5, NEVER_STARVES).await;
    assert_eq!(
        taken(&first),
        pairs(&[
            (0, "high1"),
            (0, "high2"),
            (1, "mid1"),
            (1, "mid2"),
            (2, "low1")
        ])
    );
    assert_eq!(first.left, vec![2], "low2 is left");
    assert!(first.no_group.is_empty());
    add(broker, &lanes[1].stream, &["mid3"]).await;
    let second = read(broker, &lanes, "g", 5, NEVER_STARVES).await;
    assert_eq!(taken(&second), pairs(&[(1, "mid3"), (2, "low2")]));
    assert!(second.left.is_empty());
    let third = read(broker, &lanes, "g", 5, NEVER_STARVES).await;
    assert!(third.entries.is_empty(), "{third:?}");
}

/// `read_lanes`: an entry that has waited the starvation bound is taken
/// before every younger one, whatever their priorities; the bound is
/// judged by the broker's clock against the entry's id.
pub async fn read_lanes_takes_a_starving_entry_first(broker: &dyn Broker, ctx: &Ctx) {
    let lanes = three_lanes(broker, ctx, "starving").await;
    for lane in &lanes {
        group_from_start(broker, &lane.stream, "patient").await;
    }
    add(broker, &lanes[2].stream, &["low1"]).await;
    // A later millisecond: equal times would go to the higher priority.
    tokio::time::sleep(Duration::from_millis(20)).await;
    add(broker, &lanes[1].stream, &["mid1"]).await;
    tokio::time::sleep(PAST_STARVATION).await;
    add(broker, &lanes[0].stream, &["high1", "high2"]).await;
    add(broker, &lanes[2].stream, &["low2"]).await;
    // low1 and mid1 starve: the older first, then the highest lane.
    let starving = read(broker, &lanes, "starving", 5, STARVATION).await;
    assert_eq!(
        taken(&starving),
        pairs(&[
            (2, "low1"),
            (1, "mid1"),
            (0, "high1"),
            (0, "high2"),
            (2, "low2")
        ])
    );
    // The same backlog in another group with a bound not reached: by
    // priority alone.
    let patient = read(broker, &lanes, "patient", 5, NEVER_STARVES).await;
    assert_eq!(
        taken(&patient),
        pairs(&[
            (0, "high1"),
            (0, "high2"),
            (1, "mid1"),
            (2, "low1"),
            (2, "low2")
        ])
    );
}

/// `read_lanes`: what it takes is pending for the reader, as after a
/// group read, and a plain group read finds it taken.
pub async fn read_lanes_delivers_as_a_group_read(broker: &dyn Broker, ctx: &Ctx) {
    let lanes = three_lanes(broker, ctx, "g").await;
    let mid = add(broker, &lanes[1].stream, &["mid1", "mid2"]).await;
    let got = read(broker, &lanes, "g", 1, NEVER_STARVES).await;
    assert_eq!(taken(&got), pairs(&[(1, "mid1")]));
    assert_eq!(got.entries[0].1.id, mid[0]);
    assert_eq!(got.left, vec![1]);
    let owners = pending_owners(broker, &lanes[1].stream, "g").await;
    assert_eq!(owners, vec![(mid[0], "w".to_owned(), 1)]);
    let next = broker
        .read_group(&crate::ReadGroup::new(&lanes[1].stream, "g", "other").count(5))
        .await
        .expect("read");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, mid[1], "mid1 is not delivered again");
    assert!(
        got.now_ms >= mid[0].ms,
        "the reply carries the broker's clock"
    );
}

/// `read_lanes`: a lane whose key is missing is skipped; one whose stream
/// exists without the group is reported, and the others are still read;
/// lanes whose stream or delayed set exists are reported present.
pub async fn read_lanes_skips_missing_lanes_and_reports_missing_groups(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let missing = Lane::new(ctx.key("missing"), 9).delayed(ctx.key("missing-delayed"));
    let scheduled = Lane::new(ctx.key("scheduled"), 8).delayed(ctx.key("scheduled-delayed"));
    let groupless = Lane::new(ctx.key("groupless"), 7);
    let ready = Lane::new(ctx.key("ready"), 1);
    add(broker, &groupless.stream, &["lost"]).await;
    group_from_start(broker, &ready.stream, "g").await;
    add(broker, &ready.stream, &["ready1"]).await;
    let later = DelayOnce::new(
        Delay::new(
            ctx.key("scheduled-delayed"),
            Duration::from_secs(3600),
            "m",
            fields("later"),
        ),
        ctx.key("marker"),
        Duration::from_secs(60),
    );
    let scheduled_reply = broker.delay_once(vec![later]).await.expect("delay_once");
    assert!(matches!(
        scheduled_reply.as_slice(),
        [Ok(DelayedOnce::Scheduled)]
    ));
    let got = read(
        broker,
        &[missing, scheduled, groupless, ready],
        "g",
        5,
        NEVER_STARVES,
    )
    .await;
    assert_eq!(taken(&got), pairs(&[(3, "ready1")]));
    assert_eq!(got.no_group, vec![2]);
    assert!(got.left.is_empty());
    // Present: the lanes with a stream, and the one with only a delayed set.
    assert_eq!(got.present, vec![1, 2, 3]);
}

/// `read_lanes`: a lane flagged to create its group gets it at the
/// stream's start and is read in the same step, by priority as any other;
/// an existing group is left as it is.
pub async fn read_lanes_creates_the_group_of_a_lane_never_served(broker: &dyn Broker, ctx: &Ctx) {
    let low = Lane::new(ctx.key("low"), 0);
    let high = Lane::new(ctx.key("high"), 9).create_group();
    group_from_start(broker, &low.stream, "g").await;
    add(broker, &low.stream, &["low1"]).await;
    add(broker, &high.stream, &["high1", "high2"]).await;
    let got = read(broker, &[high.clone(), low.clone()], "g", 2, NEVER_STARVES).await;
    assert_eq!(taken(&got), pairs(&[(0, "high1"), (0, "high2")]));
    assert!(got.no_group.is_empty(), "{got:?}");
    assert_eq!(got.left, vec![1]);
    // Created once: a second read with the flag finds it and reads on.
    add(broker, &high.stream, &["high3"]).await;
    let again = read(broker, &[high, low], "g", 5, NEVER_STARVES).await;
    assert_eq!(taken(&again), pairs(&[(0, "high3"), (1, "low1")]));
}

/// `read_lanes`: a count of 0, no lanes or a priority above 10 is refused.
pub async fn read_lanes_rejects_bad_requests(broker: &dyn Broker, ctx: &Ctx) {
    let lane = Lane::new(ctx.key("tasks"), 0);
    let zero = ReadLanes::new("g", "w", 0, NEVER_STARVES).lane(lane.clone());
    expect_kind(
        broker.read_lanes(&zero).await,
        ErrorKind::InvalidArgument,
        "count 0",
    );
    let none = ReadLanes::new("g", "w", 1, NEVER_STARVES);
    expect_kind(
        broker.read_lanes(&none).await,
        ErrorKind::InvalidArgument,
        "no lanes",
    );
    let eleven = ReadLanes::new("g", "w", 1, NEVER_STARVES).lane(Lane::new(ctx.key("tasks"), 11));
    expect_kind(
        broker.read_lanes(&eleven).await,
        ErrorKind::InvalidArgument,
        "priority 11",
    );
}
