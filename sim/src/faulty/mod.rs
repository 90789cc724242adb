//! Fault injection around any broker: [`FaultyBroker`].

mod config;
mod delegate;
mod draw;
mod fault;
mod links;
mod server;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crewq_core::{Broker, Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use tokio::time::Instant;

pub use config::{Conn, FaultConfig, Flows, HalfOpen, Op, OpSet};
pub use fault::{Fault, FaultEvent, FaultLog};
pub use links::{CallEnd, CallObserver};
pub use server::ServerError;

use draw::{ErrorAt, Plan};

/// A broker that injects seeded faults into the calls it passes to `B`:
/// transient errors before or after the call is applied, latency, and
/// pauses.
///
/// Every decision comes from [`FaultConfig::seed`], drawn in the order calls
/// start: errors from one stream of the generator, latency from another, so
/// switching latency on does not move the errors. The same seed and the
/// same sequence of calls (as a current-thread runtime with paused time
/// gives) inject the same faults; [`FaultyBroker::faults`] is the log to
/// compare, and [`FaultyBroker::set_observer`] sees each fault as it takes
/// effect. Clones share the inner broker (when its clones do), the
/// generator, the switch, the pause and the log.
///
/// Faults can be switched off ([`FaultyBroker::set_enabled`]) to let a
/// system drain before checking it. A pause ([`FaultyBroker::pause_until`])
/// freezes the caller's view of the broker as a stopped process or a
/// partition would: calls wait for its end before they start, and replies
/// that arrive during it are handed over only after it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use crewq_core::{Broker, Fields, NewEntry};
/// use crewq_memory::MemoryBroker;
/// use crewq_sim::{Fault, FaultConfig, FaultyBroker, Op, OpSet};
///
/// let broker = FaultyBroker::new(
///     MemoryBroker::new(),
///     FaultConfig {
///         seed: 7,
///         error_before: 1.0,
///         ops: OpSet::writes(),
///         ..FaultConfig::default()
///     },
/// );
/// let added = broker.xadd(NewEntry::new("s", Fields::new().with("k", "v"))).await;
/// assert!(added.is_err_and(|e| e.is_transient()));
/// assert_eq!(broker.xlen("s").await?, 0, "failed before: nothing applied");
/// assert_eq!(broker.faults()[0].op, Op::Xadd);
/// assert_eq!(broker.faults()[0].fault, Fault::Before);
///
/// broker.set_enabled(false);
/// broker.xadd(NewEntry::new("s", Fields::new().with("k", "v"))).await?;
/// assert_eq!(broker.xlen("s").await?, 1);
/// assert_eq!((broker.calls(), broker.injected()), (4, 1));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FaultyBroker<B> {
    inner: B,
    state: Arc<State>,
}

/// Sees each fault as it takes effect.
pub type FaultObserver = Arc<dyn Fn(&FaultEvent) + Send + Sync>;

/// The generator streams of one seed: errors and latency are drawn apart.
const ERROR_STREAM: u64 = 0;
const LATENCY_STREAM: u64 = 1;
/// Refusals, refused settle items and half-open draws: a stream of their
/// own, so switching them on moves none of the faults above.
const SERVER_STREAM: u64 = 2;

/// What clones share.
struct State {
    config: FaultConfig,
    dice: Mutex<Dice>,
}

/// The mutable part, behind one lock so a call's number and its draws are
/// taken together.
struct Dice {
    errors: ChaCha12Rng,
    latency: ChaCha12Rng,
    server: ChaCha12Rng,
    enabled: bool,
    paused_until: Option<Instant>,
    calls: u64,
    injected: u64,
    log: FaultLog,
    observer: Option<FaultObserver>,
    /// Sees the end of each call made while faults are on.
    calls_observer: Option<CallObserver>,
    /// When each kind of connection ([`Conn::index`]) in use was opened;
    /// `None`: closed, the next call opens one.
    opened: [Option<Instant>; 2],
}

impl<B: Broker> FaultyBroker<B> {
    /// Wraps `inner`, with faults switched on.
    pub fn new(inner: B, config: FaultConfig) -> Self {
        let stream = |n| {
            let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
            rng.set_stream(n);
            rng
        };
        let dice = Dice {
            errors: stream(ERROR_STREAM),
            latency: stream(LATENCY_STREAM),
            server: stream(SERVER_STREAM),
            enabled: true,
            paused_until: None,
            calls: 0,
            injected: 0,
            log: Vec::new(),
            observer: None,
            calls_observer: None,
            opened: [None; 2],
        };
        FaultyBroker {
            inner,
            state: Arc::new(State {
                config,
                dice: Mutex::new(dice),
            }),
        }
    }

