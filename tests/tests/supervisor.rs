//! The supervisor on both backends: fan-out under a trace id, gathering
//! from the results stream in its own consumer group, time-outs, restarts,
//! duplicates and pipelines.
//!
//! Each case is written once and run twice (`<case>::memory` on a
//! `MemoryBroker` with tokio's paused clock, `<case>::redis` on a real Redis
//! under a key prefix of its own). No worker takes part: the agents are
//! stood in for by [`Env::answer`], which reads a task stream in the agent
//! type's group and appends results as the seed's workers do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crewq_core::producer::{Producer, Retention};
use crewq_core::supervisor::{Gathered, Supervisor, SupervisorOptions};
use crewq_core::{
    AgentType, Broker, Error, GroupInfo, GroupStart, Keyspace, NewEntry, ReadGroup, StreamId, Task,
    TaskResult, TaskStatus, result_from_fields, task_from_fields,
};
use crewq_tests::backends::Backend;
use crewq_tests::redis_server::TestRedis;
use tokio::time::Instant;

/// A task payload the seed would accept (a JSON object).
type Payload = BTreeMap<String, String>;

/// Short enough for a real Redis, long enough that nothing is late.
const POLL: Duration = Duration::from_millis(50);
const ENOUGH: Duration = Duration::from_secs(10);
/// A gather that must give up: the time-out case's.
const SHORT: Duration = Duration::from_millis(300);

type Sup = Supervisor<Arc<dyn Broker>>;

/// One backend, and the keys a case uses on it.
struct Env {
    broker: Arc<dyn Broker>,
    keyspace: Keyspace,
    prefix: String,
    /// Keeps the test's Redis running for the case.
    _server: Option<TestRedis>,
}

impl From<Backend> for Env {
    fn from(backend: Backend) -> Env {
        Env {
            broker: backend.broker,
            keyspace: backend.keyspace,
            prefix: backend.prefix,
            _server: backend.server,
        }
    }
}

impl Env {
    /// The same backend and prefix in the Redis Cluster layout.
    fn cluster(mut self) -> Env {
        self.keyspace = Keyspace::cluster()
            .with_prefix(&self.prefix)
            .expect("valid");
        self
    }

    fn supervisor(&self, name: &str) -> Sup {
        let producer = Producer::new(Arc::clone(&self.broker)).with_keyspace(self.keyspace.clone());
        // No trimming of the results streams: these cases count what the
        // streams hold; retention has its own cases (supervisor_retention.rs).
        let options = SupervisorOptions::default()
            .poll(POLL)
            .workflow_timeout(ENOUGH)
            .result_retention(Retention::None);
        Supervisor::with_options(name, producer, options).expect("valid name")
    }

    fn results(&self, agent: &str) -> String {
        self.keyspace.results(&agent_type(agent))
    }

    /// Stands in for `agent`'s workers: takes `n` tasks from its stream in
    /// its group, appends the results `respond` gives for each, acknowledges
    /// the task. Returns the tasks, in the order taken.
    async fn answer(
        &self,
        agent: &str,
        n: usize,
        respond: impl Fn(&Task) -> Vec<TaskResult>,
    ) -> Vec<Task> {
        let agent = agent_type(agent);
        let (tasks, group) = (self.keyspace.tasks(&agent), self.keyspace.group(&agent));
        match self
            .broker
            .group_create(&tasks, &group, GroupStart::BEGINNING, true)
            .await
        {
            Ok(()) | Err(Error::GroupExists { .. }) => {}
            Err(err) => panic!("creating the workers' group: {err}"),
        }
        let mut taken = Vec::new();
        while taken.len() < n {
            let read = ReadGroup::new(tasks.as_str(), group.as_str(), "worker-1")
                .count(n - taken.len())
                .block(POLL);
            for entry in self.broker.read_group(&read).await.expect("read tasks") {
                let fields = entry.fields.expect("a task entry");
                let task: Task = task_from_fields(&fields).expect("a task");
                for result in respond(&task) {
                    let fields = result.to_fields().expect("encodable");
                    let stream = self.keyspace.results(&agent);
                    self.broker
                        .xadd(NewEntry::new(stream, fields))
                        .await
                        .expect("append a result");
                }
                self.broker
                    .ack(&tasks, &group, &[entry.id])
                    .await
                    .expect("ack");
                taken.push(task);
            }
        }
        taken
    }

    /// The supervisor's group on `agent`'s results stream.
    async fn group_info(&self, agent: &str, supervisor: &Sup) -> GroupInfo {
        let groups = self
            .broker
            .info_groups(&self.results(agent))
            .await
            .expect("info groups");
        groups
            .into_iter()
            .find(|group| group.name == supervisor.group())
            .expect("the supervisor's group")
    }
}

