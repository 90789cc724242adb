//! Fanning work out and gathering results: the supervisor of a workflow.
//!
//! A [`Supervisor`] dispatches a batch of tasks under one trace id
//! ([`Supervisor::fan_out`]), gathers their results from the results
//! stream(s) ([`Supervisor::gather`]), and can then dispatch the tasks that
//! depend on them ([`Supervisor::run_pipeline`]), as the first seed's
//! `SupervisorAgent` does, without its flaws: the seed re-reads the whole
//! results stream from `0-0` on every poll and forgets everything on a
//! restart.
//!
//! # Reading results
//!
//! Each supervisor reads the results streams in a consumer group of its own,
//! `supervisor:<name>`, as consumer `<name>`: every supervisor sees every
//! result, and the group remembers how far it has read, so nothing is read
//! twice and a restart continues where the last run stopped.
//!
//! The group is created at `$` by [`Supervisor::fan_out`], before it
//! dispatches anything: none of its results can precede the group then, and
//! a new supervisor does not read (and skip) the whole history of a results
//! stream other supervisors share. A gather that finds the group missing
//! creates it at `0` instead, since its results may already be there.
//!
//! A result is acknowledged only once its gather has recorded it, when the
//! gather returns ([`Supervisor::run_pipeline`]: once the downstream tasks
//! are dispatched). Results of tasks no workflow of this supervisor awaits
//! are acknowledged at once.
//!
//! # Restarts
//!
//! A supervisor's name is its durable identity: run one instance per name.
//! One restarted under the same name first reads its group's pending entries
//! (results its last run read but had not acknowledged), then new ones. To
//! resume a workflow, fan out the same tasks again under the same trace id
//! (dispatch is idempotent by task id, so nothing is dispatched twice) or
//! gather a [`Workflow`] rebuilt from the kept trace id and task ids. Pending
//! results that no workflow claims within
//! [`SupervisorOptions::unclaimed_grace`] are acknowledged and dropped.
//!
//! # Undecodable results
//!
//! A result this supervisor's codec ([`SupervisorOptions::codec`]) cannot
//! decode (over its size limit, or not a result at all) is never
//! acknowledged: it stays in the group's pending list, logged once (at
//! `warn`) and counted ([`Supervisor::undecodable_results`]). Nothing is
//! dropped that was not recorded: a supervisor restarted with a codec that
//! reads it (a larger limit) gathers it from its pending list. The price is
//! that it holds the results stream's retention at its id until then (the
//! pending list, `XPENDING`, shows it); acknowledge it by hand to give it up.
//!
//! # Memory
//!
//! A workflow stays registered from its fan-out until a gather of it
//! finishes. One never gathered is forgotten after
//! [`SupervisorOptions::workflow_expiry`] (1 h by default), or at once with
//! [`Supervisor::forget`].
//!
//! # Retention
//!
//! After acknowledging results, a supervisor trims the results streams with
//! [`SupervisorOptions::result_retention`]: by default only below what every
//! supervisor's group has gathered. A supervisor retired for good leaves its
//! group behind, which holds every later result: destroy its group
//! (`XGROUP DESTROY <results stream> supervisor:<name>`).
//!
//! # Concurrency
//!
//! Several workflows may run at once on one supervisor (clones share it).
//! One gather at a time reads the streams, and routes each result to the
//! workflow that registered its task id (at fan-out or gather), so no gather
//! takes or acknowledges another's results. A task id belongs to one workflow
//! at a time; one workflow is gathered by one gather at a time.

mod collector;
mod error;
mod expiry;
mod options;
mod reader;
mod registry;
mod workflow;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::Instrument;

pub use error::SupervisorError;
pub use options::SupervisorOptions;
pub use workflow::{FanOut, Gathered, Pipeline, Workflow, new_trace_id};

use crate::producer::{Dispatched, Producer};
use crate::retention::Trimmer;
use crate::{AgentType, BoxError, Broker, GroupStart, InvalidName, Task};
use reader::ReaderState;
use registry::Registry;

/// A supervisor's group on a results stream is this prefix and its name.
pub const GROUP_PREFIX: &str = "supervisor:";

