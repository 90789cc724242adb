//! Priorities: one loop per priority lane in use, sharing the worker's
//! slots (see [`crate::lanes`]).
//!
//! Each lane is a task stream of its own, and gets the whole of a worker's
//! machinery for one stream: its loop drains its own pending entries,
//! reclaims peers' stale ones, renews, settles, promotes its delayed set,
//! and re-creates its group should it be destroyed or its stream deleted,
//! exactly as a worker with a single stream does. What the lanes share:
//!
//! - the worker's `concurrency`: a semaphore of slots; an attempt holds one
//!   from its start to its end, and a loop takes the slots for what it
//!   reads before it reads (so the lanes together never run more);
//! - the read of new entries: lane 0's loop is the *arbiter*. It reads for
//!   every lane in one [`Broker::read_lanes`] (highest priority first, no
//!   lane starved), starts its own entries, and posts the others, each with
//!   its slot, to their lanes' loops. It looks for lanes not served yet
//!   every [`WorkerOptions::lane_poll`](super::WorkerOptions::lane_poll) and
//!   asks the worker to start a loop for each one it finds.
//!
//! While no lane above 0 is in use, the arbiter reads lane 0 with a plain
//! blocking group read between looks, as a worker without lanes does: a
//! crew that never uses priorities pays one look per `lane_poll`.
//!
//! [`Broker::read_lanes`]: crate::Broker::read_lanes

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::{AgentType, Broker, DeliveredEntry, Error, Keyspace, Lane, Priority, Result};

use super::run::{Setup, run_lane};
use super::{Handler, WorkerReport};

/// Every priority, highest first: the lanes a look covers.
pub(crate) fn all_priorities() -> impl Iterator<Item = Priority> {
    (0..=10u8).rev().filter_map(|p| Priority::new(p).ok())
}

/// An entry the arbiter read for another lane, with its slot.
pub(crate) struct Mail {
    pub entry: DeliveredEntry,
    /// When the read that took it was sent: its lease began then at the
    /// latest.
    pub sent: Instant,
    pub slot: Option<OwnedSemaphorePermit>,
}

/// What one lane's loop is sent.
#[derive(Default)]
struct Mailbox {
    entries: VecDeque<Mail>,
    /// The arbiter's read found the lane's group missing.
    no_group: bool,
}

/// What the lanes of one worker share.
pub(crate) struct Hub {
    /// The worker's slots: an attempt holds one while it runs.
    pub slots: Arc<Semaphore>,
    mail: Mutex<BTreeMap<Priority, Mailbox>>,
    /// Wakes lanes' loops waiting for mail (each lane looks at its own).
    posted: BTreeMap<Priority, Notify>,
    /// Lanes whose loop runs or was asked for.
    served: Mutex<BTreeSet<Priority>>,
    /// Asks the worker to start a lane's loop.
    start: mpsc::UnboundedSender<Priority>,
}

impl Hub {
    /// A hub of `concurrency` slots, asking for new lanes through `start`.
    pub fn new(concurrency: usize, start: mpsc::UnboundedSender<Priority>) -> Self {
        Hub {
            slots: Arc::new(Semaphore::new(concurrency)),
            mail: Mutex::new(BTreeMap::new()),
            posted: all_priorities().map(|p| (p, Notify::new())).collect(),
            served: Mutex::new(BTreeSet::from([Priority::MIN])),
            start,
        }
    }

    /// Takes every free slot, with `spare` (a slot already held), without
    /// waiting: `None` when there is none.
    pub fn reserve(&self, spare: Option<OwnedSemaphorePermit>) -> Option<OwnedSemaphorePermit> {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        let more = if free == 0 {
            None
        } else {
            Arc::clone(&self.slots).try_acquire_many_owned(free).ok()
        };
        match (spare, more) {
            (Some(mut spare), Some(more)) => {
                spare.merge(more);
                Some(spare)
            }
            (spare, more) => spare.or(more),
        }
    }

    /// Makes sure lane `priority` has a loop, asking the worker for one if
    /// not.
    pub fn serve(&self, priority: Priority) {
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        if served.insert(priority) && self.start.send(priority).is_err() {
            // The worker is stopping: nothing new starts.
            served.remove(&priority);
        }
    }

    /// Whether lane `priority` has a loop (or one was asked for).
    pub fn is_served(&self, priority: Priority) -> bool {
        let served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        served.contains(&priority)
    }

    /// Posts `mail` to lane `priority`'s loop.
    pub fn post(&self, priority: Priority, mail: Mail) {
        self.serve(priority);
        self.with_mailbox(priority, |mailbox| mailbox.entries.push_back(mail));
    }

    /// Tells lane `priority`'s loop that a read found its group missing.
    pub fn no_group(&self, priority: Priority) {
        self.serve(priority);
        self.with_mailbox(priority, |mailbox| mailbox.no_group = true);
    }

    /// What was posted to lane `priority` since it last looked.
    pub fn take(&self, priority: Priority) -> (Vec<Mail>, bool) {
        let mut mail = self.mail.lock().unwrap_or_else(PoisonError::into_inner);
        match mail.get_mut(&priority) {
            Some(mailbox) => (
                mailbox.entries.drain(..).collect(),
                std::mem::take(&mut mailbox.no_group),
            ),
            None => (Vec::new(), false),
        }
    }

