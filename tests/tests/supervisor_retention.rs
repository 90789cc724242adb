//! What a supervisor keeps, on both backends: results it cannot decode
//! stay pending (never acknowledged unrecorded), workflows nobody gathers
//! expire or are forgotten, and the results streams are trimmed only below
//! what every supervisor's group has gathered.
//!
//! Issue 9, findings 9 and 13 (supervisor part), and finding 1's results
//! retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crewq_core::producer::Producer;
use crewq_core::retention::{Acknowledged, Retention};
use crewq_core::supervisor::{Supervisor, SupervisorError, SupervisorOptions, Workflow};
use crewq_core::{
    AgentType, Broker, Error, GroupStart, Keyspace, NewEntry, ReadGroup, Task, TaskResult,
    TokioClock, WireCodec, task_from_fields,
};
use crewq_tests::backends::Backend;
use crewq_tests::redis_server::TestRedis;
use serde_json::json;

type Payload = BTreeMap<String, String>;
type Sup = Supervisor<Arc<dyn Broker>>;

const POLL: Duration = Duration::from_millis(50);
const ENOUGH: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

struct Env {
    broker: Arc<dyn Broker>,
    keyspace: Keyspace,
    clock: Option<TokioClock>,
    _server: Option<TestRedis>,
}

impl From<Backend> for Env {
    fn from(backend: Backend) -> Env {
        Env {
            broker: backend.broker,
            keyspace: backend.keyspace,
            clock: backend.clock,
            _server: backend.server,
        }
    }
}

fn research() -> AgentType {
    AgentType::new("research").expect("valid")
}

impl Env {
    fn options(&self) -> SupervisorOptions {
        SupervisorOptions::default()
            .poll(POLL)
            .workflow_timeout(ENOUGH)
    }

    fn supervisor(&self, name: &str, options: SupervisorOptions) -> Sup {
        let mut producer =
            Producer::new(Arc::clone(&self.broker)).with_keyspace(self.keyspace.clone());
        if let Some(clock) = self.clock {
            producer = producer.with_clock(clock);
        }
        Supervisor::with_options(name, producer, options).expect("valid name")
    }

    fn results(&self) -> String {
        self.keyspace.results(&research())
    }

    /// Stands in for the research workers: takes `n` tasks, appends the
    /// result `respond` gives each (encoded without a size limit).
    async fn answer(&self, n: usize, respond: impl Fn(&Task) -> TaskResult) {
        let (tasks, group) = (
            self.keyspace.tasks(&research()),
            self.keyspace.group(&research()),
        );
        match self
            .broker
            .group_create(&tasks, &group, GroupStart::BEGINNING, true)
            .await
        {
            Ok(()) | Err(Error::GroupExists { .. }) => {}
            Err(err) => panic!("creating the workers' group: {err}"),
        }
        let codec = WireCodec::with_max_bytes(usize::MAX);
        let mut taken = 0;
        while taken < n {
            let read = ReadGroup::new(tasks.as_str(), group.as_str(), "worker-1")
                .count(n - taken)
                .block(POLL);
            for entry in self.broker.read_group(&read).await.expect("read tasks") {
                let task: Task =
                    task_from_fields(&entry.fields.expect("a task entry")).expect("a task");
                let fields = codec.encode_result(&respond(&task)).expect("encodable");
                self.broker
                    .xadd(NewEntry::new(self.results(), fields))
                    .await
                    .expect("append a result");
                self.broker
                    .ack(&tasks, &group, &[entry.id])
                    .await
                    .expect("ack");
                taken += 1;
            }
        }
    }

    /// Pending results of `supervisor`'s group.
    async fn pending(&self, supervisor: &Sup) -> u64 {
        self.broker
            .pending_summary(&self.results(), supervisor.group())
            .await
            .expect("pending")
            .count
    }
}

fn tasks(prefix: &str, n: usize) -> Vec<Task<Payload>> {
    (0..n)
        .map(|i| {
            Task::new("research", "analyze", Payload::new())
                .task_id(format!("{prefix}-{i}"))
                .build()
                .expect("valid task")
        })
        .collect()
}

fn echo(task: &Task) -> TaskResult {
    TaskResult::success(task, task.payload.clone())
}

crewq_tests::on_both_backends!(
    Env:
    undecodable_result_stays_pending_until_a_codec_reads_it,
    a_workflow_nobody_gathers_expires,
    forget_drops_a_workflow_and_acknowledges_what_it_read,
    results_are_trimmed_only_below_what_every_supervisor_gathered,
);

async fn undecodable_result_stays_pending_until_a_codec_reads_it(env: Env) {
    let supervisor = env.supervisor("sup", env.options());
    let fan_out = supervisor
        .fan_out("wf-1", tasks("t", 2))
        .await
        .expect("fan out");
    // `t-0`'s output is over the default 512 KiB the supervisor decodes.
    env.answer(2, |task| {
        if task.task_id == "t-0" {
            let big = "x".repeat(WireCodec::DEFAULT_MAX_BYTES + 1);
            TaskResult::success(task, json!({"text": big}))
        } else {
            echo(task)
        }
    })
    .await;
    let gathered = supervisor
        .gather(&fan_out.workflow, SHORT)
        .await
        .expect("gather");
    assert_eq!(gathered.missing, ["t-0"]);
    assert_eq!(gathered.results.len(), 1);
    // Not acknowledged, not dropped: still pending in the group, counted once
    // however often it is read.
    assert_eq!(env.pending(&supervisor).await, 1);
    let again = supervisor
        .gather(&fan_out.workflow, SHORT)
        .await
        .expect("gather");
    assert_eq!(again.missing, ["t-0", "t-1"]);
    assert_eq!(supervisor.undecodable_results(), 1);
    drop(supervisor);

    // Restarted with a codec that reads it, the supervisor gathers it.
    let bigger = env
        .options()
        .codec(WireCodec::with_max_bytes(4 * WireCodec::DEFAULT_MAX_BYTES));
    let restarted = env.supervisor("sup", bigger);
    let workflow = Workflow::new("wf-1").expect(research(), "t-0");
    let gathered = restarted.gather(&workflow, ENOUGH).await.expect("gather");
    assert!(gathered.missing.is_empty());
    let output = gathered.results["t-0"].output.as_ref().expect("an output");
    assert_eq!(
        output["text"].as_str().map(str::len),
        Some(WireCodec::DEFAULT_MAX_BYTES + 1)
    );
    assert_eq!(env.pending(&restarted).await, 0);
}

