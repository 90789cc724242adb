//! The agents a simulation runs: a [`Crew`] of handlers, each wrapped so
//! that the fault plan's handler faults (errors, panics, hangs, slowness)
//! strike at the planned calls, and every call is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use crewq_core::worker::{
    Context, Handler, HandlerError, NonRetryable, SlowDown, Worker, WorkerHandle, WorkerOptions,
};
use crewq_core::{AgentType, Broker, Task};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::history::{Event, Recorder};
use crate::plan::{FaultPlan, GracefulStop, HandlerFault};

/// The prefix of every simulated task's id: task `i` is `sim-<i>`.
pub const TASK_ID_PREFIX: &str = "sim-";

/// The task id of task `index`.
pub fn task_id(index: u32) -> String {
    format!("{TASK_ID_PREFIX}{index}")
}

/// The index of a simulated task id.
pub fn task_index(task_id: &str) -> Option<u32> {
    task_id.strip_prefix(TASK_ID_PREFIX)?.parse().ok()
}

/// Whether failing task `index` fails with a [`NonRetryable`] error (the
/// odd ones) rather than an ordinary one: dead-lettered at its first
/// failure as `non_retryable`, as the checker expects.
pub fn fails_for_good(index: u32) -> bool {
    index % 2 == 1
}

/// The output field that marks the result of a run whose handler found its
/// entry taken over by another consumer ([`Context::extend_lease`] said
/// so, and the context was cancelled): its call number. The worker must not
/// record it.
pub const CANCELLED_CALL: &str = "cancelled_call";

/// Makes task `index`'s action and payload, for agent type `agent_type`.
pub type WorkloadFn = dyn Fn(u32, &str) -> (String, Value) + Send + Sync;

/// The handlers a simulation runs, by agent type, and the tasks it gives
/// them.
///
/// A crew has a handler per agent type ([`Crew::agent`]), or one for all
/// ([`Crew::standard`]). Each handler is the user's own, run by the real
/// [`Worker`]; the simulator wraps it to inject the planned handler faults
/// before it is called. Payloads come from [`Crew::workload`] (by default
/// `{"n": index}`, action `work`).
///
/// ```
/// use crewq_core::Task;
/// use crewq_core::worker::HandlerError;
/// use crewq_sim::Crew;
/// use serde::Deserialize;
/// use serde_json::{Value, json};
///
/// #[derive(Deserialize)]
/// struct Search { query: String }
///
/// let crew = Crew::new()
///     .agent("research", |task: Task<Search>| async move {
///         Ok::<Value, HandlerError>(json!({ "hits": task.payload.query.len() }))
///     })
///     .workload(|n, _agent| ("search".to_owned(), json!({ "query": format!("topic {n}") })));
/// assert!(crew.handles("research"));
/// assert!(!crew.handles("report"));
/// ```
#[derive(Clone)]
pub struct Crew {
    agents: BTreeMap<String, Arc<dyn AgentRunner>>,
    fallback: Option<Arc<dyn AgentRunner>>,
    workload: Arc<WorkloadFn>,
}

impl Default for Crew {
    fn default() -> Self {
        Crew::new()
    }
}

impl std::fmt::Debug for Crew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crew")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl Crew {
    /// A crew with no handlers yet, and the default workload.
    pub fn new() -> Self {
        Crew {
            agents: BTreeMap::new(),
            fallback: None,
            workload: Arc::new(|n, _| ("work".to_owned(), json!({ "n": n }))),
        }
    }

    /// crewq's own crew: every agent type runs [`StandardAgent`].
    pub fn standard() -> Self {
        let mut crew = Crew::new();
        crew.fallback = Some(Arc::new(Typed::new(StandardAgent)));
        crew
    }

    /// Runs `handler` for tasks of `agent_type`.
    #[must_use]
    pub fn agent<P, H>(mut self, agent_type: impl Into<String>, handler: H) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        H: Handler<P>,
    {
        self.agents
            .insert(agent_type.into(), Arc::new(Typed::new(handler)));
        self
    }

    /// Makes each task's action and payload with `workload(index,
    /// agent_type)`.
    #[must_use]
    pub fn workload(
        mut self,
        workload: impl Fn(u32, &str) -> (String, Value) + Send + Sync + 'static,
    ) -> Self {
        self.workload = Arc::new(workload);
        self
    }

    /// Whether some handler runs tasks of `agent_type`.
    pub fn handles(&self, agent_type: &str) -> bool {
        self.runner(agent_type).is_some()
    }

    pub(crate) fn runner(&self, agent_type: &str) -> Option<&Arc<dyn AgentRunner>> {
        self.agents.get(agent_type).or(self.fallback.as_ref())
    }

    pub(crate) fn task_input(&self, index: u32, agent_type: &str) -> (String, Value) {
        (self.workload)(index, agent_type)
    }
}