    /// The wrapped broker, to look at or set up state without faults.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.state.config
    }

    /// Switches faults on or off. While off, calls pass through untouched
    /// and draw nothing; they are still numbered and counted.
    pub fn set_enabled(&self, enabled: bool) {
        self.dice().enabled = enabled;
    }

    /// Whether faults are switched on.
    pub fn is_enabled(&self) -> bool {
        self.dice().enabled
    }

    /// Freezes calls until `deadline` (tokio time): calls made meanwhile
    /// start after it, replies that arrive meanwhile are handed over after
    /// it. A later call replaces the deadline; a past one ends the pause.
    pub fn pause_until(&self, deadline: Instant) {
        self.dice().paused_until = Some(deadline);
    }

    /// Ends a pause at once.
    pub fn resume(&self) {
        self.dice().paused_until = None;
    }

    /// The end of the current pause, if one is under way.
    pub fn paused_until(&self) -> Option<Instant> {
        self.dice()
            .paused_until
            .filter(|until| *until > Instant::now())
    }

    /// Waits while a pause is under way (also for callers that are not
    /// broker calls, such as a handler frozen with its worker).
    pub async fn wait_while_paused(&self) {
        while let Some(until) = self.paused_until() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Calls `observer` with each fault as it takes effect, after it is
    /// logged (never under a lock of the broker's).
    pub fn set_observer(&self, observer: FaultObserver) {
        self.dice().observer = Some(observer);
    }

    /// The faults injected so far, in the order they took effect.
    pub fn faults(&self) -> FaultLog {
        self.dice().log.clone()
    }

    /// Calls made through the wrapper so far, faulted or not.
    pub fn calls(&self) -> u64 {
        self.dice().calls
    }

    /// Calls failed by an injected error, and settle items refused, so far
    /// (every [`Fault`] but [`Fault::Delay`]).
    pub fn injected(&self) -> u64 {
        self.dice().injected
    }

    fn dice(&self) -> MutexGuard<'_, Dice> {
        // The lock is never held across an await or a user callback, so a
        // poisoned lock only means a panic elsewhere: the data is intact.
        self.state
            .dice
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, plan: &Plan, fault: Fault) {
        tracing::debug!(seq = plan.seq, op = %plan.op, ?fault, "injecting a fault");
        let event = FaultEvent {
            seq: plan.seq,
            op: plan.op,
            fault,
        };
        let observer = {
            let mut dice = self.dice();
            if fault.is_error() {
                dice.injected += 1;
            }
            dice.log.push(event);
            dice.observer.clone()
        };
        if let Some(observer) = observer {
            observer(&event);
        }
    }

    /// Runs `call` (a call on the inner broker, not started yet) with the
    /// faults drawn for `op`. All fault logic is here and in
    /// [`FaultyBroker::apply`].
    async fn inject<T>(&self, op: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.wait_while_paused().await;
        // Every call but a blocking read goes on the shared connection.
        let plan = self.plan(op, Conn::Shared);
        self.apply(plan, call).await
    }

    /// Runs `call` with the faults of `plan`: its delay, then its error
    /// before the call (which never starts), or after it; a reply waits
    /// out a pause that began meanwhile.
    async fn apply<T>(&self, plan: Plan, call: impl Future<Output = Result<T>>) -> Result<T> {
        let reply = self.apply_faults(plan, call).await;
        self.wait_while_paused().await;
        if plan.watched {
            self.call_ended(&plan, reply.is_ok());
        }
        reply
    }

    async fn apply_faults<T>(
        &self,
        plan: Plan,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if plan.outage {
            self.record(&plan, Fault::Outage);
            return Err(Error::Connection {
                message: format!(
                    "injected fault: the broker is down; connection refused for {} (call {})",
                    plan.op, plan.seq
                ),
                source: None,
            });
        }
        if !plan.delay.is_zero() {
            self.record(&plan, Fault::Delay(millis(plan.delay)));
            tokio::time::sleep(plan.delay).await;
        }
        if let Some(hang) = plan.half_open {
            // The command reached the server (or not) before the link went
            // silent; the caller hears nothing until its time-out.
            // A blocking read that applied is cut at the time-out too.
            let (timeout, applied) = (hang.timeout, hang.applied);
            let deadline = Instant::now() + timeout;
            if applied {
                let _lost = tokio::time::timeout_at(deadline, call).await;
            }
            tokio::time::sleep_until(deadline).await;
            self.replace(plan.conn, hang.opened);
            let conn = plan.conn;
            self.record(&plan, Fault::HalfOpen { conn, applied });
            let applied = if applied {
                "it was applied"
            } else {
                "nothing applied"
            };
            return Err(Error::Timeout(format!(
                "injected fault: no reply to {} within {} ms on a half-open link (call {}); {applied}",
                plan.op,
                millis(timeout),
                plan.seq
            )));
        }
        if let Some(server) = plan.refused {
            self.record(&plan, Fault::Refused(server));
            return Err(server.error());
        }
        match plan.error {
            Some(ErrorAt::Before) => {
                self.record(&plan, Fault::Before);
                Err(Error::Connection {
                    message: format!(
                        "injected fault: connection lost before {} (call {}); nothing applied",
                        plan.op, plan.seq
                    ),
                    source: None,
                })
            }
            Some(ErrorAt::After) => {
                // The reply is lost whatever it was, as when a real
                // connection drops after the server ran the command.
                let reply = call.await;
                self.record(&plan, Fault::After);
                tracing::debug!(seq = plan.seq, applied_ok = reply.is_ok(), "reply dropped");
                Err(Error::Timeout(format!(
                    "injected fault: no reply to {} (call {}); it was applied",
                    plan.op, plan.seq
                )))
            }
            None => call.await,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<B> fmt::Debug for FaultyBroker<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dice = self
            .state
            .dice
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("FaultyBroker")
            .field("config", &self.state.config)
            .field("enabled", &dice.enabled)
            .field("calls", &dice.calls)
            .field("injected", &dice.injected)
            .finish_non_exhaustive()
    }
}
