//! Half-open links strike connections as crewq meets them on Redis: the
//! shared connection of ordinary calls and the pooled ones of blocking
//! reads go silent apart, and a silent connection stays silent until a call
//! on it times out and the client replaces it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::{Broker, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup, Result};
use crewq_memory::MemoryBroker;
use crewq_sim::{
    CallEnd, Conn, Fault, FaultConfig, FaultyBroker, Flows, HalfOpen, Op,
    memory_broker_on_virtual_time,
};
use tokio::time::Instant;

const STREAM: &str = "s";
const TIMEOUT: Duration = Duration::from_millis(100);

fn entry(n: u32) -> NewEntry {
    NewEntry::new(STREAM, Fields::new().with("n", n.to_string()))
}

/// A broker whose link silences `flows` from `from_ms` to `until_ms` after
/// now, with a group on the stream.
async fn linked(flows: Flows, from_ms: u64, until_ms: u64) -> FaultyBroker<MemoryBroker> {
    let inner = memory_broker_on_virtual_time();
    inner
        .group_create(STREAM, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let now = Instant::now();
    let link = HalfOpen {
        from: now + Duration::from_millis(from_ms),
        until: now + Duration::from_millis(until_ms),
        timeout: TIMEOUT,
        flows,
    };
    FaultyBroker::new(
        inner,
        FaultConfig {
            seed: 1,
            half_open: vec![link],
            ..FaultConfig::default()
        },
    )
}

/// A blocking read of new entries: the backend's pooled connection.
fn blocking_read() -> ReadGroup {
    ReadGroup::new(STREAM, "g", "c")
        .count(10)
        .block(Duration::from_millis(10))
}

/// Whether `reply` timed out on the link, and that it took the time-out.
fn hung<T>(reply: &Result<T>, started: Instant) -> bool {
    matches!(reply, Err(err) if err.kind() == ErrorKind::Timeout) && started.elapsed() == TIMEOUT
}

async fn add(broker: &FaultyBroker<MemoryBroker>, n: u32) -> bool {
    let started = Instant::now();
    hung(&broker.xadd(entry(n)).await, started)
}

async fn read_new(broker: &FaultyBroker<MemoryBroker>) -> bool {
    let started = Instant::now();
    hung(&broker.read_group(&blocking_read()).await, started)
}

#[tokio::test(start_paused = true)]
async fn a_silent_shared_connection_hangs_ordinary_calls_while_blocking_reads_work() {
    let broker = linked(Flows::Shared, 0, 10_000).await;
    broker.inner().xadd(entry(0)).await.expect("xadd");
    assert!(
        add(&broker, 1).await,
        "an append goes on the shared connection"
    );
    let started = Instant::now();
    let pending = broker
        .read_group(&ReadGroup::new(STREAM, "g", "c").pending_after(crewq_core::StreamId::ZERO))
        .await;
    assert!(
        hung(&pending, started),
        "a history read is no blocking read"
    );
    let started = Instant::now();
    let got = broker.read_group(&blocking_read()).await;
    assert!(!hung(&got, started), "{got:?}");
    assert!(!got.expect("a blocking read works").is_empty());
    let conns: Vec<Conn> = broker
        .faults()
        .iter()
        .filter_map(|e| match e.fault {
            Fault::HalfOpen { conn, .. } => Some(conn),
            _ => None,
        })
        .collect();
    assert_eq!(conns, [Conn::Shared, Conn::Shared]);
}

#[tokio::test(start_paused = true)]
async fn silent_blocking_connections_hang_reads_of_new_entries_only() {
    let broker = linked(Flows::Blocking, 0, 10_000).await;
    assert!(!add(&broker, 1).await, "the shared connection works");
    assert!(read_new(&broker).await, "a blocking read hangs");
    assert!(
        read_new(&broker).await,
        "and its replacement, inside the window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_stays_silent_past_the_window_until_a_time_out_replaces_it() {
    let broker = linked(Flows::Shared, 100, 200).await;
    // Opened before the window: in use when the link goes silent.
    assert!(!add(&broker, 0).await, "before the window");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        add(&broker, 1).await,
        "after the window, on the old connection"
    );
    assert!(!add(&broker, 2).await, "on the connection that replaced it");
    // A blocking connection first opened after the window never hangs.
    assert!(!read_new(&broker).await);
}

#[tokio::test(start_paused = true)]
async fn calls_timing_out_on_one_connection_replace_it_once() {
    // Two calls hang on the first connection; the first time-out replaces
    // it with one opened inside the window (silent too); the second
    // time-out must not replace that one.
    let broker = Arc::new(linked(Flows::Shared, 0, 200).await);
    let late = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            add(&broker, 1).await
        })
    };
    assert!(add(&broker, 0).await, "0 to 100 ms");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let on_its_replacement = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move { add(&broker, 2).await })
    };
    assert!(late.await.expect("joins"), "50 to 150 ms");
    tokio::time::sleep_until(Instant::now() + Duration::from_millis(60)).await;
    // 210 ms: past the window, but the connection opened at 120 ms is
    // still the one in use, and silent.
    assert!(add(&broker, 3).await, "the replacement opened at 120 ms");
    assert!(on_its_replacement.await.expect("joins"));
    assert!(
        !add(&broker, 4).await,
        "a connection opened after the window"
    );
}

#[tokio::test(start_paused = true)]
async fn the_call_observer_sees_each_call_end_while_faults_are_on() {
    let broker = linked(Flows::Shared, 0, 10_000).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    broker.set_call_observer(Arc::new(move |call: &CallEnd| {
        sink.lock().expect("lock").push(*call);
    }));
    let _ = broker.xadd(entry(0)).await;
    let _ = broker.read_group(&blocking_read()).await;
    broker.set_enabled(false);
    let _ = broker.xadd(entry(1)).await;
    let seen = seen.lock().expect("lock").clone();
    let ends: Vec<(Op, Conn, bool)> = seen.iter().map(|c| (c.op, c.conn, c.ok)).collect();
    assert_eq!(
        ends,
        [
            (Op::Xadd, Conn::Shared, false),
            (Op::ReadGroup, Conn::Blocking, true)
        ]
    );
}