fn agent_type(name: &str) -> AgentType {
    AgentType::new(name).expect("valid agent type")
}

/// `n` tasks for `agent`, with distinct payloads.
fn tasks(agent: &str, n: usize) -> Vec<Task<Payload>> {
    (0..n)
        .map(|i| {
            let payload = Payload::from([("n".to_owned(), i.to_string())]);
            Task::new(agent, "analyze", payload)
                .build()
                .expect("valid task")
        })
        .collect()
}

/// A worker's success: the output is the task's payload.
fn echo(task: &Task) -> Vec<TaskResult> {
    vec![TaskResult::success(task, task.payload.clone())]
}

fn ids<P>(tasks: &[Task<P>]) -> Vec<String> {
    let mut ids: Vec<String> = tasks.iter().map(|task| task.task_id.clone()).collect();
    ids.sort();
    ids
}

fn gathered_ids(gathered: &Gathered) -> Vec<String> {
    gathered.results.keys().cloned().collect()
}

async fn fan_out_stamps_the_trace_id_and_dispatches_every_task(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let mut batch = tasks("research", 3);
    batch[0].trace_id = Some("some-other-trace".to_owned());

    let fan_out = supervisor
        .fan_out("wf-1", batch.clone())
        .await
        .expect("fan out");

    assert_eq!(fan_out.workflow.trace_id(), "wf-1");
    assert_eq!(fan_out.workflow.task_ids().collect::<Vec<_>>(), ids(&batch));
    let dispatched: Vec<_> = fan_out.dispatched.iter().map(|d| &d.task_id).collect();
    assert_eq!(
        dispatched,
        batch.iter().map(|t| &t.task_id).collect::<Vec<_>>()
    );
    assert!(fan_out.dispatched.iter().all(|d| !d.duplicate));

    let stream = env.keyspace.tasks(&agent_type("research"));
    let entries = env
        .broker
        .xrange(&stream, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), 3);
    for entry in &entries {
        let task: Task<Payload> = task_from_fields(&entry.fields).expect("a task");
        assert_eq!(task.trace_id.as_deref(), Some("wf-1"));
    }
    // Its group on the results stream exists before any result does.
    let group = env.group_info("research", &supervisor).await;
    assert_eq!(
        (group.pending, group.last_delivered_id),
        (0, StreamId::ZERO)
    );

    // Fanning out again (a resumed workflow) dispatches nothing new.
    let again = supervisor.fan_out("wf-1", batch).await.expect("fan out");
    assert!(again.dispatched.iter().all(|d| d.duplicate));
    assert_eq!(again.workflow, fan_out.workflow);
    assert_eq!(env.broker.xlen(&stream).await.expect("xlen"), 3);
}

async fn gather_collects_its_trace_and_skips_other_supervisors_results(env: Env) {
    let (mine, theirs) = (env.supervisor("mine"), env.supervisor("theirs"));
    let a = mine.fan_out("wf-a", tasks("research", 2)).await.expect("a");
    let b = theirs
        .fan_out("wf-b", tasks("research", 2))
        .await
        .expect("b");
    env.answer("research", 4, echo).await;

    let gathered = mine.gather(&a.workflow, ENOUGH).await.expect("gather a");
    assert_eq!(gathered.trace_id, "wf-a");
    assert_eq!(
        gathered_ids(&gathered),
        a.workflow.task_ids().collect::<Vec<_>>()
    );
    assert!(gathered.all_succeeded());
    assert_eq!(gathered.duplicates, 0);
    // The other workflow's results were acknowledged in this group only.
    let group = env.group_info("research", &mine).await;
    assert_eq!((group.pending, group.lag), (0, Some(0)));

    let gathered = theirs.gather(&b.workflow, ENOUGH).await.expect("gather b");
    assert_eq!(
        gathered_ids(&gathered),
        b.workflow.task_ids().collect::<Vec<_>>()
    );
}

