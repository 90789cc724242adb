//! [`BrokerLayer`]'s defaults: each forwards its own method, through
//! `around`, told its own op.

use std::sync::Mutex;
use std::time::Duration;

use crewq_core::{
    AckAndAdd, AutoClaim, Broker, BrokerCall, BrokerLayer, BrokerOp, DeletedRecord, Fields,
    GroupStart, NewEntry, OnceEntry, PendingQuery, ReadGroup, Settle, SettleItem, StreamId, Trim,
};
use crewq_memory::MemoryBroker;

/// Logs the op of every call it runs.
struct Logging {
    inner: MemoryBroker,
    ops: Mutex<Vec<BrokerOp>>,
}

impl BrokerLayer for Logging {
    type Inner = MemoryBroker;

    fn inner(&self) -> &MemoryBroker {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        op: BrokerOp,
        call: BrokerCall<'a, T>,
    ) -> BrokerCall<'a, T> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        call
    }
}

/// Each default method calls the inner broker's method of its own name,
/// through `around` told its own op: a line of the table wired to the
/// wrong op or method fails here.
#[tokio::test]
async fn every_default_method_forwards_through_around_with_its_own_op() {
    let layer = Logging {
        inner: MemoryBroker::new(),
        ops: Mutex::new(Vec::new()),
    };
    let broker: &dyn Broker = &layer;
    let (s, g, c) = ("s", "g", "c");
    let new = || NewEntry::new(s, Fields::new().with("k", "v"));
    let idle = Duration::ZERO;
    let id = broker.xadd(new()).await.expect("xadd");
    assert_eq!(broker.xadd_many(vec![new()]).await.expect("many").len(), 1);
    let once = OnceEntry::new(new(), "m", Duration::from_secs(1));
    assert_eq!(broker.xadd_once(vec![once]).await.expect("once").len(), 1);
    assert_eq!(broker.xlen(s).await.expect("xlen"), 3);
    assert_eq!(
        broker
            .xrange(s, crewq_core::ALL_IDS, None)
            .await
            .expect("range")
            .len(),
        3
    );
    assert_eq!(broker.xdel(s, &[StreamId::MAX]).await.expect("xdel"), 0);
    assert_eq!(broker.xtrim(s, Trim::max_len(10)).await.expect("xtrim"), 0);
    broker
        .group_create(s, g, GroupStart::BEGINNING, true)
        .await
        .expect("create");
    assert!(!broker.group_destroy(s, "other").await.expect("destroy"));
    assert_eq!(
        broker
            .consumer_delete(s, g, "x")
            .await
            .expect("delconsumer"),
        0
    );
    assert_eq!(
        broker
            .consumer_delete_if_idle(s, g, "x", idle)
            .await
            .expect("delconsumer if idle"),
        crewq_core::ConsumerPruned::Missing
    );
    let read = ReadGroup::new(s, g, c).count(2);
    assert_eq!(broker.read_group(&read).await.expect("read").len(), 2);
    // A lane whose stream is missing: skipped, nothing read.
    let lanes = crewq_core::ReadLanes::new(g, c, 1, Duration::from_secs(60))
        .lane(crewq_core::Lane::new("no-such-lane", 0));
    let read_lanes = broker.read_lanes(&lanes).await.expect("read_lanes");
    assert!(read_lanes.entries.is_empty());
    assert_eq!(broker.ack(s, g, &[StreamId::MAX]).await.expect("ack"), 0);
    assert_eq!(
        broker.pending_summary(s, g).await.expect("summary").count,
        2
    );
    let query = PendingQuery::new(10);
    assert_eq!(
        broker.pending(s, g, &query).await.expect("pending").len(),
        2
    );
    assert_eq!(
        broker
            .claim(s, g, c, idle, &[id])
            .await
            .expect("claim")
            .len(),
        1
    );
    assert_eq!(
        broker.claim_ids(s, g, c, idle, &[id]).await.expect("ids"),
        [id]
    );
    let min = StreamId::ZERO;
    let claimed = broker
        .autoclaim(s, g, c, idle, min, 10)
        .await
        .expect("auto");
    assert_eq!(claimed.claimed.len(), 2);
    let scan = AutoClaim::new(s, g, c);
    let record = DeletedRecord::new(new(), "id", "gone:", Duration::from_secs(1));
    let recorded = broker
        .autoclaim_recorded(&scan, &record)
        .await
        .expect("auto, recorded");
    assert_eq!(recorded.claim.claimed.len(), 2);
    assert_eq!(broker.info_stream(s).await.expect("stream").length, 3);
    assert_eq!(broker.info_groups(s).await.expect("groups").len(), 1);
    assert_eq!(
        broker.info_consumers(s, g).await.expect("consumers").len(),
        1
    );
    let step = AckAndAdd::new().append(new());
    assert_eq!(
        broker
            .ack_and_add(step)
            .await
            .expect("ack_and_add")
            .ids
            .len(),
        1
    );
    let settle = Settle::new(s, g, c).item(SettleItem::new(id));
    assert_eq!(broker.settle(settle).await.expect("settle").len(), 1);
    assert!(
        broker
            .renew(s, g, c, &[id])
            .await
            .expect("renew")
            .is_empty()
    );
    let promoted = broker.promote("delayed", s, 10).await.expect("promote");
    assert!(promoted.entries.is_empty());
    let once = crewq_core::DelayOnce::new(
        crewq_core::Delay::new(
            "delayed",
            Duration::from_secs(60),
            "t",
            Fields::new().with("a", "b"),
        ),
        "marker",
        Duration::from_secs(60),
    );
    assert_eq!(
        broker
            .delay_once(vec![once])
            .await
            .expect("delay_once")
            .len(),
        1
    );
    assert_eq!(broker.delayed_len("delayed").await.expect("delayed_len"), 1);
    let rate = crewq_core::Keyspace::default().rate(&crewq_core::AgentType::new("a").expect("a"));
    let acquire = crewq_core::RateAcquire {
        keys: rate.clone(),
        limit: crewq_core::RateLimit::new().running(1),
        permits: vec!["p".to_owned()],
        lease: Duration::from_secs(60),
    };
    assert_eq!(
        broker
            .rate_acquire(acquire)
            .await
            .expect("rate_acquire")
            .granted,
        1
    );
    let permits = ["p".to_owned()];
    let renewed = broker.rate_renew(&rate, &permits, Duration::from_secs(60));
    assert_eq!(renewed.await.expect("rate_renew").len(), 1);
    let released = broker.rate_release(&rate, &permits, &[]).await;
    assert_eq!(released.expect("rate_release"), 1);
    let paused = broker.rate_pause(&rate, Duration::from_secs(1)).await;
    assert_eq!(paused.expect("rate_pause"), Duration::from_secs(1));
    assert_eq!(
        broker.rate_state(&rate).await.expect("rate_state").running,
        0
    );

    let ops = layer.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(ops, BrokerOp::ALL);
    let names: Vec<&str> = ops.iter().map(|op| op.name()).collect();
    assert_eq!(names[11], "read_group");
    let reads = BrokerOp::ALL.iter().filter(|op| !op.is_write()).count();
    assert_eq!(
        reads, 9,
        "xlen, xrange, pending_summary, pending, info_*, delayed_len, rate_state"
    );
}
