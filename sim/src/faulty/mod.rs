//! Fault injection around any broker: [`FaultyBroker`].

mod config;
mod delegate;
mod server;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crewq_core::{Broker, Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use tokio::time::Instant;

pub use config::{FaultConfig, HalfOpen, Op, OpSet};
pub use server::ServerError;

/// A fault that took effect on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The call failed with a transient connection error before it reached
    /// the inner broker: nothing was applied.
    Before,
    /// The inner broker applied the call, and the caller got a transient
    /// time-out instead of its reply.
    After,
    /// The call was held back this many milliseconds before it went on.
    Delay(u64),
    /// The server refused the call with an error reply (a failover, a
    /// restart, memory pressure): nothing applied.
    Refused(ServerError),
    /// The call hung on a half-open link until the time-out; `applied`
    /// says whether the server had run it.
    HalfOpen {
        /// Whether the call was applied.
        applied: bool,
    },
    /// Item `item` (from 0) of a settle was refused on its own
    /// ([`Settled::Failed`](crewq_core::Settled::Failed)); the rest settled.
    ItemFailed {
        /// The item's index in the call.
        item: u32,
    },
    /// The call started during an outage of the broker: refused at once,
    /// nothing applied.
    Outage,
}

impl Fault {
    /// The fault class it counts under in a campaign's hit counts
    /// (`broker_error_before`, `failover_readonly`, `half_open` ...).
    pub fn class(self) -> &'static str {
        match self {
            Fault::Before => "broker_error_before",
            Fault::After => "broker_error_after",
            Fault::Delay(_) => "broker_latency",
            Fault::Refused(server) => server.class(),
            Fault::HalfOpen { .. } => "half_open",
            Fault::ItemFailed { .. } => "settle_item_failed",
            Fault::Outage => "outage",
        }
    }

    /// Whether the caller saw an error or a refused item (not only a delay).
    pub fn is_error(self) -> bool {
        !matches!(self, Fault::Delay(_))
    }
}

/// One entry of the fault log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultEvent {
    /// The call's number: calls through the wrapper are numbered from 0 in
    /// the order they start, whether faults touch them or not.
    pub seq: u64,
    /// The operation called.
    pub op: Op,
    /// What was done to it.
    pub fault: Fault,
}

/// The faults a [`FaultyBroker`] injected, in the order they took effect
/// (a call's delay before its error; an [`Fault::After`] once the inner
/// call has returned).
pub type FaultLog = Vec<FaultEvent>;

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
}

/// What was decided for one call when it started.
#[derive(Clone, Copy, Debug)]
struct Plan {
    seq: u64,
    op: Op,
    delay: Duration,
    error: Option<ErrorAt>,
    refused: Option<ServerError>,
    /// Hangs this long on a half-open link, then times out; whether it
    /// applied.
    half_open: Option<(Duration, bool)>,
    /// The broker is down: refused at once.
    outage: bool,
}

/// When an injected error strikes.
#[derive(Clone, Copy, Debug)]
enum ErrorAt {
    Before,
    After,
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

    /// Numbers the call and draws its faults.
    fn plan(&self, op: Op) -> Plan {
        let config = &self.state.config;
        let mut dice = self.dice();
        let seq = dice.calls;
        dice.calls += 1;
        let mut plan = Plan {
            seq,
            op,
            delay: Duration::ZERO,
            error: None,
            refused: None,
            half_open: None,
            outage: false,
        };
        if !dice.enabled || !config.ops.contains(op) {
            return plan;
        }
        let now = Instant::now();
        if config.outages.iter().any(|window| window.contains(&now)) {
            plan.outage = true;
            return plan;
        }
        if let Some(link) = config
            .half_open
            .iter()
            .find(|link| link.from <= now && now < link.until)
        {
            plan.half_open = Some((link.timeout, dice.server.random_bool(0.5)));
            return plan;
        }
        if let Some((a, b)) = config.latency {
            let lo = millis(a.min(b));
            let hi = millis(a.max(b));
            plan.delay = Duration::from_millis(dice.latency.random_range(lo..=hi));
        }
        let roll: f64 = dice.errors.random();
        plan.error = if roll < config.error_before {
            Some(ErrorAt::Before)
        } else if roll < config.error_before + config.error_after {
            Some(ErrorAt::After)
        } else {
            None
        };
        if config.refused > 0.0 {
            let roll: f64 = dice.server.random();
            let choices = ServerError::for_op(op);
            let pick = dice.server.random_range(0..choices.len());
            if plan.error.is_none() && roll < config.refused {
                plan.refused = Some(choices[pick]);
            }
        }
        plan
    }

    /// Draws which items of a settle of `items` items the server refuses,
    /// with the reply text of each (none when the call itself fails).
    fn item_failures(&self, plan: &Plan, items: usize) -> Vec<Option<&'static str>> {
        let config = &self.state.config;
        let mut dice = self.dice();
        let faulted = plan.error.is_some()
            || plan.refused.is_some()
            || plan.half_open.is_some()
            || plan.outage;
        if !dice.enabled || !config.ops.contains(plan.op) || config.item_failure <= 0.0 || faulted {
            return vec![None; items];
        }
        (0..items)
            .map(|_| {
                let roll: f64 = dice.server.random();
                let reply = server::ITEM_REPLIES[dice.server.random_range(0..2)];
                (roll < config.item_failure).then_some(reply)
            })
            .collect()
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
        let plan = self.plan(op);
        self.apply(plan, call).await
    }

    /// Runs `call` with the faults of `plan`: its delay, then its error
    /// before the call (which never starts), or after it; a reply waits
    /// out a pause that began meanwhile.
    async fn apply<T>(&self, plan: Plan, call: impl Future<Output = Result<T>>) -> Result<T> {
        let reply = self.apply_faults(plan, call).await;
        self.wait_while_paused().await;
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
        if let Some((timeout, applied)) = plan.half_open {
            // The command reached the server (or not) before the link went
            // silent; the caller hears nothing until its time-out.
            if applied {
                let _lost = call.await;
            }
            tokio::time::sleep(timeout).await;
            self.record(&plan, Fault::HalfOpen { applied });
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