async fn a_workflow_nobody_gathers_expires(env: Env) {
    let expiry = Duration::from_millis(400);
    let supervisor = env.supervisor("sup", env.options().workflow_expiry(expiry));
    let first = supervisor
        .fan_out("wf-1", tasks("a", 2))
        .await
        .expect("fan out");
    assert_eq!(supervisor.workflows(), 1);
    tokio::time::sleep(expiry / 2).await;
    supervisor
        .fan_out("wf-2", tasks("b", 1))
        .await
        .expect("fan out");
    assert_eq!(supervisor.workflows(), 2, "not expired yet");

    tokio::time::sleep(expiry * 2).await;
    env.answer(3, echo).await;
    supervisor
        .fan_out("wf-3", tasks("c", 1))
        .await
        .expect("fan out");
    assert_eq!(supervisor.workflows(), 1, "wf-1 and wf-2 expired");

    // Nothing of theirs was read: gathering wf-1 again still gets it all.
    let gathered = supervisor
        .gather(&first.workflow, ENOUGH)
        .await
        .expect("gather");
    assert!(gathered.missing.is_empty(), "{:?}", gathered.missing);
}

async fn forget_drops_a_workflow_and_acknowledges_what_it_read(env: Env) {
    let supervisor = env.supervisor("sup", env.options());
    supervisor
        .fan_out("wf-1", tasks("a", 2))
        .await
        .expect("fan out");
    let second = supervisor
        .fan_out("wf-2", tasks("b", 1))
        .await
        .expect("fan out");
    env.answer(3, echo).await;
    // Gathering wf-2 reads wf-1's results too and holds them for it.
    let gathered = supervisor
        .gather(&second.workflow, ENOUGH)
        .await
        .expect("gather");
    assert!(gathered.missing.is_empty());
    assert_eq!(env.pending(&supervisor).await, 2, "held for wf-1");
    assert_eq!(supervisor.workflows(), 1);

    assert!(supervisor.forget("wf-1").await.expect("forget"));
    assert_eq!(supervisor.workflows(), 0);
    assert_eq!(
        env.pending(&supervisor).await,
        0,
        "what it read is acknowledged"
    );
    assert!(!supervisor.forget("wf-1").await.expect("forget again"));
    assert!(!supervisor.forget("never").await.expect("unknown"));

    // A workflow being gathered cannot be forgotten under its gather.
    let third = supervisor
        .fan_out("wf-3", tasks("c", 1))
        .await
        .expect("fan out");
    let gathering = {
        let supervisor = supervisor.clone();
        let workflow = third.workflow.clone();
        tokio::spawn(async move { supervisor.gather(&workflow, ENOUGH).await })
    };
    tokio::time::sleep(POLL).await;
    assert!(matches!(
        supervisor.forget("wf-3").await,
        Err(SupervisorError::AlreadyGathering(_))
    ));
    env.answer(1, echo).await;
    let done = gathering.await.expect("joined").expect("gathered");
    assert!(done.missing.is_empty());
}

async fn results_are_trimmed_only_below_what_every_supervisor_gathered(env: Env) {
    const N: usize = 100;
    let often = Retention::Acknowledged(Acknowledged::default().every_appends(10));
    let supervisor = env.supervisor("sup", env.options().result_retention(often));
    let first = supervisor
        .fan_out("wf-1", tasks("a", N))
        .await
        .expect("fan out");
    env.answer(N, echo).await;
    assert!(
        supervisor
            .gather(&first.workflow, ENOUGH)
            .await
            .expect("gather")
            .missing
            .is_empty()
    );

    // Another supervisor's group, created now, has gathered nothing.
    env.broker
        .group_create(
            &env.results(),
            "supervisor:lagging",
            GroupStart::Latest,
            true,
        )
        .await
        .expect("group");
    let second = supervisor
        .fan_out("wf-2", tasks("b", N))
        .await
        .expect("fan out");
    env.answer(N, echo).await;
    assert!(
        supervisor
            .gather(&second.workflow, ENOUGH)
            .await
            .expect("gather")
            .missing
            .is_empty()
    );
    let results = env.broker.xlen(&env.results()).await.expect("xlen");
    // wf-1's results go (gathered, before the lagging group began); wf-2's
    // all stay, for the lagging group.
    if env.clock.is_some() {
        assert_eq!(results, N as u64);
    } else {
        assert!(
            (N as u64..2 * N as u64).contains(&results),
            "kept {results}"
        );
    }
    let read = ReadGroup::new(env.results(), "supervisor:lagging", "lagging").count(2 * N);
    let lagging = env.broker.read_group(&read).await.expect("read");
    assert_eq!(lagging.len(), N, "the lagging supervisor gets every result");
}