/// crewq's own handler: works 1 to 20 ms (by task), then answers `{"n": n}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StandardAgent;

#[async_trait]
impl Handler<Value> for StandardAgent {
    async fn handle(&self, task: Task<Value>, _: Context) -> Result<Value, HandlerError> {
        let n = task.payload.get("n").and_then(Value::as_u64).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(1 + (n * 7) % 20)).await;
        Ok(json!({ "n": n }))
    }
}

/// The payload of a panic the simulator injects; quiet under
/// [`silence_injected_panics`].
#[derive(Clone, Copy, Debug)]
pub struct InjectedPanic;

/// Keeps injected handler panics ([`InjectedPanic`]) out of the panic
/// output (the process's panic hook); every other panic is reported as
/// before. Installed once per process by the simulator's entry points.
pub fn silence_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<InjectedPanic>() {
                previous(info);
            }
        }));
    });
}

/// Spawns a worker of one agent type: the type-erased face of a handler.
pub(crate) trait AgentRunner: Send + Sync {
    fn spawn(
        &self,
        broker: Arc<dyn Broker>,
        agent: AgentType,
        consumer: String,
        options: WorkerOptions,
        context: CallContext,
    ) -> WorkerHandle;
}

struct Typed<P, H> {
    handler: Arc<H>,
    payload: PhantomData<fn() -> P>,
}

impl<P, H> Typed<P, H> {
    fn new(handler: H) -> Self {
        Typed {
            handler: Arc::new(handler),
            payload: PhantomData,
        }
    }
}

impl<P, H> AgentRunner for Typed<P, H>
where
    P: DeserializeOwned + Send + 'static,
    H: Handler<P>,
{
    fn spawn(
        &self,
        broker: Arc<dyn Broker>,
        agent: AgentType,
        consumer: String,
        options: WorkerOptions,
        context: CallContext,
    ) -> WorkerHandle {
        let handler = FaultyHandler {
            inner: Arc::clone(&self.handler),
            context,
            payload: PhantomData,
        };
        Worker::new(broker, agent, consumer, handler)
            .options(options)
            .spawn()
    }
}

/// What the whole crew's handlers share: the plan's handler faults, the
/// call counts, the switch, the history.
pub(crate) struct HandlerFaults {
    at: BTreeMap<(u32, u32), HandlerFault>,
    /// Calls that say "slow down", and the pause they ask for in ms.
    slow_downs: BTreeMap<(u32, u32), u64>,
    failing: BTreeSet<u32>,
    calls: Mutex<BTreeMap<u32, u32>>,
    on: AtomicBool,
    recorder: Recorder,
    /// Graceful stops: calls a stopping worker starts just before its stop
    /// run long.
    stops: Vec<GracefulStop>,
}

impl HandlerFaults {
    pub fn new(plan: &FaultPlan, recorder: Recorder) -> Self {
        HandlerFaults {
            at: plan
                .handler
                .iter()
                .map(|h| ((h.task, h.call), h.fault))
                .collect(),
            slow_downs: plan
                .slow_downs
                .iter()
                .map(|s| ((s.task, s.call), s.pause_ms))
                .collect(),
            failing: plan.failing.iter().copied().collect(),
            calls: Mutex::default(),
            on: AtomicBool::new(true),
            recorder,
            stops: plan.stops.clone(),
        }
    }

    /// Ends the fault phase. Failing tasks go on failing: that is their
    /// nature, not a fault.
    pub fn switch_off(&self) {
        self.on.store(false, Ordering::Relaxed);
    }

