//! Many seeds at once: a campaign spread over threads, each seed its own
//! deterministic run on its own runtime.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hits::{self, Hits};
use crate::report::{Counts, Report};
use crate::simulation::{DoubleRun, Simulation};

/// Failing reports a campaign keeps in full; the rest are only counted.
pub const KEPT_FAILURES: usize = 100;

/// Which seeds, on how many threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Campaign {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds, from the first.
    pub seeds: u64,
    /// Threads (at least 1).
    pub jobs: usize,
}

impl Campaign {
    /// `seeds` seeds from `first_seed` on every core.
    pub fn new(first_seed: u64, seeds: u64) -> Self {
        let jobs = std::thread::available_parallelism().map_or(1, usize::from);
        Campaign {
            first_seed,
            seeds,
            jobs,
        }
    }

    /// On `jobs` threads.
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }
}

/// What a campaign found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CampaignReport {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose every invariant held.
    pub passed: u64,
    /// Tasks per class, over every seed.
    pub counts: Counts,
    /// Violations, over every seed.
    pub violations: u64,
    /// How often each fault class fired, over every seed that ran: a class
    /// at 0 (or missing) was never reached.
    pub hits: Hits,
    /// Failing seeds' reports, the first [`KEPT_FAILURES`] in seed order.
    pub failures: Vec<Report>,
    /// Seeds that could not run, with why.
    pub errors: Vec<(u64, String)>,
    /// Wall-clock time of the campaign.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

impl CampaignReport {
    /// Whether every seed ran and passed.
    pub fn passed(&self) -> bool {
        self.passed == self.seeds && self.errors.is_empty()
    }

    /// Seeds per second of wall-clock time.
    pub fn seeds_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.seeds as f64 / secs
        } else {
            0.0
        }
    }

    /// Counts one seed's outcome in: its report, or why it could not run.
    pub fn add(&mut self, seed: u64, report: Result<Report, String>) {
        self.seeds += 1;
        match report {
            Ok(report) => {
                self.counts.merge(&report.counts);
                hits::merge(&mut self.hits, &report.hits);
                self.violations += report.violations.len() as u64;
                if report.passed() {
                    self.passed += 1;
                } else {
                    self.failures.push(report);
                    self.failures.sort_by_key(|r| r.seed);
                    self.failures.truncate(KEPT_FAILURES);
                }
            }
            Err(err) => {
                self.errors.push((seed, err));
                self.errors.sort();
            }
        }
    }
}

/// Runs every seed of `campaign`, calling `progress` with each report as it
/// comes (in completion order, on the calling thread).
pub fn run_campaign(
    simulation: &Simulation,
    campaign: &Campaign,
    mut progress: impl FnMut(&Result<Report, String>),
) -> CampaignReport {
    let started = Instant::now();
    let mut report = CampaignReport::default();
    for_each_seed(
        campaign,
        |seed| simulation.run(seed).map_err(|e| e.to_string()),
        |seed, result| {
            progress(&result);
            report.add(seed, result);
        },
    );
    report.elapsed = started.elapsed();
    report
}

/// Runs every seed of `campaign` twice, checking each run and comparing
/// the two histories ([`Simulation::double_run`]), returning each seed's
/// outcome in seed order, or why it could not run.
pub fn double_run_campaign(
    simulation: &Simulation,
    campaign: &Campaign,
    mut progress: impl FnMut(u64),
) -> Vec<(u64, Result<DoubleRun, String>)> {
    let mut results = Vec::new();
    for_each_seed(
        campaign,
        |seed| simulation.double_run(seed).map_err(|e| e.to_string()),
        |seed, result| {
            progress(seed);
            results.push((seed, result));
        },
    );
    results.sort_by_key(|(seed, _)| *seed);
    results
}

/// Runs `run` for every seed on `campaign.jobs` threads, handing each
/// result to `done` on the calling thread. A seed whose run panics gives
/// an error, not a dead campaign.
fn for_each_seed<T: Send>(
    campaign: &Campaign,
    run: impl Fn(u64) -> Result<T, String> + Sync,
    mut done: impl FnMut(u64, Result<T, String>),
) {
    let next = AtomicU64::new(0);
    let (send, receive) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..campaign.jobs.max(1) {
            let (send, next, run) = (send.clone(), &next, &run);
            scope.spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= campaign.seeds {
                        return;
                    }
                    let seed = campaign.first_seed.wrapping_add(n);
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(seed)))
                        .unwrap_or_else(|panic| Err(format!("the run panicked: {}", text(&panic))));
                    if send.send((seed, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(send);
        for (seed, result) in receive {
            done(seed, result);
        }
    });
}

fn text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_owned())
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(elapsed.as_secs_f64())
}
