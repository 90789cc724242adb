//! The memory broker is a function of its calls and virtual time: the same
//! calls at the same virtual times give the same replies, run after run.

use std::time::Duration;

use crewq_core::{
    Ack, AckAndAdd, Broker, Fields, GroupStart, NewEntry, PendingQuery, ReadGroup, StreamId,
    TokioClock,
};
use crewq_memory::MemoryBroker;

/// Drives a fixed workload with time passing between calls and returns
/// every reply, printed.
async fn transcript() -> Vec<String> {
    let broker = MemoryBroker::with_clock(TokioClock::default());
    let mut replies = Vec::new();
    broker
        .group_create("s", "g", GroupStart::BEGINNING, true)
        .await
        .expect("create");
    for n in 0..30u64 {
        let fields = Fields::new().with("n", n.to_string());
        replies.push(format!(
            "{:?}",
            broker.xadd(NewEntry::new("s", fields)).await
        ));
        if n % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(n)).await;
        }
        let consumer = format!("c{}", n % 4);
        let read = ReadGroup::new("s", "g", consumer.as_str()).count(2);
        let delivered = broker.read_group(&read).await.expect("read");
        replies.push(format!("{delivered:?}"));
        if n % 2 == 0 {
            let ids: Vec<StreamId> = delivered.iter().map(|e| e.id).collect();
            let step = AckAndAdd::new()
                .ack(Ack::new("s", "g", ids))
                .append(NewEntry::new(
                    "results",
                    Fields::new().with("n", n.to_string()),
                ));
            replies.push(format!("{:?}", broker.ack_and_add(step).await));
        }
        let claimed = broker
            .autoclaim(
                "s",
                "g",
                "reaper",
                Duration::from_millis(20),
                StreamId::ZERO,
                3,
            )
            .await;
        replies.push(format!("{claimed:?}"));
    }
    replies.push(format!(
        "{:?}",
        broker.pending("s", "g", &PendingQuery::new(100)).await
    ));
    replies.push(format!("{:?}", broker.info_groups("s").await));
    replies.push(format!("{:?}", broker.info_consumers("s", "g").await));
    replies
}

fn run_paused() -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(transcript())
}

#[test]
fn same_calls_at_same_virtual_times_give_same_replies() {
    let first = run_paused();
    let second = run_paused();
    assert!(
        first.len() > 100,
        "the workload ran ({} replies)",
        first.len()
    );
    assert_eq!(first, second);
}
