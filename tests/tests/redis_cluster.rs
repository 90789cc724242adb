//! What is particular to the cluster backend, on a private Redis Cluster:
//! calls whose keys span slots are refused before anything is sent, batches
//! over streams on every master go in one call, a blocked read holds up no
//! other command, and the monitor's statistics span the masters.

use std::time::Duration;

use crewq_core::monitor::Monitor;
use crewq_core::{
    Ack, AckAndAdd, AgentType, Broker, ErrorKind, Fields, GroupStart, Keyspace, NewEntry,
    ReadGroup, Settle, SettleItem,
};
use crewq_tests::backends::Backend;
use crewq_tests::redis_cluster::{MASTERS, TestCluster};

/// Enough agent types that their hash tags land on every master.
const AGENT_TYPES: usize = 12;

fn agent_types() -> Vec<AgentType> {
    (0..AGENT_TYPES)
        .map(|i| AgentType::new(format!("agent{i}")).expect("valid"))
        .collect()
}

fn one_field(n: usize) -> Fields {
    Fields::new().with("n", n.to_string())
}

/// How many keys each master holds.
fn keys_per_master(cluster: &TestCluster) -> Vec<u64> {
    cluster
        .masters()
        .iter()
        .map(|master| {
            let client = redis::Client::open(format!("redis://{master}/")).expect("url");
            let mut conn = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .expect("connect to a master");
            redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE")
        })
        .collect()
}

/// A stream with one pending entry of `consumer` in `group`.
async fn one_pending(broker: &dyn Broker, stream: &str, group: &str, consumer: &str) {
    broker
        .group_create(stream, group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    broker
        .xadd(NewEntry::new(stream, one_field(1)))
        .await
        .expect("xadd");
    let read = broker
        .read_group(&ReadGroup::new(stream, group, consumer).count(1))
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
}

#[tokio::test]
async fn a_settle_whose_appends_span_slots_is_refused_and_applies_nothing() {
    let cluster = TestCluster::start();
    let broker = cluster.broker().await;
    // The seed layout: task stream and results stream in different slots.
    let keyspace = Keyspace::seed().with_prefix("p").expect("prefix");
    let research = AgentType::new("research").expect("valid");
    let (tasks, results) = (keyspace.tasks(&research), keyspace.results(&research));
    one_pending(&broker, &tasks, "g", "c").await;
    let id = broker
        .pending(&tasks, "g", &crewq_core::PendingQuery::new(10))
        .await
        .expect("pending")[0]
        .id;
    let settle = Settle {
        stream: tasks.clone(),
        group: "g".into(),
        consumer: "c".into(),
        items: vec![SettleItem {
            id,
            appends: vec![NewEntry::new(&results, one_field(2))],
            delays: Vec::new(),
        }],
    };
    let err = broker.settle(settle).await.expect_err("keys in two slots");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("'{tasks}'")) && text.contains(&format!("'{results}'")),
        "the error names the keys: {text}"
    );
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 0);
    let summary = broker.pending_summary(&tasks, "g").await.expect("pending");
    assert_eq!(summary.count, 1, "still pending: nothing was sent");
}

#[tokio::test]
async fn an_ack_and_add_across_slots_is_refused_and_applies_nothing() {
    let cluster = TestCluster::start();
    let broker = cluster.broker().await;
    let (tasks, dlq) = ("p:tasks:x", "p:dlq:x");
    one_pending(&broker, tasks, "g", "c").await;
    let id = broker
        .xrange(tasks, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange")[0]
        .id;
    let step = AckAndAdd {
        acks: vec![Ack {
            stream: tasks.into(),
            group: "g".into(),
            ids: vec![id],
        }],
        adds: vec![NewEntry::new(dlq, one_field(1))],
        deletes: Vec::new(),
    };
    let err = broker
        .ack_and_add(step)
        .await
        .expect_err("keys in two slots");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("'p:dlq:x'"), "{err}");
    assert_eq!(broker.xlen(dlq).await.expect("xlen"), 0);
    let summary = broker.pending_summary(tasks, "g").await.expect("pending");
    assert_eq!(summary.count, 1);
}