async fn workflows_of_one_supervisor_keep_their_own_results(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let a = supervisor
        .fan_out("wf-a", tasks("research", 2))
        .await
        .expect("a");
    let b = supervisor
        .fan_out("wf-b", tasks("research", 3))
        .await
        .expect("b");

    // Gathered one after the other: gathering `a` reads `b`'s results too,
    // and keeps them for `b`.
    env.answer("research", 5, echo).await;
    let gathered_a = supervisor.gather(&a.workflow, ENOUGH).await.expect("a");
    let gathered_b = supervisor.gather(&b.workflow, ENOUGH).await.expect("b");
    assert!(gathered_a.is_complete() && gathered_b.is_complete());
    assert_eq!(
        gathered_ids(&gathered_b),
        b.workflow.task_ids().collect::<Vec<_>>()
    );

    // Gathered at once, by clones, while the results come in.
    let c = supervisor
        .fan_out("wf-c", tasks("research", 2))
        .await
        .expect("c");
    let d = supervisor
        .fan_out("wf-d", tasks("research", 2))
        .await
        .expect("d");
    let other = supervisor.clone();
    let (gathered_c, gathered_d, _) = tokio::join!(
        supervisor.gather(&c.workflow, ENOUGH),
        other.gather(&d.workflow, ENOUGH),
        env.answer("research", 4, echo),
    );
    let (gathered_c, gathered_d) = (gathered_c.expect("c"), gathered_d.expect("d"));
    assert_eq!(
        gathered_ids(&gathered_c),
        c.workflow.task_ids().collect::<Vec<_>>()
    );
    assert_eq!(
        gathered_ids(&gathered_d),
        d.workflow.task_ids().collect::<Vec<_>>()
    );
    let group = env.group_info("research", &supervisor).await;
    assert_eq!((group.pending, group.entries_read), (0, Some(9)));

    // One workflow is gathered by one gather at a time.
    let e = supervisor
        .fan_out("wf-e", tasks("research", 1))
        .await
        .expect("e");
    let (first, second) = tokio::join!(supervisor.gather(&e.workflow, SHORT), async {
        tokio::task::yield_now().await;
        supervisor.gather(&e.workflow, SHORT).await
    });
    assert!(first.is_ok());
    assert!(matches!(
        second,
        Err(crewq_core::supervisor::SupervisorError::AlreadyGathering(trace)) if trace == "wf-e"
    ));
}

async fn gather_never_rereads_the_results_stream(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let results = env.results("research");

    let a = supervisor
        .fan_out("wf-a", tasks("research", 2))
        .await
        .expect("a");
    env.answer("research", 2, echo).await;
    supervisor.gather(&a.workflow, ENOUGH).await.expect("a");
    let group = env.group_info("research", &supervisor).await;
    assert_eq!((group.pending, group.entries_read), (0, Some(2)));

    let b = supervisor
        .fan_out("wf-b", tasks("research", 3))
        .await
        .expect("b");
    env.answer("research", 3, echo).await;
    let gathered = supervisor.gather(&b.workflow, ENOUGH).await.expect("b");
    assert_eq!(
        gathered_ids(&gathered),
        b.workflow.task_ids().collect::<Vec<_>>()
    );

    // Five results in the stream, five entries ever delivered to the group:
    // the second gather started after the first one's results.
    let stream = env
        .broker
        .xrange(&results, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(stream.len(), 5);
    let group = env.group_info("research", &supervisor).await;
    assert_eq!(
        (group.pending, group.entries_read, group.lag),
        (0, Some(5), Some(0))
    );
    assert_eq!(Some(group.last_delivered_id), stream.last().map(|e| e.id));
    let groups = env.broker.info_groups(&results).await.expect("groups");
    assert_eq!(groups.len(), 1, "one group per supervisor, made once");
}

async fn gather_times_out_reporting_the_missing_tasks(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let fan_out = supervisor
        .fan_out("wf-1", tasks("research", 3))
        .await
        .expect("fan out");
    let answered = env.answer("research", 2, echo).await;
    let unanswered = fan_out.dispatched[2].task_id.clone();

    let start = Instant::now();
    let gathered = supervisor
        .gather(&fan_out.workflow, SHORT)
        .await
        .expect("gather");
    assert!(
        start.elapsed() >= SHORT,
        "gave up early: {:?}",
        start.elapsed()
    );

    assert_eq!(gathered.missing, vec![unanswered]);
    assert!(!gathered.is_complete());
    assert_eq!(gathered_ids(&gathered), ids(&answered));
    // What it did gather is acknowledged.
    assert_eq!(env.group_info("research", &supervisor).await.pending, 0);
}

async fn restarted_supervisor_resumes_and_gets_every_result_once(env: Env) {
    let batch = tasks("research", 3);
    let first = env.supervisor("supervisor-1");
    let fan_out = first.fan_out("wf-1", batch.clone()).await.expect("fan out");
    env.answer("research", 2, echo).await;

    // It reads two results, waits for the third, and dies.
    let cut = tokio::time::timeout(SHORT, first.gather(&fan_out.workflow, ENOUGH)).await;
    assert!(cut.is_err(), "the gather should still be waiting");
    drop(first);
    let group = env
        .group_info("research", &env.supervisor("supervisor-1"))
        .await;
    assert_eq!(group.pending, 2, "read, never acknowledged");

    // Restarted under the same name: it fans the same tasks out again
    // (nothing is dispatched twice) and gathers.
    let restarted = env.supervisor("supervisor-1");
    let resumed = restarted
        .fan_out("wf-1", batch)
        .await
        .expect("fan out again");
    assert!(resumed.dispatched.iter().all(|d| d.duplicate));
    env.answer("research", 1, echo).await;
    let gathered = restarted
        .gather(&resumed.workflow, ENOUGH)
        .await
        .expect("gather");

    assert!(gathered.all_succeeded());
    assert_eq!(
        gathered_ids(&gathered),
        fan_out.workflow.task_ids().collect::<Vec<_>>()
    );
    assert_eq!(gathered.duplicates, 0);
    let group = env.group_info("research", &restarted).await;
    assert_eq!((group.pending, group.entries_read), (0, Some(3)));
}

async fn duplicate_results_are_counted_and_the_first_wins(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let fan_out = supervisor
        .fan_out("wf-1", tasks("research", 2))
        .await
        .expect("fan out");
    // At-least-once delivery: each task's result arrives twice, the second
    // one different.
    env.answer("research", 2, |task| {
        vec![
            TaskResult::success(task, task.payload.clone()),
            TaskResult::failure(task, "a redelivered attempt"),
        ]
    })
    .await;

    let gathered = supervisor
        .gather(&fan_out.workflow, ENOUGH)
        .await
        .expect("gather");
    assert_eq!(gathered.results.len(), 2);
    assert!(
        gathered
            .results
            .values()
            .all(|r| r.status == TaskStatus::Success)
    );
    assert_eq!(gathered.duplicates, 2);
    let group = env.group_info("research", &supervisor).await;
    assert_eq!((group.pending, group.entries_read), (0, Some(4)));
}

async fn run_pipeline_dispatches_downstream_tasks_built_from_the_results(env: Env) {
    let supervisor = env.supervisor("supervisor-1");
    let research = tasks("research", 3);
    let payloads: Vec<Payload> = research.iter().map(|t| t.payload.clone()).collect();
    let report = |gathered: &Gathered| {
        let findings: Vec<_> = gathered
            .results
            .values()
            .filter_map(|r| r.output.clone())
            .collect();
        Task::new(
            "report",
            "generate_summary",
            BTreeMap::from([("findings", findings)]),
        )
        .task_id(format!("{}-report", gathered.trace_id))
        .build()
        .map(|task| vec![task])
    };

    let (pipeline, _) = tokio::join!(
        supervisor.run_pipeline("wf-1", research, report),
        env.answer("research", 3, echo),
    );
    let pipeline = pipeline.expect("pipeline");
    assert!(pipeline.gathered.all_succeeded());
    assert_eq!(pipeline.downstream.len(), 1);
    assert_eq!(pipeline.downstream[0].task_id, "wf-1-report");

    let stream = env.keyspace.tasks(&agent_type("report"));
    let entries = env
        .broker
        .xrange(&stream, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), 1);
    let task: Task<BTreeMap<String, Vec<Payload>>> =
        task_from_fields(&entries[0].fields).expect("the report task");
    assert_eq!(task.trace_id.as_deref(), Some("wf-1"));
    let mut findings = task.payload["findings"].clone();
    findings.sort();
    let mut expected = payloads;
    expected.sort();
    assert_eq!(findings, expected);
    assert_eq!(env.group_info("research", &supervisor).await.pending, 0);
}

