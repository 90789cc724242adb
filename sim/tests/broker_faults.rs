//! `FaultyBroker`'s broker-level fault classes (issue 9): server refusals
//! of a failover or restart, settle items refused on their own, and a
//! half-open link whose calls hang until the time-out.

use std::time::Duration;

use crewq_core::{
    Broker, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup, Settle, SettleItem, Settled,
};
use crewq_memory::MemoryBroker;
use crewq_sim::{
    Fault, FaultConfig, FaultyBroker, Flows, HalfOpen, Op, ServerError,
    memory_broker_on_virtual_time,
};
use tokio::time::Instant;

const STREAM: &str = "s";

fn entry(n: u32) -> NewEntry {
    NewEntry::new(STREAM, Fields::new().with("n", n.to_string()))
}

fn faulty(config: FaultConfig) -> FaultyBroker<MemoryBroker> {
    FaultyBroker::new(memory_broker_on_virtual_time(), config)
}

#[tokio::test(start_paused = true)]
async fn a_refused_call_is_unavailable_transient_and_applies_nothing() {
    let broker = faulty(FaultConfig {
        seed: 11,
        refused: 1.0,
        ..FaultConfig::default()
    });
    for n in 0..20 {
        let err = broker.xadd(entry(n)).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(broker.inner().xlen(STREAM).await.expect("xlen"), 0);
    // A read is refused only while the server loads its dataset.
    for _ in 0..10 {
        let err = broker.xlen(STREAM).await.expect_err("refused");
        assert!(err.to_string().contains("LOADING"), "{err}");
    }
    let refused: Vec<ServerError> = broker
        .faults()
        .iter()
        .filter_map(|e| match e.fault {
            Fault::Refused(server) => Some(server),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 30);
    assert!(
        refused[..20].contains(&ServerError::Readonly),
        "{refused:?}"
    );
    assert!(refused[20..].iter().all(|s| *s == ServerError::Loading));
    assert_eq!(broker.injected(), 30);
}

/// `n` entries read by consumer `c` of group `g`.
async fn pending_entries(broker: &MemoryBroker, n: u32) -> Vec<crewq_core::StreamId> {
    broker
        .group_create(STREAM, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for i in 0..n {
        broker.xadd(entry(i)).await.expect("xadd");
    }
    let read = ReadGroup::new(STREAM, "g", "c").count(n as usize);
    let got = broker.read_group(&read).await.expect("read");
    got.into_iter().map(|e| e.id).collect()
}

#[tokio::test(start_paused = true)]
async fn refused_settle_items_stay_pending_while_the_others_settle() {
    let broker = faulty(FaultConfig {
        seed: 5,
        item_failure: 0.5,
        ..FaultConfig::default()
    });
    let ids = pending_entries(broker.inner(), 20).await;
    let settle = ids.iter().fold(Settle::new(STREAM, "g", "c"), |s, id| {
        s.item(SettleItem::new(*id).append(NewEntry::new("out", Fields::new().with("k", "v"))))
    });
    let settled = broker.settle(settle).await.expect("settle");
    assert_eq!(settled.len(), 20);
    let failed: Vec<usize> = (0..20)
        .filter(|n| matches!(&settled[*n], Settled::Failed(_)))
        .collect();
    assert!(!failed.is_empty() && failed.len() < 20, "{settled:?}");
    for (n, reply) in settled.iter().enumerate() {
        match reply {
            Settled::Failed(text) => assert!(
                text.starts_with("WRONGTYPE") || text.starts_with("OOM"),
                "{text}"
            ),
            other => assert!(
                matches!(other, Settled::Done(a) if a.len() == 1),
                "{n}: {other:?}"
            ),
        }
    }
    let inner = broker.inner();
    assert_eq!(
        inner.xlen("out").await.expect("xlen"),
        (20 - failed.len()) as u64,
        "nothing written for a refused item"
    );
    let summary = inner.pending_summary(STREAM, "g").await.expect("pending");
    assert_eq!(
        summary.count,
        failed.len() as u64,
        "refused items stay pending"
    );
    let logged: Vec<u32> = broker
        .faults()
        .iter()
        .filter_map(|e| match e.fault {
            Fault::ItemFailed { item } => Some(item),
            _ => None,
        })
        .collect();
    let failed: Vec<u32> = failed.into_iter().map(|n| n as u32).collect();
    assert_eq!(logged, failed);
    assert!(broker.faults().iter().all(|e| e.op == Op::Settle));
}

#[tokio::test(start_paused = true)]
async fn a_half_open_link_hangs_calls_until_the_time_out_within_its_window() {
    let now = Instant::now();
    let link = HalfOpen {
        from: now + Duration::from_millis(100),
        until: now + Duration::from_millis(500),
        timeout: Duration::from_millis(200),
        flows: Flows::All,
    };
    let broker = faulty(FaultConfig {
        seed: 3,
        half_open: vec![link],
        ..FaultConfig::default()
    });
    broker.xadd(entry(0)).await.expect("before the window");
    tokio::time::sleep_until(link.from).await;
    let mut applied = 0;
    let mut calls = 0;
    while Instant::now() < link.until {
        let start = Instant::now();
        let err = broker.xadd(entry(1)).await.expect_err("hangs");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(start.elapsed(), link.timeout);
        calls += 1;
        if err.to_string().contains("it was applied") {
            applied += 1;
        }
    }
    assert_eq!(calls, 2, "calls starting at 100 and 300 ms");
    broker.xadd(entry(2)).await.expect("after the window");
    let len = broker.inner().xlen(STREAM).await.expect("xlen");
    assert_eq!(len, 2 + applied);
    let hung = broker
        .faults()
        .iter()
        .filter(|e| matches!(e.fault, Fault::HalfOpen { .. }))
        .count();
    assert_eq!(hung, 2);
}

#[tokio::test(start_paused = true)]
async fn the_new_classes_are_decided_by_the_seed() {
    async fn log(seed: u64) -> Vec<Fault> {
        let broker = faulty(FaultConfig {
            seed,
            refused: 0.3,
            item_failure: 0.3,
            ..FaultConfig::default()
        });
        let ids = pending_entries(broker.inner(), 10).await;
        for n in 0..10 {
            let _ = broker.xadd(entry(n)).await;
        }
        for id in ids {
            let _ = broker
                .settle(Settle::new(STREAM, "g", "c").item(SettleItem::new(id)))
                .await;
        }
        broker.faults().iter().map(|e| e.fault).collect()
    }
    assert_eq!(log(9).await, log(9).await);
    assert_ne!(log(9).await, log(10).await);
}

/// A small standard campaign reaches every broker-level class, and its hit
/// counts say so: a class wired into the plan but never fired would show 0.
#[test]
fn a_standard_campaign_fires_every_broker_fault_class() {
    use crewq_sim::{Campaign, Scenario, Simulation, run_campaign};

    let simulation = Simulation::standard(Scenario::default());
    let report = run_campaign(&simulation, &Campaign::new(1, 10).jobs(1), |_| {});
    assert!(report.passed(), "{:?}", report.failures);
    for class in [
        "broker_error_before",
        "broker_error_after",
        "failover_readonly",
        "failover_loading",
        "failover_oom",
        "failover_noscript",
        "failover_moved",
        "half_open",
        "settle_item_failed",
        "crash",
        "pause",
    ] {
        let hits = report.hits.get(class).copied().unwrap_or(0);
        assert!(hits > 0, "{class} never fired: {:?}", report.hits);
    }
}
