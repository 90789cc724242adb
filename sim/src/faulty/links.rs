//! Half-open links on a [`FaultyBroker`]'s connections: which calls hang,
//! the connections the client replaces after a time-out, and the observer
//! of every call's end (how the simulator sees what a worker read).

use std::sync::Arc;
use std::time::Duration;

use crewq_core::Broker;
use rand::Rng;
use tokio::time::Instant;

use super::{Conn, Dice, FaultConfig, FaultyBroker, Op, Plan};

/// A call hanging on a silent connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hang {
    /// How long until it times out.
    pub timeout: Duration,
    /// Whether the server ran it before the link went silent.
    pub applied: bool,
    /// When the connection it went on was opened: the one replaced when
    /// the call times out.
    pub opened: Instant,
}

/// The end of one call made while faults were on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallEnd {
    /// The call's number (as in [`FaultEvent::seq`](super::FaultEvent)).
    pub seq: u64,
    /// The operation.
    pub op: Op,
    /// The connection it went on.
    pub conn: Conn,
    /// Whether the caller got a reply rather than an error.
    pub ok: bool,
}

/// Sees the end of each call made while faults are on.
pub type CallObserver = Arc<dyn Fn(&CallEnd) + Send + Sync>;

/// Whether a call on `conn` starting now hangs, and how: its connection
/// (opened now if none is open) is silent when a link silencing that kind
/// has begun and the connection was opened before the link's end.
pub(super) fn hang(config: &FaultConfig, dice: &mut Dice, conn: Conn) -> Option<Hang> {
    let now = Instant::now();
    let opened = *dice.opened[conn.index()].get_or_insert(now);
    let link = config
        .half_open
        .iter()
        .find(|link| link.flows.silences(conn) && link.from <= now && opened < link.until)?;
    Some(Hang {
        timeout: link.timeout,
        applied: dice.server.random_bool(0.5),
        opened,
    })
}

impl<B: Broker> FaultyBroker<B> {
    /// Calls `observer` with the end of each call made while faults are on
    /// (the calls they could touch), after its reply is in.
    pub fn set_call_observer(&self, observer: CallObserver) {
        self.dice().calls_observer = Some(observer);
    }

    /// Drops the `conn` connection opened at `opened` after a call on it
    /// timed out, as the Redis backend does: the next call opens a new one.
    /// A connection already replaced (by another call that timed out with
    /// it) is left alone.
    pub(super) fn replace(&self, conn: Conn, opened: Instant) {
        let mut dice = self.dice();
        let current = &mut dice.opened[conn.index()];
        if *current == Some(opened) {
            *current = None;
        }
    }

    /// Tells the call observer that `plan`'s call ended.
    pub(super) fn call_ended(&self, plan: &Plan, ok: bool) {
        let observer = self.dice().calls_observer.clone();
        if let Some(observer) = observer {
            observer(&CallEnd {
                seq: plan.seq,
                op: plan.op,
                conn: plan.conn,
                ok,
            });
        }
    }
}
