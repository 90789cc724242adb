//! [`Invariant::RateLimitKept`]: an agent type's shared rate limit is
//! never exceeded, in virtual time.
//!
//! What the broker guarantees is about permits: no window of the limit's
//! length holds more than N grants (on the broker's clock), and at no
//! instant are more than M running permits unexpired. The worker's part is
//! that every handler run holds a permit of its own, granted before it
//! starts. Judged from the history (`RateGranted`, `RateReleased`,
//! `HandlerStarted`/`RunPermit`/`HandlerEnded`, `RolledBack`), per agent
//! type with a limit:
//!
//! - every handler run holds a permit, granted to its agent type at or
//!   before the run's start, never given back unused, and used by no other
//!   run;
//! - no window of the limit's length holds more than N grants, counting
//!   every grant not given back unused;
//! - at no run's start are more than M runs in progress whose permits are
//!   still valid: granted, not released, and younger than one lease
//!   (renewals are not followed: a longer run's permit may have been
//!   renewed, or may have expired while its worker was frozen, a zombie
//!   outside the limit; the check counts it only for its first lease,
//!   where it is valid for sure).
//!
//! A broker rollback forgets the grants it took back, and grants more in
//! their place: grants made between a rollback's snapshot and the rollback
//! (from the snapshot's ms on, since the history cannot tell which of that
//! ms's grants the snapshot saw) are left out of both counts, as the
//! broker's promise does not cover them.

use std::collections::BTreeMap;

use crewq_core::RateLimit;

use crate::Scenario;
use crate::history::{Event, History};
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

/// One granted permit.
struct Grant {
    /// The rate limit's log of starts: the agent type's.
    starts: String,
    /// On the broker's clock.
    broker_ms: u64,
    /// On the history's clock.
    at_ms: u64,
    lease_ms: u64,
    /// Taken back by a rollback.
    forgotten: bool,
    /// Given back unused.
    unused: bool,
    /// When a release ended it (finished or unused).
    released_ms: Option<u64>,
}

impl Grant {
    /// Valid for sure at `t` (history ms): see the module's docs.
    fn valid_at(&self, t: u64) -> bool {
        !self.forgotten
            && self.at_ms <= t
            && t < self.at_ms.saturating_add(self.lease_ms)
            && self.released_ms.is_none_or(|r| t < r)
    }
}

/// One handler call.
struct Run {
    agent: String,
    start_ms: u64,
    end_ms: Option<u64>,
    permit: Option<String>,
}

/// The violations of [`Invariant::RateLimitKept`] in `record`'s history.
pub(super) fn check(scenario: &Scenario, seed: u64, record: &RunRecord) -> Vec<Violation> {
    let limits = scenario.rate_limits_for(seed);
    if limits.is_empty() {
        return Vec::new();
    }
    judge(&limits, &record.rate_starts, &record.history, &|task| {
        scenario.agent_of(task).to_owned()
    })
}