async fn gather_reads_each_agent_types_results_stream_in_the_cluster_layout(env: Env) {
    let env = env.cluster();
    let supervisor = env.supervisor("supervisor-1");
    let mut batch = tasks("research", 2);
    batch.extend(tasks("review", 1));
    let fan_out = supervisor
        .fan_out("wf-1", batch.clone())
        .await
        .expect("fan out");
    assert_ne!(env.results("research"), env.results("review"));

    let (gathered, _, _) = tokio::join!(
        supervisor.gather(&fan_out.workflow, ENOUGH),
        env.answer("research", 2, echo),
        env.answer("review", 1, echo),
    );
    let gathered = gathered.expect("gather");
    assert_eq!(gathered_ids(&gathered), ids(&batch));
    for agent in ["research", "review"] {
        let results = env.results(agent);
        let last = env.broker.xrange(&results, crewq_core::ALL_IDS, None).await;
        let entry = last.expect("xrange").pop().expect("a result");
        assert!(result_from_fields(&entry.fields).is_ok());
        assert_eq!(env.group_info(agent, &supervisor).await.pending, 0);
    }
}

crewq_tests::on_both_backends!(
    Env:
    fan_out_stamps_the_trace_id_and_dispatches_every_task,
    gather_collects_its_trace_and_skips_other_supervisors_results,
    workflows_of_one_supervisor_keep_their_own_results,
    gather_never_rereads_the_results_stream,
    gather_times_out_reporting_the_missing_tasks,
    restarted_supervisor_resumes_and_gets_every_result_once,
    duplicate_results_are_counted_and_the_first_wins,
    run_pipeline_dispatches_downstream_tasks_built_from_the_results,
    gather_reads_each_agent_types_results_stream_in_the_cluster_layout,
);
