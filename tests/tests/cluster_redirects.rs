//! Right after a failover the cluster client's slot map still names the
//! old owner of a slot, which answers `MOVED`. redis-rs follows a redirect
//! a bounded number of times ([`RedisConfig::retries`]); a transaction
//! whose queued commands were redirected comes back `EXECABORT`, which it
//! does not follow. Each step below fails over the master of its keys with
//! `CLUSTER FAILOVER` (nothing killed, nothing lost: the old master stays
//! up and redirects) and then makes one kind of call.
//!
//! Before the backend handled both, the first dispatch after a master was
//! killed failed for good in CI: `unsupported by this backend: xadd_once
//! ...: MOVED ...`, the refusal meant for a standalone client pointed at a
//! cluster node, and an `ack_and_add` failed with `Transaction aborted`.

use std::time::Duration;

use crewq_core::{
    Ack, AckAndAdd, AddedOnce, AgentType, Broker, Error, Fields, GroupStart, Keyspace, NewEntry,
    OnceEntry, ReadGroup, Settle, SettleItem, Settled, StreamId,
};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_cluster::TestCluster;

fn agent(name: &str) -> AgentType {
    AgentType::new(name).expect("valid")
}

fn one_field(n: usize) -> Fields {
    Fields::new().with("n", n.to_string())
}

/// Fails over the master serving `key` and returns when every node agrees.
fn fail_over_master_of(cluster: &TestCluster, key: &str) {
    let master = cluster.master_of(key);
    cluster.fail_over(&master);
}

/// A cluster broker whose client follows no redirect itself: the first
/// call to a slot after its failover gets the redirect back.
async fn following_no_redirect(cluster: &TestCluster) -> RedisBroker {
    match RedisConfig::new(cluster.seeds())
        .cluster()
        .retries(0)
        .connect()
        .await
    {
        Ok(broker) => broker,
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    }
}

/// Reads one entry of `stream`, so that it is pending for consumer `c`.
async fn one_pending(broker: &RedisBroker, stream: &str, group: &str) -> StreamId {
    broker
        .group_create(stream, group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    broker
        .xadd(NewEntry::new(stream, one_field(0)))
        .await
        .expect("xadd");
    let read = broker
        .read_group(&ReadGroup::new(stream, group, "c").count(1))
        .await
        .expect("read");
    read.first().expect("one entry delivered").id
}

/// The first call after a failover: refused as transient (the slot is
/// moving, nothing applied), never as a permanent error.
fn first_is_transient<T: std::fmt::Debug>(what: &str, reply: Result<T, Error>) {
    match reply {
        Err(err) => assert!(
            err.is_transient(),
            "{what}: a redirect must be transient: {err}"
        ),
        Ok(reply) => {
            panic!("{what}: the client followed no redirect, yet the call went through: {reply:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_redirected_after_a_failover_is_sent_again_and_applied_once() {
    let cluster = TestCluster::start();
    let prefix = cluster.unique_prefix();
    let broker = cluster.broker().await;
    let keyspace = Keyspace::cluster().with_prefix(&prefix).expect("prefix");
    let (tasks, results) = (keyspace.tasks(&agent("tx")), keyspace.results(&agent("tx")));
    let id = one_pending(&broker, &tasks, "g").await;
    fail_over_master_of(&cluster, &tasks);
    let reply = broker
        .ack_and_add(
            AckAndAdd::new()
                .append(NewEntry::new(results.clone(), one_field(1)))
                .ack(Ack::new(tasks.clone(), "g", vec![id])),
        )
        .await
        .expect("ack_and_add after a failover");
    assert_eq!(reply.acked, vec![1]);
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_that_outlast_the_clients_tries_are_transient_and_apply_nothing() {
    let cluster = TestCluster::start();
    let prefix = cluster.unique_prefix();
    let broker = following_no_redirect(&cluster).await;
    let keyspace = Keyspace::cluster().with_prefix(&prefix).expect("prefix");

    // A guarded append (`xadd_once`, what `Producer::dispatch` sends).
    let tasks = keyspace.tasks(&agent("once"));
    broker
        .xadd(NewEntry::new(tasks.clone(), one_field(0)))
        .await
        .expect("xadd");
    fail_over_master_of(&cluster, &tasks);
    let once = OnceEntry::new(
        NewEntry::new(tasks.clone(), one_field(1)),
        keyspace.dispatched_marker(&agent("once"), "t1"),
        Duration::from_secs(60),
    );
    first_is_transient("xadd_once", broker.xadd_once(vec![once.clone()]).await);
    let added = broker.xadd_once(vec![once]).await.expect("xadd_once again");
    assert!(
        matches!(added.as_slice(), [Ok(AddedOnce::Added(_))]),
        "the redirected call appended something: {added:?}"
    );
    assert_eq!(broker.xlen(&tasks).await.expect("xlen"), 2);

    // A settle (a script pipeline in one slot).
    let (tasks, results) = (
        keyspace.tasks(&agent("settle")),
        keyspace.results(&agent("settle")),
    );
    let id = one_pending(&broker, &tasks, "g").await;
    fail_over_master_of(&cluster, &tasks);
    let mut settle = Settle::new(tasks.clone(), "g", "c");
    settle
        .items
        .push(SettleItem::new(id).append(NewEntry::new(results.clone(), one_field(2))));
    first_is_transient("settle", broker.settle(settle.clone()).await);
    let settled = broker.settle(settle).await.expect("settle again");
    assert!(
        matches!(settled.as_slice(), [Settled::Done(ids)] if ids.len() == 1),
        "{settled:?}"
    );
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 1);

    // A batch split by slot (`xadd_many` over agent types on two masters):
    // the part on the failed-over master is redirected.
    let moved = keyspace.tasks(&agent("many"));
    let stays = (0..64)
        .map(|n| keyspace.tasks(&agent(&format!("other{n}"))))
        .find(|key| cluster.master_of(key) != cluster.master_of(&moved))
        .expect("an agent type on another master");
    broker
        .xadd(NewEntry::new(moved.clone(), one_field(0)))
        .await
        .expect("xadd");
    fail_over_master_of(&cluster, &moved);
    let batch = vec![
        NewEntry::new(moved.clone(), one_field(1)),
        NewEntry::new(stays.clone(), one_field(1)),
    ];
    first_is_transient("xadd_many", broker.xadd_many(batch.clone()).await);
    assert_eq!(
        broker.xlen(&moved).await.expect("xlen"),
        1,
        "nothing applied"
    );
    let ids = broker.xadd_many(batch).await.expect("xadd_many again");
    assert!(ids.iter().all(Result::is_ok), "{ids:?}");
    assert_eq!(broker.xlen(&moved).await.expect("xlen"), 2);
}