/// The violations in `history` of `limits` (by agent type, whose logs of
/// starts are `starts`), task `i` being of agent type `agent_of(i)`.
fn judge(
    limits: &BTreeMap<String, RateLimit>,
    starts: &BTreeMap<String, String>,
    history: &History,
    agent_of: &dyn Fn(u32) -> String,
) -> Vec<Violation> {
    let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
    let mut runs: BTreeMap<(u32, u32), Run> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut violate = |task: Option<u32>, detail: String| {
        violations.push(Violation {
            invariant: Invariant::RateLimitKept,
            task,
            detail,
        });
    };
    for stamped in history.events() {
        let t = stamped.at_ms;
        match &stamped.event {
            Event::RateGranted {
                starts,
                broker_ms,
                lease_ms,
                permits,
                ..
            } => {
                for permit in permits {
                    let grant = Grant {
                        starts: starts.clone(),
                        broker_ms: *broker_ms,
                        at_ms: t,
                        lease_ms: *lease_ms,
                        forgotten: false,
                        unused: false,
                        released_ms: None,
                    };
                    if grants.insert(permit.clone(), grant).is_some() {
                        violate(None, format!("permit {permit} granted twice"));
                    }
                }
            }
            Event::RateReleased {
                finished, unused, ..
            } => {
                for (permit, is_unused) in finished
                    .iter()
                    .map(|p| (p, false))
                    .chain(unused.iter().map(|p| (p, true)))
                {
                    if let Some(grant) = grants.get_mut(permit) {
                        grant.unused |= is_unused;
                        grant.released_ms.get_or_insert(t);
                    }
                }
            }
            Event::RolledBack { snapshot_ms, .. } => {
                // A grant in the snapshot's own ms may have come after it
                // (swarm seed 346: one at 2323 ms, snapshot at 2323 ms, then
                // granted again in its place): counted as taken back.
                for grant in grants.values_mut() {
                    if grant.at_ms >= *snapshot_ms {
                        grant.forgotten = true;
                    }
                }
            }
            Event::HandlerStarted { task, call, .. } => {
                let agent = agent_of(*task);
                runs.insert(
                    (*task, *call),
                    Run {
                        agent,
                        start_ms: t,
                        end_ms: None,
                        permit: None,
                    },
                );
            }
            Event::RunPermit { task, call, permit } => {
                if let Some(run) = runs.get_mut(&(*task, *call)) {
                    run.permit = Some(permit.clone());
                }
            }
            Event::HandlerEnded { task, call, .. } => {
                if let Some(run) = runs.get_mut(&(*task, *call)) {
                    run.end_ms.get_or_insert(t);
                }
            }
            _ => {}
        }
    }
    let mut used: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (&(task, call), run) in &runs {
        if !limits.contains_key(&run.agent) {
            continue;
        }
        let Some(permit) = run.permit.as_deref() else {
            violate(
                Some(task),
                format!(
                    "call {call} of task {task} ({}) ran at {} ms without a rate permit",
                    run.agent, run.start_ms
                ),
            );
            continue;
        };
        let Some(grant) = grants.get(permit) else {
            violate(
                Some(task),
                format!("call {call} of task {task} ran under permit {permit}, never granted"),
            );
            continue;
        };
        if starts.get(&run.agent) != Some(&grant.starts) {
            violate(
                Some(task),
                format!(
                    "permit {permit} of {} used by a run of {}",
                    grant.starts, run.agent
                ),
            );
        }
        if grant.at_ms > run.start_ms || grant.unused {
            violate(
                Some(task),
                format!(
                    "call {call} of task {task} ran at {} ms under permit {permit}, granted at {} ms{}",
                    run.start_ms,
                    grant.at_ms,
                    if grant.unused {
                        " and given back unused"
                    } else {
                        ""
                    }
                ),
            );
        }
        if let Some(first) = used.insert(permit, (task, call)) {
            violate(
                Some(task),
                format!("permit {permit} used by call {call} of task {task} and by {first:?}"),
            );
        }
    }
    for (agent, limit) in limits {
        let Some(starts) = starts.get(agent) else {
            continue;
        };
        if let Some(detail) = over_window(&grants, starts, limit) {
            violate(None, format!("{agent}: {detail}"));
        }
        if let Some(detail) = over_running(&runs, &grants, agent, limit) {
            violate(None, format!("{agent}: {detail}"));
        }
    }
    violations
}

/// The first window of the limit's length holding more than N counted
/// grants of `starts`, if any.
fn over_window(
    grants: &BTreeMap<String, Grant>,
    starts: &str,
    limit: &RateLimit,
) -> Option<String> {
    let (n, _) = limit.starts?;
    let window = limit.window_ms()?;
    let mut at: Vec<u64> = grants
        .values()
        .filter(|g| g.starts == starts && !g.forgotten && !g.unused)
        .map(|g| g.broker_ms)
        .collect();
    at.sort_unstable();
    let mut from = 0;
    for to in 0..at.len() {
        while at[to] - at[from] >= window {
            from += 1;
        }
        if to + 1 - from > n as usize {
            return Some(format!(
                "{} grants in the {window} ms from {} ms (broker clock); the limit is {n}",
                to + 1 - from,
                at[from]
            ));
        }
    }
    None
}

