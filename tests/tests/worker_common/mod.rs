//! What the worker's test files share: an environment on either backend
//! whose workers reach the broker through a [`Gate`] that can fail calls.

// Each test file uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod gate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::worker::{ATTEMPTS_FIELD, Backoff, Handler, Worker, WorkerHandle, WorkerOptions};
use crewq_core::{
    AgentType, Broker, DeadLetter, Fields, Keyspace, NewEntry, StreamId, Task, TaskResult,
    result_from_fields, task_to_fields,
};
use crewq_tests::backends::{Backend, Deleter};
use crewq_tests::redis_server::TestRedis;
use serde_json::{Value, json};

pub use gate::{Gate, When, dropped};

/// A broker, the gate in front of it, and the keyspace a case uses.
pub struct Env {
    /// The broker itself, for the test's own reads and writes.
    pub broker: Arc<dyn Broker>,
    /// What the workers use.
    pub gate: Arc<Gate>,
    pub keyspace: Keyspace,
    pub agent: AgentType,
    pub memory: bool,
    /// Keeps a private Redis running for the case.
    pub server: Option<TestRedis>,
    /// `DEL` of a key, beside the broker.
    pub deleter: Deleter,
}

impl From<Backend> for Env {
    fn from(backend: Backend) -> Env {
        Env {
            gate: Gate::new(Arc::clone(&backend.broker)),
            memory: backend.is_memory(),
            broker: backend.broker,
            keyspace: backend.keyspace,
            agent: AgentType::new("research").expect("agent"),
            server: backend.server,
            deleter: backend.deleter,
        }
    }
}

impl Env {
    pub fn keys(&self) -> crewq_core::AgentKeys {
        self.keyspace.keys(&self.agent)
    }

    /// Options with a short lease and back-off, so cases run fast on Redis.
    pub fn options(&self) -> WorkerOptions {
        let mut options = WorkerOptions::default().lease(Duration::from_millis(600));
        options.keyspace = self.keyspace.clone();
        options.backoff = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
        };
        options.seed = Some(7);
        // Nothing here is rolled back (no AOF `everysec` restart, no
        // failover to a lagging replica): the worker may trust its newest
        // sample of the group, and the tests of a destroyed group see the
        // floor logic at its sharpest. The window's own test sets it.
        options.rollback_window = Duration::ZERO;
        options
    }

    /// A worker named `consumer` through the gate, with `options`.
    pub fn spawn_with(
        &self,
        consumer: &str,
        options: WorkerOptions,
        handler: impl Handler<Value>,
    ) -> WorkerHandle {
        let broker: Arc<dyn Broker> = Arc::clone(&self.gate) as Arc<dyn Broker>;
        Worker::new(broker, self.agent.clone(), consumer, handler)
            .options(options)
            .spawn()
    }

    /// A worker named `consumer` through the gate, with [`Env::options`].
    pub fn spawn(&self, consumer: &str, handler: impl Handler<Value>) -> WorkerHandle {
        self.spawn_with(consumer, self.options(), handler)
    }

    pub async fn group(&self) {
        let keys = self.keys();
        self.broker
            .group_create(
                &keys.tasks,
                &keys.group,
                crewq_core::GroupStart::BEGINNING,
                true,
            )
            .await
            .expect("group");
    }

    pub async fn dispatch(&self, task: &Task<Value>) -> StreamId {
        self.xadd(task_to_fields(task).expect("encode")).await
    }

    pub async fn xadd(&self, fields: Fields) -> StreamId {
        self.broker
            .xadd(NewEntry::new(self.keys().tasks, fields))
            .await
            .expect("xadd task")
    }

    /// The failed-attempt count each entry of the task stream carries, in
    /// order (`None` for a first attempt): each retry is a new entry.
    pub async fn attempt_counts(&self) -> Vec<Option<String>> {
        self.broker
            .xrange(&self.keys().tasks, crewq_core::ALL_IDS, None)
            .await
            .expect("xrange tasks")
            .iter()
            .map(|e| e.fields.get_str(ATTEMPTS_FIELD).map(str::to_owned))
            .collect()
    }

    pub async fn results(&self) -> Vec<TaskResult> {
        self.broker
            .xrange(&self.keys().results, crewq_core::ALL_IDS, None)
            .await
            .expect("xrange results")
            .iter()
            .map(|e| result_from_fields(&e.fields).expect("result"))
            .collect()
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.broker
            .xrange(&self.keys().dlq, crewq_core::ALL_IDS, None)
            .await
            .expect("xrange dlq")
            .iter()
            .map(|e| DeadLetter::from_fields(&e.fields).expect("dead letter"))
            .collect()
    }

    /// The reasons of the dead letters, sorted.
    pub async fn reasons(&self) -> Vec<String> {
        let mut reasons: Vec<_> = self
            .dead_letters()
            .await
            .iter()
            .map(|l| {
                l.reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
            .collect();
        reasons.sort();
        reasons
    }

    pub async fn pending(&self) -> u64 {
        let keys = self.keys();
        match self.broker.pending_summary(&keys.tasks, &keys.group).await {
            Ok(summary) => summary.count,
            Err(_) => 0,
        }
    }

    /// Waits (virtual or real time) until `n` results and dead letters
    /// together are recorded and nothing is pending, or panics after 20 s.
    pub async fn settled(&self, n: usize) {
        self.settled_by(n, |results, letters| results + letters)
            .await;
    }

    /// Waits as [`Env::settled`] until `n` results or `n` dead letters are
    /// recorded (a task dead-lettered after its runs failed has a failure
    /// result too: counted together it would count twice).
    pub async fn settled_either(&self, n: usize) {
        self.settled_by(n, usize::max).await;
    }

    /// Waits until `done(results, dead letters) >= n` and nothing is
    /// pending, or panics after 20 s.
    async fn settled_by(&self, n: usize, done: fn(usize, usize) -> usize) {
        for _ in 0..400 {
            let done = done(self.results().await.len(), self.dead_letters().await.len());
            if done >= n && self.pending().await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "not settled: {} results, {} dead letters, {} pending",
            self.results().await.len(),
            self.dead_letters().await.len(),
            self.pending().await
        );
    }
}

pub fn task(n: u32, max_retries: u32) -> Task<Value> {
    Task::new("research", "analyze", json!({ "n": n }))
        .task_id(format!("task-{n}"))
        .max_retries(max_retries)
        .build()
        .expect("task")
}

/// Counts calls per task id.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<BTreeMap<String, u32>>>);

impl Calls {
    pub fn bump(&self, task_id: &str) -> u32 {
        let mut calls = self.0.lock().expect("calls");
        let n = calls.entry(task_id.to_owned()).or_default();
        *n += 1;
        *n
    }
    pub fn total(&self) -> u32 {
        self.0.lock().expect("calls").values().sum()
    }
    pub fn of(&self, task_id: &str) -> u32 {
        self.0
            .lock()
            .expect("calls")
            .get(task_id)
            .copied()
            .unwrap_or(0)
    }
}

/// A handler that counts its calls and succeeds after `sleep`.
pub fn counting(calls: &Calls, sleep: Duration) -> impl Handler<Value> + use<> {
    let calls = calls.clone();
    move |t: Task<Value>| {
        calls.bump(&t.task_id);
        async move {
            tokio::time::sleep(sleep).await;
            Ok(json!({ "done": t.task_id }))
        }
    }
}
