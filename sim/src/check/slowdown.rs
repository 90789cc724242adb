//! [`Invariant::SlowDownHonoured`]: a handler's "slow down" (an upstream's
//! 429, [`SlowDown`](crewq_core::worker::SlowDown)) pauses its whole agent
//! type, and the broker starts nothing of it until the pause is over.
//!
//! Judged from the history (`SlowedDown`, `RatePaused`, `RateGranted`,
//! `RolledBack`, and what may cut a worker's call short), in two parts:
//!
//! - **paused**: after a handler of agent type A said "slow down for d" at
//!   t (and its context was not cancelled: the worker then records and
//!   pauses nothing), the broker applied a pause of A lasting until t + d
//!   at least, soon after (within the injected latency both ways and a
//!   half-open link's time-out, later by as long as the worker was frozen
//!   then). Let through: the worker's `rate_pause` call may have been lost,
//!   as a fault on it, a crash or a stop that cut attempts short does; the
//!   worker's pause is best effort, and its task's retry waits the pause
//!   anyway.
//! - **honoured**: while a pause the broker applied runs, it grants no
//!   permit of A, so no handler of A with a rate limit starts under a
//!   permit granted in it. A grant is in the pause when it was surely
//!   applied after the pause (its call sent once the pause's reply came
//!   back, and after it in the history: on the memory backend both happen
//!   at one instant) and surely before the pause's end (its reply back
//!   before the pause's send plus what it left, less the broker's whole ms).
//!   A broker rollback to a snapshot not after the pause forgets it: from
//!   the rollback on it no longer counts.
//!
//! The pause a slow-down asks for is capped at the workers' back-off max,
//! as the worker caps it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Scenario;
use crate::history::{Event, Stamped};
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

use super::deleted::{MAX_LATENCY_MS, frozen_until};

/// The violations of [`Invariant::SlowDownHonoured`] in `record`'s history.
pub(super) fn check(scenario: &Scenario, record: &RunRecord) -> Vec<Violation> {
    // As the simulation's workers' back-off (run/slots.rs).
    let cap = crate::scenario::millis_of((scenario.lease / 5).max(Duration::from_millis(10)));
    let hang_ms = record
        .plan
        .half_open
        .iter()
        .map(|link| link.timeout_ms)
        .max()
        .unwrap_or(0);
    let events = record.history.events();
    let mut violations = paused(events, &record.rate_starts, cap, hang_ms);
    violations.extend(honoured(events));
    violations
}

/// How long after a slow-down its worker's pause must have been applied,
/// unless the worker was frozen: the call's latency both ways, and a
/// half-open link's time-out.
fn slack(hang_ms: u64) -> u64 {
    3 * MAX_LATENCY_MS + hang_ms
}

/// The slow-downs whose pause was never applied, nor its call lost.
fn paused(
    events: &[Stamped],
    starts: &BTreeMap<String, String>,
    cap: u64,
    hang_ms: u64,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (i, stamped) in events.iter().enumerate() {
        let Event::SlowedDown {
            task,
            call,
            agent,
            consumer,
            pause_ms,
            cancelled: false,
        } = &stamped.event
        else {
            continue;
        };
        let Some(key) = starts.get(agent) else {
            continue;
        };
        let t = stamped.at_ms;
        let pause = (*pause_ms).min(cap);
        let mut deadline = t + slack(hang_ms);
        if let Some(until) = frozen_until(events, consumer, t, deadline) {
            deadline = deadline.max(until + slack(hang_ms));
        }
        let after = events[i + 1..].iter().take_while(|e| e.at_ms <= deadline);
        let mut applied = false;
        let mut lost = false;
        for e in after {
            match &e.event {
                Event::RatePaused {
                    starts: of,
                    sent_us,
                    left_ms,
                    ..
                } if of == key => {
                    // It began at its send or after, and lasts `left`.
                    applied |= sent_us / 1000 + left_ms + 1 >= t + pause;
                }
                Event::Fault {
                    actor, op, fault, ..
                } => {
                    lost |= actor == consumer && *op == crate::Op::RatePause && fault.is_error();
                }
                Event::Crashed { consumer: by, .. } => lost |= by == consumer,
                Event::Stopped {
                    consumer: by,
                    handed_back,
                    ..
                } => lost |= by == consumer && *handed_back > 0,
                _ => {}
            }
        }
        if !applied && !lost {
            violations.push(Violation {
                invariant: Invariant::SlowDownHonoured,
                task: Some(*task),
                detail: format!(
                    "call {call} of task {task} ({agent}) said slow down for {pause} ms at {t} ms \
                     on {consumer}; no pause of {agent} until {} ms was applied by {deadline} ms",
                    t + pause
                ),
            });
        }
    }
    violations
}

/// A pause the broker applied.
struct Pause<'a> {
    index: usize,
    starts: &'a str,
    replied_us: u64,
    /// Surely over by then (µs), as far as the history can tell.
    ends_us: u64,
    at_ms: u64,
    /// Forgotten by a rollback from this event on.
    forgotten_from: Option<usize>,
}

