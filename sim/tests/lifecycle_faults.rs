//! The fault classes of issue 9's findings 7 and 3: graceful stops with a
//! grace longer than the lease while long tasks run, and outages of the
//! broker for every actor, longer than a settle's retries.

use std::time::Duration;

use crewq_core::{Broker, ErrorKind, Fields, NewEntry};
use crewq_memory::MemoryBroker;
use crewq_sim::{
    Campaign, Fault, FaultConfig, FaultRates, Faults, FaultyBroker, Scenario, Simulation,
    run_campaign,
};
use tokio::time::Instant;

fn entry(n: u32) -> NewEntry {
    NewEntry::new("s", Fields::new().with("n", n.to_string()))
}

#[tokio::test(start_paused = true)]
async fn an_outage_refuses_every_call_in_its_window_and_applies_none() {
    let now = Instant::now();
    let window = now + Duration::from_millis(100)..now + Duration::from_millis(400);
    let broker = FaultyBroker::new(
        MemoryBroker::new(),
        FaultConfig {
            seed: 1,
            outages: vec![window.clone()],
            ..FaultConfig::default()
        },
    );
    broker.xadd(entry(0)).await.expect("before the outage");
    tokio::time::sleep_until(window.start).await;
    for n in 0..3 {
        let err = broker.xadd(entry(n)).await.expect_err("down");
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(Instant::now(), window.end);
    broker.xadd(entry(9)).await.expect("after the outage");
    assert_eq!(broker.inner().xlen("s").await.expect("xlen"), 2);
    let outages = broker
        .faults()
        .iter()
        .filter(|e| e.fault == Fault::Outage)
        .count();
    assert_eq!(outages, 3);
}

/// Each class, alone, is drawn and fires in a small campaign, and the real
/// worker passes it; the hit counts show stops that caught tasks running.
#[test]
fn stops_and_outages_fire_and_the_real_worker_passes() {
    let rates = FaultRates {
        stops: 1,
        outages: 1,
        ..FaultRates::NONE
    };
    let simulation = Simulation::standard(Scenario::default().faults(Faults::Rates(rates)));
    let report = run_campaign(&simulation, &Campaign::new(1, 10).jobs(1), |_| {});
    assert!(report.passed(), "{:?}", report.failures);
    for class in ["graceful_stop", "graceful_stop_running_tasks", "outage"] {
        let hits = report.hits.get(class).copied().unwrap_or(0);
        assert!(hits > 0, "{class} never fired: {:?}", report.hits);
    }
}