#[tokio::test]
async fn a_batch_of_appends_to_streams_on_every_master_lands_in_one_call() {
    let cluster = TestCluster::start();
    let broker = cluster.broker().await;
    let keyspace = Keyspace::cluster();
    let types = agent_types();
    // Two rounds, interleaved, so one call's entries to a stream are not
    // adjacent: the split must keep each stream's order.
    let entries: Vec<NewEntry> = (0..2)
        .flat_map(|round| {
            types
                .iter()
                .map(move |agent| (round, agent))
                .collect::<Vec<_>>()
        })
        .map(|(round, agent)| NewEntry::new(keyspace.tasks(agent), one_field(round)))
        .collect();
    let ids = broker.xadd_many(entries).await.expect("one call");
    assert_eq!(ids.len(), 2 * AGENT_TYPES);
    assert!(ids.iter().all(Result::is_ok), "{ids:?}");
    for (i, agent) in types.iter().enumerate() {
        let stream = keyspace.tasks(agent);
        let stored = broker
            .xrange(&stream, crewq_core::ALL_IDS, None)
            .await
            .expect("xrange");
        let rounds: Vec<Option<&str>> = stored.iter().map(|e| e.fields.get_str("n")).collect();
        assert_eq!(rounds, vec![Some("0"), Some("1")], "{stream}");
        let first = ids[i].as_ref().expect("ok");
        assert_eq!(&stored[0].id, first, "replies in the caller's order");
    }
    let per_master = keys_per_master(&cluster);
    assert_eq!(per_master.len(), MASTERS);
    assert!(
        per_master.iter().all(|&keys| keys > 0),
        "the streams spread over every master: {per_master:?}"
    );
}

#[tokio::test]
async fn a_blocked_read_holds_up_no_other_command() {
    // The prefix guard lives to the end: it deletes the keys (on an
    // external cluster) when the test is done.
    let Backend {
        broker,
        keyspace,
        cluster_prefix: _prefix,
        ..
    } = Backend::cluster().await;
    let types = agent_types();
    let waiting = keyspace.tasks(&types[0]);
    broker
        .group_create(&waiting, "g", GroupStart::Latest, true)
        .await
        .expect("group");
    let reader = {
        let broker = broker.clone();
        let read = ReadGroup::new(&waiting, "g", "c")
            .count(1)
            .block(Duration::from_secs(10));
        tokio::spawn(async move { broker.read_group(&read).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Commands to every master, the blocked stream's included, go through
    // while the read waits.
    let others = async {
        for (n, agent) in types.iter().enumerate().skip(1) {
            broker
                .xadd(NewEntry::new(keyspace.tasks(agent), one_field(n)))
                .await
                .expect("xadd");
        }
        broker.xlen(&waiting).await.expect("xlen")
    };
    let held = tokio::time::timeout(Duration::from_secs(5), others).await;
    assert_eq!(
        held.ok(),
        Some(0),
        "other commands were held up by the read"
    );
    assert!(!reader.is_finished());
    broker
        .xadd(NewEntry::new(&waiting, one_field(0)))
        .await
        .expect("xadd");
    let read = reader.await.expect("join").expect("read");
    assert_eq!(read.len(), 1, "the append woke the read");
}

#[tokio::test]
async fn monitor_stats_of_tasks_and_dead_letters_span_every_master() {
    // The prefix guard lives to the end: it deletes the keys (on an
    // external cluster) when the test is done.
    let Backend {
        broker,
        keyspace,
        cluster_prefix: _prefix,
        ..
    } = Backend::cluster().await;
    let types = agent_types();
    for (n, agent) in types.iter().enumerate() {
        for _ in 0..=n {
            broker
                .xadd(NewEntry::new(keyspace.tasks(agent), one_field(n)))
                .await
                .expect("xadd");
        }
        broker
            .xadd(NewEntry::new(keyspace.dlq(agent), one_field(n)))
            .await
            .expect("xadd");
    }
    let monitor = Monitor::new(broker.clone(), keyspace.clone());
    let stats = monitor.stats(&types).await.expect("stats of every type");
    let lengths: Vec<u64> = stats.iter().map(|s| s.tasks.length).collect();
    let expected: Vec<u64> = (1..=AGENT_TYPES as u64).collect();
    assert_eq!(lengths, expected);
    assert!(stats.iter().all(|s| s.dlq_length == 1));
}