/// The first run start at which more than M runs of `agent` held valid
/// permits, if any.
fn over_running(
    runs: &BTreeMap<(u32, u32), Run>,
    grants: &BTreeMap<String, Grant>,
    agent: &str,
    limit: &RateLimit,
) -> Option<String> {
    let m = limit.running? as usize;
    let valid = |run: &Run, t: u64| {
        run.agent == agent
            && run.start_ms <= t
            && run.end_ms.is_none_or(|end| t < end)
            && run
                .permit
                .as_ref()
                .and_then(|p| grants.get(p))
                .is_some_and(|g| g.valid_at(t))
    };
    for run in runs.values().filter(|r| r.agent == agent) {
        let t = run.start_ms;
        let holding = runs.values().filter(|r| valid(r, t)).count();
        if holding > m {
            return Some(format!(
                "{holding} runs with valid permits at {t} ms; the limit is {m} running"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::Stamped;

    const KEY: &str = "agent:rate:starts:research";

    fn limits(limit: RateLimit) -> BTreeMap<String, RateLimit> {
        [("research".to_owned(), limit)].into_iter().collect()
    }

    fn granted(at_ms: u64, permits: &[&str]) -> Stamped {
        Stamped {
            at_ms,
            event: Event::RateGranted {
                starts: KEY.to_owned(),
                broker_ms: 1000 + at_ms,
                lease_ms: 500,
                permits: permits.iter().map(|p| (*p).to_owned()).collect(),
                sent_us: at_ms * 1000,
                replied_us: at_ms * 1000,
            },
        }
    }

    /// A rollback at `at_ms` to the snapshot of `snapshot_ms`.
    fn rollback(at_ms: u64, snapshot_ms: u64) -> Stamped {
        Stamped {
            at_ms,
            event: Event::RolledBack {
                snapshot_ms,
                forgotten: Vec::new(),
                unscheduled: Vec::new(),
            },
        }
    }

    /// Call 1 of `task` from `start` to `end` under `permit`.
    fn run(task: u32, start: u64, end: u64, permit: Option<&str>) -> Vec<Stamped> {
        let mut events = vec![Stamped {
            at_ms: start,
            event: Event::HandlerStarted {
                task,
                consumer: "w".to_owned(),
                call: 1,
                entry: None,
            },
        }];
        if let Some(permit) = permit {
            events.push(Stamped {
                at_ms: start,
                event: Event::RunPermit {
                    task,
                    call: 1,
                    permit: permit.to_owned(),
                },
            });
        }
        events.push(Stamped {
            at_ms: end,
            event: Event::HandlerEnded {
                task,
                consumer: "w".to_owned(),
                call: 1,
                ok: true,
            },
        });
        events
    }

    fn judged(limit: RateLimit, events: Vec<Vec<Stamped>>) -> Vec<String> {
        let mut events: Vec<Stamped> = events.into_iter().flatten().collect();
        events.sort_by_key(|e| e.at_ms);
        let starts = [("research".to_owned(), KEY.to_owned())]
            .into_iter()
            .collect();
        judge(
            &limits(limit),
            &starts,
            &History::from_events(events),
            &|_| "research".to_owned(),
        )
        .into_iter()
        .map(|v| v.detail)
        .collect()
    }

    #[test]
    fn runs_within_the_limit_pass_and_each_breach_is_found() {
        let limit = RateLimit::new()
            .starts(2, Duration::from_millis(100))
            .running(2);
        let fine = vec![
            vec![granted(0, &["a", "b"])],
            run(1, 1, 50, Some("a")),
            run(2, 1, 50, Some("b")),
            vec![granted(100, &["c"])],
            run(3, 100, 120, Some("c")),
        ];
        assert_eq!(judged(limit, fine), Vec::<String>::new());

        let no_permit = vec![
            vec![granted(0, &["a"])],
            run(1, 1, 5, Some("a")),
            run(2, 1, 5, None),
        ];
        let found = judged(limit, no_permit);
        assert!(found[0].contains("without a rate permit"), "{found:?}");

        let twice = vec![
            vec![granted(0, &["a"])],
            run(1, 1, 5, Some("a")),
            run(2, 6, 9, Some("a")),
        ];
        assert!(judged(limit, twice)[0].contains("used by"));

        let crowded = vec![vec![granted(0, &["a", "b"])], vec![granted(99, &["c"])]];
        let found = judged(limit, crowded);
        assert!(
            found.iter().any(|d| d.contains("3 grants in the 100 ms")),
            "{found:?}"
        );

        let running = vec![
            vec![granted(0, &["a", "b"]), granted(200, &["c"])],
            run(1, 1, 400, Some("a")),
            run(2, 1, 400, Some("b")),
            run(3, 201, 210, Some("c")),
        ];
        let found = judged(limit, running);
        assert!(
            found
                .iter()
                .any(|d| d.contains("3 runs with valid permits")),
            "{found:?}"
        );
    }

    #[test]
    fn grants_a_rollback_took_back_and_expired_permits_are_not_counted() {
        let limit = RateLimit::new()
            .starts(1, Duration::from_millis(100))
            .running(1);
        let rolled_back = vec![
            vec![granted(10, &["a"])],
            vec![rollback(20, 5)],
            vec![granted(30, &["b"])],
            run(1, 11, 15, Some("a")),
            run(2, 31, 40, Some("b")),
        ];
        assert_eq!(judged(limit, rolled_back), Vec::<String>::new());
        // A grant in the snapshot's own ms: the snapshot may not have seen
        // it (swarm seed 346).
        let same_ms = vec![
            vec![granted(5, &["a"])],
            vec![rollback(20, 5)],
            vec![granted(30, &["b"])],
        ];
        assert_eq!(judged(limit, same_ms), Vec::<String>::new());
        // A run past its permit's lease (a zombie) is outside the M.
        let zombie = vec![
            vec![granted(0, &["a"])],
            run(1, 1, 2000, Some("a")),
            vec![granted(600, &["b"])],
            run(2, 601, 610, Some("b")),
        ];
        assert_eq!(judged(limit, zombie), Vec::<String>::new());
    }
}
