//! How often each fault class fired in a run, counted from its history:
//! a green campaign shows that every path was reached.
//!
//! Keyed by class name in a `BTreeMap`, so reports print and serialize in
//! one order. A class is counted each time it took effect: a broker fault
//! under its [`Fault::class`](crate::Fault::class) (`broker_error_before`,
//! `failover_readonly`, `half_open`, `settle_item_failed` ...), a crash as
//! `crash`, a pause as `pause`. A new fault class adds its name here.

use std::collections::BTreeMap;

use crate::history::{Event, History};

/// Times each fault class fired, by class name.
pub type Hits = BTreeMap<String, u64>;

/// The hit counts of one run's history.
pub(crate) fn count(history: &History) -> Hits {
    let mut hits = Hits::new();
    for stamped in history.events() {
        let class = match &stamped.event {
            Event::Fault { fault, .. } => fault.class(),
            Event::Crashed { .. } => "crash",
            Event::Paused { .. } => "pause",
            Event::StopRequested { .. } => "graceful_stop",
            // Not a fault: shows that runs under shared rate limits happened.
            Event::RunPermit { .. } => "rate_limited_run",
            // A handler's "slow down" (an upstream's 429), and the pauses
            // of agent types the broker applied.
            Event::SlowedDown { .. } => "slow_down",
            Event::RatePaused { .. } => "rate_paused",
            _ => continue,
        };
        *hits.entry(class.to_owned()).or_default() += 1;
    }
    hits
}

/// Adds `more` to `hits`.
pub fn merge(hits: &mut Hits, more: &Hits) {
    for (class, n) in more {
        *hits.entry(class.clone()).or_default() += n;
    }
}
