//! `FaultyBroker`: what each fault does to a call, that one seed decides
//! them all, and that faults can be confined and switched off.

use std::time::Duration;

use crewq_core::{
    ALL_IDS, AutoClaim, Broker, DeletedRecord, ErrorKind, Fields, GroupStart, NewEntry,
    PendingQuery, ReadGroup,
};
use crewq_memory::MemoryBroker;
use crewq_sim::{
    Fault, FaultConfig, FaultEvent, FaultyBroker, Op, OpSet, memory_broker_on_virtual_time,
};
use tokio::time::Instant;

const STREAM: &str = "s";

fn entry(n: u32) -> NewEntry {
    NewEntry::new(STREAM, Fields::new().with("n", n.to_string()))
}

fn faulty(config: FaultConfig) -> FaultyBroker<MemoryBroker> {
    FaultyBroker::new(memory_broker_on_virtual_time(), config)
}

fn noisy(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        error_before: 0.2,
        error_after: 0.1,
        latency: Some((Duration::from_millis(1), Duration::from_millis(20))),
        ops: OpSet::all(),
        ..FaultConfig::default()
    }
}

/// A fixed mix of calls; returns which ones failed and the stream's length.
async fn fixed_calls(broker: &FaultyBroker<MemoryBroker>) -> (Vec<bool>, u64) {
    let mut failed = Vec::new();
    for n in 0..100 {
        failed.push(broker.xadd(entry(n)).await.is_err());
        failed.push(broker.xlen(STREAM).await.is_err());
        failed.push(broker.xrange(STREAM, ALL_IDS, Some(3)).await.is_err());
    }
    (failed, broker.inner().xlen(STREAM).await.expect("xlen"))
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_injects_the_same_faults() {
    let first = faulty(noisy(42));
    let second = faulty(noisy(42));
    let (failed_first, len_first) = fixed_calls(&first).await;
    let (failed_second, len_second) = fixed_calls(&second).await;

    assert_eq!(first.faults(), second.faults());
    assert_eq!(failed_first, failed_second);
    assert_eq!(len_first, len_second);
    assert_eq!(first.calls(), 300);
    assert_eq!(first.injected(), second.injected());
    // About 30% of 300 calls fail; every failed call is one logged error.
    let errors = first
        .faults()
        .iter()
        .filter(|e| matches!(e.fault, Fault::Before | Fault::After))
        .count();
    assert_eq!(errors as u64, first.injected());
    assert_eq!(errors, failed_first.iter().filter(|f| **f).count());
    assert!((50..=130).contains(&errors), "{errors} errors in 300 calls");
}

#[tokio::test(start_paused = true)]
async fn different_seeds_inject_different_faults() {
    let first = faulty(noisy(1));
    let second = faulty(noisy(2));
    fixed_calls(&first).await;
    fixed_calls(&second).await;
    assert_ne!(first.faults(), second.faults());
}

#[tokio::test(start_paused = true)]
async fn an_error_before_applies_nothing() {
    let broker = faulty(FaultConfig {
        error_before: 1.0,
        ..FaultConfig::default()
    });
    let err = broker.xadd(entry(1)).await.expect_err("injected");
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.is_transient(), "{err}");
    assert_eq!(broker.inner().xlen(STREAM).await.expect("xlen"), 0);
    let log = broker.faults();
    assert_eq!(
        log,
        [FaultEvent {
            seq: 0,
            op: Op::Xadd,
            fault: Fault::Before
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_after_applies_the_call_then_fails_it() {
    let broker = faulty(FaultConfig {
        error_after: 1.0,
        ops: OpSet::only([Op::Xadd]),
        ..FaultConfig::default()
    });
    let err = broker.xadd(entry(1)).await.expect_err("injected");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient(), "{err}");
    assert_eq!(broker.xlen(STREAM).await.expect("xlen"), 1, "applied");
    // The caller cannot tell; retrying appends the entry a second time.
    let _ = broker.xadd(entry(1)).await;
    assert_eq!(broker.xlen(STREAM).await.expect("xlen"), 2);
    assert_eq!(broker.faults()[0].fault, Fault::After);
}

/// `autoclaim_recorded` is faulted whole, like every call: an error
/// before it applies neither the claim nor its records; an error after it
/// keeps both, so the lost reply loses no deleted entry's record.
#[tokio::test(start_paused = true)]
async fn a_recorded_autoclaim_is_faulted_as_one_step() {
    for (before, after, applied) in [(1.0, 0.0, false), (0.0, 1.0, true)] {
        let broker = faulty(FaultConfig {
            error_before: before,
            error_after: after,
            ops: OpSet::only([Op::AutoclaimRecorded]),
            ..FaultConfig::default()
        });
        broker
            .group_create(STREAM, "g", GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let gone = broker.xadd(entry(1)).await.expect("xadd");
        let kept = broker.xadd(entry(2)).await.expect("xadd");
        let read = ReadGroup::new(STREAM, "g", "old").count(2);
        broker.read_group(&read).await.expect("read");
        broker.xdel(STREAM, &[gone]).await.expect("xdel");
        let template = NewEntry::new("dlq", Fields::new().with("reason", "gone"));
        let record = DeletedRecord::new(template, "entry_id", "m:", Duration::from_secs(60));
        let claim = AutoClaim::new(STREAM, "g", "new");
        let err = broker
            .autoclaim_recorded(&claim, &record)
            .await
            .expect_err("injected");
        assert!(err.is_transient(), "{err}");
        let pending = broker
            .pending(STREAM, "g", &PendingQuery::new(10))
            .await
            .expect("pending");
        let owners: Vec<_> = pending.iter().map(|p| (p.id, p.consumer.clone())).collect();
        let records = broker.xlen("dlq").await.expect("xlen");
        if applied {
            assert_eq!(owners, [(kept, "new".to_owned())]);
            assert_eq!(records, 1, "the record came with the claim");
        } else {
            let old = "old".to_owned();
            assert_eq!(owners, [(gone, old.clone()), (kept, old)]);
            assert_eq!(records, 0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn latency_is_virtual_time_within_its_bounds() {
    let broker = faulty(FaultConfig {
        latency: Some((Duration::from_millis(50), Duration::from_millis(10))),
        ..FaultConfig::default()
    });
    let wall = std::time::Instant::now();
    let start = Instant::now();
    for n in 0..20 {
        broker.xadd(entry(n)).await.expect("latency only");
    }
    let elapsed = start.elapsed();
    let logged: u64 = broker
        .faults()
        .iter()
        .map(|e| match e.fault {
            Fault::Delay(ms) => {
                assert!((10..=50).contains(&ms), "{ms} ms");
                ms
            }
            other => panic!("unexpected {other:?}"),
        })
        .sum();
    assert_eq!(elapsed, Duration::from_millis(logged));
    assert!(elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(1));
    assert!(wall.elapsed() < Duration::from_secs(5), "slept for real");
}

#[tokio::test(start_paused = true)]
async fn a_blocking_read_never_waits_longer_than_its_block() {
    let broker = faulty(FaultConfig {
        latency: Some((Duration::from_millis(100), Duration::from_millis(100))),
        ..FaultConfig::default()
    });
    let inner = broker.inner();
    inner
        .group_create(STREAM, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for (block, waited) in [(30, 30), (100, 100), (250, 250)] {
        let read = ReadGroup::new(STREAM, "g", "c").block(Duration::from_millis(block));
        let start = Instant::now();
        let got = broker.read_group(&read).await.expect("read");
        assert!(got.is_empty());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(waited),
            "BLOCK {block}"
        );
    }
    // The delay spent was logged as taken: 30 of the drawn 100 ms, then 100.
    let delays: Vec<_> = broker.faults().iter().map(|e| e.fault).collect();
    assert_eq!(
        delays,
        [Fault::Delay(30), Fault::Delay(100), Fault::Delay(100)]
    );

    // An entry already there comes back at once after the delay, even when
    // the delay used up the whole BLOCK time.
    inner.xadd(entry(1)).await.expect("xadd");
    let read = ReadGroup::new(STREAM, "g", "c").block(Duration::from_millis(30));
    assert_eq!(broker.read_group(&read).await.expect("read").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn switching_faults_off_stops_them_and_draws_nothing() {
    let broker = faulty(FaultConfig {
        error_before: 1.0,
        ..FaultConfig::default()
    });
    assert!(broker.xlen(STREAM).await.is_err());
    broker.set_enabled(false);
    assert!(!broker.is_enabled());
    for n in 0..50 {
        broker.xadd(entry(n)).await.expect("faults are off");
    }
    assert_eq!(broker.xlen(STREAM).await.expect("xlen"), 50);
    assert_eq!((broker.calls(), broker.injected()), (52, 1));
    assert_eq!(broker.faults().len(), 1);

    broker.set_enabled(true);
    assert!(broker.xlen(STREAM).await.is_err());
    assert_eq!(broker.faults()[1].seq, 52);
}

#[tokio::test(start_paused = true)]
async fn the_ops_filter_confines_faults_to_writes() {
    let broker = faulty(FaultConfig {
        error_before: 1.0,
        ops: OpSet::writes(),
        ..FaultConfig::default()
    });
    broker
        .inner()
        .group_create(STREAM, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    assert!(broker.xadd(entry(1)).await.is_err());
    assert!(
        broker
            .read_group(&ReadGroup::new(STREAM, "g", "c"))
            .await
            .is_err(),
        "read_group moves entries into the pending list: a write"
    );
    assert!(
        broker
            .settle(crewq_core::Settle::new(STREAM, "g", "c"))
            .await
            .is_err()
    );
    broker.xlen(STREAM).await.expect("a read");
    broker.xrange(STREAM, ALL_IDS, None).await.expect("a read");
    broker.pending_summary(STREAM, "g").await.expect("a read");
    broker.info_groups(STREAM).await.expect("a read");
    let ops: Vec<_> = broker.faults().iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Xadd, Op::ReadGroup, Op::Settle]);
}