    /// Resolves once something is posted to lane `priority` (at once if
    /// something was posted since its last [`Hub::take`]).
    pub async fn posted(&self, priority: Priority) {
        if let Some(notify) = self.posted.get(&priority) {
            let waiting = notify.notified();
            tokio::pin!(waiting);
            waiting.as_mut().enable();
            if self.has_mail(priority) {
                return;
            }
            waiting.await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    fn has_mail(&self, priority: Priority) -> bool {
        let mail = self.mail.lock().unwrap_or_else(PoisonError::into_inner);
        mail.get(&priority)
            .is_some_and(|mailbox| !mailbox.entries.is_empty() || mailbox.no_group)
    }

    fn with_mailbox(&self, priority: Priority, f: impl FnOnce(&mut Mailbox)) {
        {
            let mut mail = self.mail.lock().unwrap_or_else(PoisonError::into_inner);
            f(mail.entry(priority).or_default());
        }
        if let Some(notify) = self.posted.get(&priority) {
            notify.notify_one();
        }
    }
}

/// The lanes' tasks of a spawned worker, so that aborting it (a crash)
/// stops every lane at once, as it stopped the single loop before lanes:
/// dropping the worker's task drops its set of lanes only when the runtime
/// gets to it, and a lane scheduled meanwhile would run one more step.
#[derive(Debug, Default)]
pub(crate) struct LaneTasks {
    tasks: Mutex<(bool, Vec<tokio::task::AbortHandle>)>,
}

impl LaneTasks {
    /// Notes a lane's task; aborts it at once if the worker was aborted.
    fn add(&self, task: tokio::task::AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.0 {
            task.abort();
        } else {
            tasks.1.retain(|t| !t.is_finished());
            tasks.1.push(task);
        }
    }

    /// Aborts every lane's task, and any started later.
    pub fn abort_all(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.0 = true;
        for task in tasks.1.drain(..) {
            task.abort();
        }
    }
}

/// Lane 0's loop's knowledge of the other lanes.
pub(crate) struct Arbiter {
    /// Every lane, highest first.
    pub lanes: Vec<(Priority, Lane)>,
    /// Lanes above 0 in use at the last look, highest first.
    pub present: Vec<Priority>,
    /// When to look at every lane again.
    pub next_look: Instant,
}

impl Arbiter {
    /// The arbiter of `agent`'s lanes in `keyspace`.
    pub fn new(keyspace: &Keyspace, agent: &AgentType) -> Self {
        let lanes = all_priorities()
            .map(|p| {
                let lane = Lane::new(keyspace.lane(agent, p), u8::from(p))
                    .delayed(keyspace.lane_delayed(agent, p));
                (p, lane)
            })
            .collect();
        Arbiter {
            lanes,
            present: Vec::new(),
            // Look at once: a restart after a crew crash has lanes to serve.
            next_look: Instant::now(),
        }
    }

    /// The lanes of a read, highest first, and each one's priority: every
    /// lane when `look`, else lane 0 and those in use. A lane `hub` serves
    /// no loop for yet gets its group in the read (see
    /// [`Lane::create_group`]).
    pub fn lanes(&self, look: bool, hub: &Hub) -> (Vec<Priority>, Vec<Lane>) {
        self.lanes
            .iter()
            .filter(|(p, _)| look || *p == Priority::MIN || self.present.contains(p))
            .map(|(p, lane)| {
                let lane = Lane {
                    create_group: !hub.is_served(*p),
                    ..lane.clone()
                };
                (*p, lane)
            })
            .unzip()
    }
}

/// Runs lane 0's loop, and a loop for every lane it asks for through
/// `asked`, until `stop` resolves to a grace period or a lane stops on an
/// error it cannot wait out; then every lane gets the grace (or
/// `stop_grace`), a shorter grace from `stop` still cutting it short.
pub(crate) async fn run_lanes<B, P, H>(
    setup: Arc<Setup<B, H>>,
    mut asked: mpsc::UnboundedReceiver<Priority>,
    stop: impl Future<Output = Duration> + Send,
    tasks: Arc<LaneTasks>,
) -> Result<WorkerReport>
where
    B: Broker + Clone + 'static,
    P: DeserializeOwned + Send + 'static,
    H: Handler<P>,
{
    let (graces, graced) = watch::channel(None::<Duration>);
    let mut lanes = JoinSet::new();
    let spawn = |lanes: &mut JoinSet<Result<WorkerReport>>, lane: Priority| {
        tracing::debug!(lane = u8::from(lane), "serving a priority lane");
        tasks.add(lanes.spawn(run_lane::<B, P, H>(
            Arc::clone(&setup),
            lane,
            graced.clone(),
        )));
    };
    spawn(&mut lanes, Priority::MIN);
    let mut report = WorkerReport::default();
    let mut error: Option<Error> = None;
    let mut tally = |done: std::result::Result<Result<WorkerReport>, JoinError>| match done {
        Ok(Ok(lane)) => report += lane,
        Ok(Err(err)) => {
            error.get_or_insert(err);
        }
        Err(join) => {
            error.get_or_insert(Error::Backend {
                message: format!("a lane of the worker failed: {join}"),
                source: None,
            });
        }
    };
    tokio::pin!(stop);
    let stopped = loop {
        tokio::select! {
            biased;
            grace = &mut stop => break Some(grace),
            Some(done) = lanes.join_next() => {
                // A lane ends by itself only on an error it cannot wait out.
                tally(done);
                break None;
            }
            Some(lane) = asked.recv() => spawn(&mut lanes, lane),
        }
    };
    // Nothing new is served from here on.
    asked.close();
    let _ = graces.send(Some(stopped.unwrap_or(setup.options.stop_grace)));
    let mut watching = stopped.is_none();
    loop {
        tokio::select! {
            biased;
            grace = &mut stop, if watching => {
                watching = false;
                let _ = graces.send(Some(grace));
            }
            done = lanes.join_next() => match done {
                Some(done) => tally(done),
                None => break,
            },
        }
    }
    match error {
        Some(err) => Err(err),
        None => Ok(report),
    }
}