/// Fans tasks out under a trace id, gathers their results, dispatches what
/// follows. See the [module documentation](self) for how results are read,
/// and [`Supervisor::run_pipeline`] for an example.
///
/// Cloning is cheap and shares the supervisor (its reader and its
/// workflows).
pub struct Supervisor<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    producer: Producer<B>,
    name: String,
    group: String,
    options: SupervisorOptions,
    registry: Mutex<Registry>,
    /// Results streams on which the group is known to exist.
    known_groups: Mutex<BTreeSet<String>>,
    /// Results streams whose group this supervisor found gone (deleted by
    /// hand, or forgotten by a broker restored from an older state): made
    /// again at the start, never at `$`, which would skip the results
    /// written since it vanished.
    vanished_groups: Mutex<BTreeSet<String>>,
    /// The reader role: one gather at a time reads, for all of them.
    reader: tokio::sync::Mutex<ReaderState>,
    /// Trims the results streams after acknowledgements.
    trimmer: Trimmer,
}

impl<B> Clone for Supervisor<B> {
    fn clone(&self) -> Self {
        Supervisor {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> fmt::Debug for Supervisor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.inner.name)
            .field("group", &self.inner.group)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<B: Broker> Supervisor<B> {
    /// A supervisor named `name` (its durable identity, `supervisor-1` say)
    /// dispatching through `producer`, with default options.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] for an empty name or one with whitespace or a control
    /// character.
    pub fn new(name: impl Into<String>, producer: Producer<B>) -> Result<Self, InvalidName> {
        Self::with_options(name, producer, SupervisorOptions::default())
    }

    /// A supervisor with `options`.
    ///
    /// # Errors
    ///
    /// As [`Supervisor::new`].
    pub fn with_options(
        name: impl Into<String>,
        producer: Producer<B>,
        options: SupervisorOptions,
    ) -> Result<Self, InvalidName> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("is empty")
        } else if name.chars().any(char::is_whitespace) {
            Some("contains whitespace")
        } else if name.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(InvalidName {
                what: "supervisor name",
                name,
                reason,
            });
        }
        Ok(Supervisor {
            inner: Arc::new(Inner {
                group: format!("{GROUP_PREFIX}{name}"),
                name,
                producer,
                trimmer: Trimmer::new(options.result_retention),
                options,
                registry: Mutex::default(),
                known_groups: Mutex::default(),
                vanished_groups: Mutex::default(),
                reader: tokio::sync::Mutex::default(),
            }),
        })
    }

    /// Its name, also its consumer name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its consumer group on the results streams: `supervisor:<name>`.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Its options.
    pub fn options(&self) -> &SupervisorOptions {
        &self.inner.options
    }

    /// The producer it dispatches with (and whose broker and keyspace it
    /// reads).
    pub fn producer(&self) -> &Producer<B> {
        &self.inner.producer
    }

    /// Stamps `trace_id` on every task (replacing any other) and dispatches
    /// them in one batch, returning the [`Workflow`] to gather.
    ///
    /// Before dispatching, it creates this supervisor's group on the results
    /// streams (at `$`; see the [module documentation](self)) and registers
    /// the task ids, so results that come back before the gather starts are
    /// kept for it. Fanning out the same tasks again is safe: dispatch is
    /// idempotent by task id ([`Dispatched::duplicate`]).
    ///
    /// # Errors
    ///
    /// [`SupervisorError::InvalidTask`] for an agent type that cannot name a
    /// stream (nothing dispatched), [`SupervisorError::TaskInOtherWorkflow`],
    /// [`SupervisorError::Dispatch`] for the first task that failed (the
    /// others may be dispatched: retry the whole fan-out),
    /// [`SupervisorError::Broker`] when the group cannot be created.
    pub async fn fan_out<P: Serialize + Sync>(
        &self,
        trace_id: &str,
        mut tasks: Vec<Task<P>>,
    ) -> Result<FanOut, SupervisorError> {
        let span = tracing::info_span!("supervisor.fan_out", trace_id, supervisor = %self.inner.name, tasks = tasks.len());
        async move {
            let mut workflow = Workflow::new(trace_id);
            for task in &mut tasks {
                task.trace_id = Some(trace_id.to_owned());
                let agent = AgentType::new(task.agent_type.as_str())?;
                workflow = workflow.expect(agent, task.task_id.as_str());
            }
            // At `$`, before anything is dispatched: no result of these
            // tasks can be older than the group, and a new supervisor skips
            // the history other supervisors left in a shared results stream.
            // An existing group keeps its position (what a restart needs).
            for stream in workflow.results_streams(self.inner.producer.keyspace()) {
                self.inner.ensure_group(&stream, GroupStart::Latest).await?;
            }
            self.inner.expire_workflows().await;
            registry::lock(&self.inner.registry)
                .register(&workflow, tokio::time::Instant::now())?;
            // The registration stays if dispatch fails: results of the tasks
            // that made it are kept for a retried fan-out or a gather.
            let dispatched = self.dispatch_all(&tasks).await?;
            let duplicates = dispatched.iter().filter(|d| d.duplicate).count();
            tracing::debug!(dispatched = dispatched.len(), duplicates, "fanned out");
            Ok(FanOut {
                workflow,
                dispatched,
            })
        }
        .instrument(span)
        .await
    }

    /// Gathers the results of `workflow`'s tasks, waiting up to `timeout`
    /// (tokio time) for the last one; tasks still without a result then are
    /// [`Gathered::missing`].
    ///
    /// It first takes results this supervisor has already read for the
    /// workflow (including, after a restart, those read and not acknowledged
    /// before it), then reads new ones. The first result of a task wins;
    /// further ones are counted in [`Gathered::duplicates`]. Everything
    /// recorded is acknowledged just before it returns, so a gather stopped
    /// earlier (an error, its future dropped, a crash) loses nothing: the
    /// next gather of the workflow gets it.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::AlreadyGathering`],
    /// [`SupervisorError::TaskInOtherWorkflow`], or
    /// [`SupervisorError::Broker`] for a broker failure that is not
    /// transient (transient ones are retried until the timeout).
    pub async fn gather(
        &self,
        workflow: &Workflow,
        timeout: Duration,
    ) -> Result<Gathered, SupervisorError> {
        async {
            let collector = self.collect(workflow, timeout).await?;
            let gathered = collector.gathered();
            self.commit(collector).await;
            Ok(gathered)
        }
        .instrument(self.gather_span(workflow))
        .await
    }

    /// Fans out `stage`, gathers its results for
    /// [`SupervisorOptions::workflow_timeout`], then dispatches the tasks
    /// `downstream` builds from them, under the same trace id.
    ///
    /// `downstream` sees the results even when some are missing or failed;
    /// it returns no task to dispatch nothing. The stage's results are
    /// acknowledged only after the downstream tasks are dispatched, so a
    /// supervisor that crashes in between gathers them again when it
    /// resumes: give downstream tasks ids derived from the trace id so that
    /// their second dispatch is recognised as a duplicate.
    ///
    /// # Errors
    ///
    /// As [`Supervisor::fan_out`] and [`Supervisor::gather`], and
    /// [`SupervisorError::Downstream`] when `downstream` fails.
    ///
    /// # Example
    ///
    /// The seed's research workflow, with a stand-in for the research agents:
    ///
    /// ```
    /// # use crewq_core::{Broker, Fields, GroupStart, ReadGroup, Task, TaskResult};
    /// # use crewq_memory::MemoryBroker;
    /// # /// Answers `n` research tasks with their payload.
    /// # async fn research_agents(broker: &MemoryBroker, n: usize) -> crewq_core::Result<()> {
    /// #     let (tasks, group) = ("agent:tasks:research", "research-workers");
    /// #     let _ = broker.group_create(tasks, group, GroupStart::BEGINNING, true).await;
    /// #     let mut answered = 0;
    /// #     while answered < n {
    /// #         let read = ReadGroup::new(tasks, group, "w1").block(std::time::Duration::from_millis(50));
    /// #         for entry in broker.read_group(&read).await? {
    /// #             let task: Task = Task::from_fields(entry.fields.as_ref().unwrap_or(&Fields::new()))
    /// #                 .map_err(|e| crewq_core::Error::InvalidArgument(e.to_string()))?;
    /// #             let result = TaskResult::success(&task, task.payload.clone()).to_fields()
    /// #                 .map_err(|e| crewq_core::Error::InvalidArgument(e.to_string()))?;
    /// #             broker.xadd(crewq_core::NewEntry::new("agent:results", result)).await?;
    /// #             broker.ack(tasks, group, &[entry.id]).await?;
    /// #             answered += 1;
    /// #         }
    /// #     }
    /// #     Ok(())
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use crewq_core::producer::Producer;
    /// use crewq_core::supervisor::{Supervisor, new_trace_id};
    /// use serde_json::json;
    ///
    /// let broker = MemoryBroker::new();
    /// let supervisor = Supervisor::new("supervisor-1", Producer::new(broker.clone()))?;
    /// let trace_id = new_trace_id();
    /// let research = vec![
    ///     Task::new("research", "analyze_codebase", json!({"depth": "security"})).build()?,
    ///     Task::new("research", "analyze_codebase", json!({"depth": "performance"})).build()?,
    ///     Task::new("research", "search_docs", json!({"query": "architecture"})).build()?,
    /// ];
    /// let report = |gathered: &crewq_core::supervisor::Gathered| {
    ///     if !gathered.all_succeeded() {
    ///         return Ok(Vec::new());
    ///     }
    ///     let findings: Vec<_> = gathered.results.values().map(|r| r.output.clone()).collect();
    ///     Task::new("report", "generate_summary", json!({"findings": findings}))
    ///         .task_id(format!("{}-report", gathered.trace_id))
    ///         .build()
    ///         .map(|task| vec![task])
    /// };
    ///
    /// let (pipeline, agents) = tokio::join!(
    ///     supervisor.run_pipeline(&trace_id, research, report),
    ///     research_agents(&broker, 3),
    /// );
    /// agents?;
    /// let pipeline = pipeline?;
    /// assert_eq!(pipeline.gathered.results.len(), 3);
    /// assert_eq!(pipeline.downstream[0].stream, "agent:tasks:report");
    /// # Ok(()) }
    /// ```
    pub async fn run_pipeline<P, Q, F, E>(
        &self,
        trace_id: &str,
        stage: Vec<Task<P>>,
        downstream: F,
    ) -> Result<Pipeline, SupervisorError>
    where
        P: Serialize + Sync,
        Q: Serialize + Sync,
        F: FnOnce(&Gathered) -> Result<Vec<Task<Q>>, E>,
        E: Into<BoxError>,
    {
        let span =
            tracing::info_span!("supervisor.run_pipeline", trace_id, supervisor = %self.inner.name);
        async move {
            let workflow = self.fan_out(trace_id, stage).await?.workflow;
            let timeout = self.inner.options.workflow_timeout;
            let collector = self
                .collect(&workflow, timeout)
                .instrument(self.gather_span(&workflow))
                .await?;
            let gathered = collector.gathered();
            let mut next =
                downstream(&gathered).map_err(|err| SupervisorError::Downstream(err.into()))?;
            for task in &mut next {
                task.trace_id = Some(trace_id.to_owned());
            }
            let dispatched = self.dispatch_all(&next).await?;
            tracing::debug!(
                downstream = dispatched.len(),
                "dispatched the downstream tasks"
            );
            self.commit(collector).await;
            Ok(Pipeline {
                gathered,
                downstream: dispatched,
            })
        }
        .instrument(span)
        .await
    }

    fn gather_span(&self, workflow: &Workflow) -> tracing::Span {
        tracing::info_span!("supervisor.gather", trace_id = workflow.trace_id(), supervisor = %self.inner.name, tasks = workflow.len())
    }

    async fn dispatch_all<P: Serialize + Sync>(
        &self,
        tasks: &[Task<P>],
    ) -> Result<Vec<Dispatched>, SupervisorError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self
            .inner
            .producer
            .dispatch_batch(tasks)
            .await
            .map_err(|source| SupervisorError::Dispatch {
                task_id: None,
                source,
            })?;
        tasks
            .iter()
            .zip(replies)
            .map(|(task, reply)| {
                reply.map_err(|source| SupervisorError::Dispatch {
                    task_id: Some(task.task_id.clone()),
                    source,
                })
            })
            .collect()
    }
}