    /// Numbers a call of `task` and says what goes wrong with it.
    /// How much longer a call that worker slot `worker` starts now runs:
    /// it is about to be stopped (see [`GracefulStop`]).
    fn lengthened(&self, worker: u32) -> Option<Duration> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let now = self.recorder.now_ms();
        self.stops
            .iter()
            .find(|stop| stop.lengthens(worker, now))
            .map(|stop| Duration::from_millis(stop.long_ms))
    }

    /// Whether `task` fails for good ([`fails_for_good`]): only a failing
    /// task does.
    fn permanent(&self, task: u32) -> bool {
        self.failing.contains(&task) && fails_for_good(task)
    }

    /// Numbers a call of `task`; says what goes wrong with it: a handler
    /// fault, or a slow-down (its pause in ms), which comes first.
    fn next_call(&self, task: u32) -> (u32, Option<HandlerFault>, Option<u64>) {
        let call = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            let call = calls.entry(task).or_default();
            *call += 1;
            *call
        };
        let on = self.on.load(Ordering::Relaxed);
        if let Some(&pause_ms) = self.slow_downs.get(&(task, call)).filter(|_| on) {
            return (call, None, Some(pause_ms));
        }
        let fault = if self.failing.contains(&task) {
            Some(HandlerFault::Error)
        } else if self.on.load(Ordering::Relaxed) {
            self.at.get(&(task, call)).copied()
        } else {
            None
        };
        (call, fault, None)
    }
}

/// What one worker's handler calls need: the crew's faults, its name, and
/// its pause.
#[derive(Clone)]
pub(crate) struct CallContext {
    pub faults: Arc<HandlerFaults>,
    pub consumer: String,
    /// The worker slot.
    pub worker: u32,
    /// The end of the worker's pause, if it is paused.
    pub paused_until: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
}

impl CallContext {
    async fn wait_while_paused(&self) {
        while let Some(until) = (self.paused_until)() {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// A user's handler with the plan's faults in front of it.
struct FaultyHandler<P, H> {
    inner: Arc<H>,
    context: CallContext,
    payload: PhantomData<fn() -> P>,
}

#[async_trait]
impl<P, H> Handler<P> for FaultyHandler<P, H>
where
    P: Send + 'static,
    H: Handler<P>,
{
    async fn handle(&self, task: Task<P>, ctx: Context) -> Result<Value, HandlerError> {
        let context = &self.context;
        let Some(index) = task_index(&task.task_id) else {
            // Not a task of the simulation: the checker reports it.
            return self.inner.handle(task, ctx).await;
        };
        // A frozen worker does not start (or finish) anything.
        context.wait_while_paused().await;
        let (call, fault, slow_down) = context.faults.next_call(index);
        let agent = task.agent_type.clone();
        let recorder = &context.faults.recorder;
        recorder.record(Event::HandlerStarted {
            task: index,
            consumer: context.consumer.clone(),
            call,
            entry: Some(ctx.entry_id()),
        });
        if let Some(permit) = ctx.rate_permit() {
            recorder.record(Event::RunPermit {
                task: index,
                call,
                permit: permit.to_owned(),
            });
        }
        if let Some(longer) = context.faults.lengthened(context.worker) {
            tokio::time::sleep(longer).await;
        }
        let outcome = match fault {
            _ if slow_down.is_some() => {
                let pause = Duration::from_millis(slow_down.unwrap_or_default());
                Err(SlowDown::new(pause, format!("injected 429 (call {call})")).into())
            }
            None => self.inner.handle(task, ctx.clone()).await,
            Some(HandlerFault::Error) if context.faults.permanent(index) => {
                Err(NonRetryable::new(format!("injected permanent error (call {call})")).into())
            }
            Some(HandlerFault::Error) => Err(format!("injected error (call {call})").into()),
            Some(HandlerFault::Panic) => std::panic::panic_any(InjectedPanic),
            Some(HandlerFault::Hang) => std::future::pending().await,
            Some(HandlerFault::Slow { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.inner.handle(task, ctx.clone()).await
            }
        };
        context.wait_while_paused().await;
        // Before answering, the handler asks whether the entry is still its
        // worker's (a pause or an outage may have let a peer take it over):
        // the context's use the checker holds the worker to.
        let lost = matches!(ctx.extend_lease().await, Ok(false)) && ctx.is_cancelled();
        if lost {
            recorder.record(Event::HandlerCancelled {
                task: index,
                consumer: context.consumer.clone(),
                call,
            });
        }
        recorder.record(Event::HandlerEnded {
            task: index,
            consumer: context.consumer.clone(),
            call,
            ok: outcome.is_ok(),
        });
        if let Some(pause_ms) = slow_down {
            // Nothing awaits between this and the worker's look at the
            // cancellation: what it sees, this records.
            recorder.record(Event::SlowedDown {
                task: index,
                call,
                agent,
                consumer: context.consumer.clone(),
                pause_ms,
                cancelled: ctx.is_cancelled(),
            });
        }
        match outcome {
            // Marked, so a result recorded anyway shows in the results.
            Ok(Value::Object(mut output)) if lost => {
                output.insert(CANCELLED_CALL.to_owned(), json!(call));
                Ok(Value::Object(output))
            }
            other => other,
        }
    }
}