/// The grants made while a pause applied before them ran.
fn honoured(events: &[Stamped]) -> Vec<Violation> {
    let mut pauses: Vec<Pause<'_>> = Vec::new();
    let mut violations = Vec::new();
    for (index, stamped) in events.iter().enumerate() {
        match &stamped.event {
            Event::RatePaused {
                starts,
                sent_us,
                replied_us,
                left_ms,
                ..
            } => pauses.push(Pause {
                index,
                starts,
                replied_us: *replied_us,
                // Less the broker's whole ms (its clock is read in ms).
                ends_us: (sent_us + left_ms * 1000).saturating_sub(1000),
                at_ms: stamped.at_ms,
                forgotten_from: None,
            }),
            Event::RolledBack { snapshot_ms, .. } => {
                for pause in &mut pauses {
                    if pause.at_ms >= *snapshot_ms && pause.forgotten_from.is_none() {
                        pause.forgotten_from = Some(index);
                    }
                }
            }
            Event::RateGranted {
                starts,
                permits,
                sent_us,
                replied_us,
                ..
            } => {
                let within = pauses.iter().find(|p| {
                    p.starts == starts
                        && p.index < index
                        && p.forgotten_from.is_none_or(|from| index < from)
                        && *sent_us >= p.replied_us
                        && *replied_us < p.ends_us
                });
                if let Some(pause) = within {
                    violations.push(Violation {
                        invariant: Invariant::SlowDownHonoured,
                        task: None,
                        detail: format!(
                            "{starts}: permits [{}] granted at {} ms, within the pause applied at {} ms that runs until {} ms",
                            permits.join(","),
                            stamped.at_ms,
                            pause.at_ms,
                            pause.ends_us / 1000
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "agent:rate:starts:research";

    fn at(at_ms: u64, event: Event) -> Stamped {
        Stamped { at_ms, event }
    }

    fn slowed(at_ms: u64, pause_ms: u64, cancelled: bool) -> Stamped {
        at(
            at_ms,
            Event::SlowedDown {
                task: 1,
                call: 1,
                agent: "research".to_owned(),
                consumer: "research-0".to_owned(),
                pause_ms,
                cancelled,
            },
        )
    }

    fn paused_at(at_ms: u64, left_ms: u64) -> Stamped {
        at(
            at_ms,
            Event::RatePaused {
                starts: KEY.to_owned(),
                sent_us: at_ms * 1000,
                replied_us: at_ms * 1000,
                pause_ms: left_ms,
                left_ms,
            },
        )
    }

    fn granted(at_ms: u64) -> Stamped {
        at(
            at_ms,
            Event::RateGranted {
                starts: KEY.to_owned(),
                broker_ms: at_ms,
                lease_ms: 500,
                permits: vec![format!("p{at_ms}")],
                sent_us: at_ms * 1000,
                replied_us: at_ms * 1000,
            },
        )
    }

    fn judged(events: Vec<Stamped>) -> Vec<String> {
        let starts = [("research".to_owned(), KEY.to_owned())]
            .into_iter()
            .collect();
        let mut found = paused(&events, &starts, 200, 0);
        found.extend(honoured(&events));
        found.into_iter().map(|v| v.detail).collect()
    }

    #[test]
    fn a_slow_down_must_pause_its_agent_type_unless_its_call_was_lost() {
        let kept = vec![slowed(10, 100, false), paused_at(12, 100), granted(120)];
        assert_eq!(judged(kept), Vec::<String>::new());
        let ignored = vec![slowed(10, 100, false), granted(11)];
        let found = judged(ignored);
        assert!(found[0].contains("no pause of research"), "{found:?}");
        // Too short: it ends before the slow-down's end.
        let short = vec![slowed(10, 100, false), paused_at(12, 50)];
        assert_eq!(judged(short).len(), 1);
        // Cancelled: the worker pauses nothing.
        assert_eq!(judged(vec![slowed(10, 100, true)]), Vec::<String>::new());
        let lost = vec![
            slowed(10, 100, false),
            at(
                13,
                Event::Fault {
                    actor: "research-0".to_owned(),
                    seq: 7,
                    op: crate::Op::RatePause,
                    fault: crate::Fault::Before,
                },
            ),
        ];
        assert_eq!(judged(lost), Vec::<String>::new());
    }

    #[test]
    fn nothing_is_granted_while_a_pause_runs_unless_a_rollback_forgot_it() {
        let found = judged(vec![paused_at(10, 100), granted(50)]);
        assert!(found[0].contains("within the pause"), "{found:?}");
        // At its end (less the broker's ms), and before it: fine.
        let edges = vec![granted(10), paused_at(10, 100), granted(109), granted(110)];
        assert_eq!(judged(edges), Vec::<String>::new());
        let forgotten = vec![
            paused_at(10, 100),
            at(
                20,
                Event::RolledBack {
                    snapshot_ms: 5,
                    forgotten: Vec::new(),
                    unscheduled: Vec::new(),
                },
            ),
            granted(30),
        ];
        assert_eq!(judged(forgotten), Vec::<String>::new());
    }
}
