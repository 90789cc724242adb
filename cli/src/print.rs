//! Everything `crewq` shows a person: tables, JSON, errors.

use std::error::Error;

use crate::bench::BenchReport;
use crate::demo::DemoReport;
use crate::sim::{SimArgs, SimSummary};

/// `println!` for what crewq shows on stdout, except that a reader gone
/// away (`crewq demo | head -2`) ends the output quietly instead of
/// panicking (exit 101): see [`crate::out::emit`].
macro_rules! outln {
    () => {
        line(String::new())
    };
    ($($arg:tt)*) => {
        line(format!($($arg)*))
    };
}

/// Writes `text` and a newline to stdout; a write error other than a
/// closed pipe is said on stderr.
fn line(mut text: String) {
    text.push('\n');
    if let Err(err) = crate::out::emit(&text) {
        eprintln!("crewq: cannot write to stdout: {err}");
    }
}

/// The demo as readable tables.
pub fn demo_table(report: &DemoReport) {
    outln!("crewq demo: the research workflow on {}", report.backend);
    outln!("trace {}   keys under '{}'", report.trace_id, report.prefix);
    outln!();
    outln!(
        "{:<10} {:>6} {:>10} {:>9} {:>8} {:>8} {:>9}",
        "step",
        "tasks",
        "completed",
        "failed",
        "retried",
        "missing",
        "wall ms"
    );
    for step in &report.steps {
        outln!(
            "{:<10} {:>6} {:>10} {:>9} {:>8} {:>8} {:>9}",
            step.step,
            step.tasks,
            step.completed,
            step.failed,
            step.retried,
            step.missing,
            step.wall_ms
        );
    }
    outln!();
    outln!(
        "{:<18} {:>8} {:>8} {:>8}",
        "action",
        "results",
        "p50 ms",
        "max ms"
    );
    for action in &report.actions {
        outln!(
            "{:<18} {:>8} {:>8} {:>8}",
            action.action,
            action.results,
            action.p50_ms,
            action.max_ms
        );
    }
    outln!();
    outln!(
        "dispatched {}, completed {}, retried {}, dead-lettered {}, duplicates {}, missing {}",
        report.dispatched,
        report.completed,
        report.retried,
        report.dead_lettered,
        report.duplicates,
        report.missing
    );
}

/// The demo as one JSON object.
pub fn demo_json(report: &DemoReport) {
    match serde_json::to_string(report) {
        Ok(json) => outln!("{json}"),
        Err(err) => error(&err),
    }
}

/// A bench run as a few lines of text.
pub fn bench_text(report: &BenchReport) {
    let mode = match report.rate {
        Some(rate) => format!("open loop at {rate:.0} tasks/s"),
        None => "closed loop".to_owned(),
    };
    outln!("crewq bench on {}: {mode}", report.backend);
    outln!(
        "{} tasks in {:.3} s: {:.0} tasks/s",
        report.tasks,
        report.seconds,
        report.tasks_per_sec
    );
    outln!(
        "dispatch -> handler start: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        report.p50_us,
        report.p99_us,
        report.p999_us,
        report.max_us
    );
    if let Some(lag) = report.max_schedule_lag_us {
        outln!("largest lag behind the dispatch schedule: {lag} us");
    }
    outln!(
        "{} agent type(s), {} producer(s), {} worker(s) per type x {} concurrent, batches of {}, \
         payload ~{} B, dedupe window {} s, retention {}",
        report.agent_types,
        report.producers,
        report.workers,
        report.concurrency,
        report.batch,
        report.payload_bytes,
        report.dedupe_window_secs,
        report.retention
    );
    if let Some(replicas) = report.wait_replicas {
        outln!("each dispatch waited for {replicas} replica(s) (WAIT)");
    }
    if report.handler_ms > 0 {
        outln!("each successful attempt took {} ms", report.handler_ms);
    }
    if let Some(limit) = &report.rate_limit {
        outln!("shared rate limit: {limit}");
    }
    if report.fail_rate > 0.0 {
        outln!(
            "fail rate {}: {} first attempts failed, {} retried; {} steady tasks at {:.0} tasks/s, \
             every attempt at {:.0}/s",
            report.fail_rate,
            report.failed_attempts,
            report.retried,
            report.steady_tasks,
            report.steady_per_sec,
            report.attempts_per_sec
        );
    }
    let mb = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} MiB"));
    outln!(
        "peak RSS: crewq {}, redis-server {}",
        mb(report.peak_rss_mb),
        mb(report.redis_peak_rss_mb)
    );
}

/// A bench run as one JSON object.
pub fn bench_json(report: &BenchReport) {
    match serde_json::to_string(report) {
        Ok(json) => outln!("{json}"),
        Err(err) => error(&err),
    }
}

/// An error and its causes, one per line.
pub fn error(err: &dyn Error) {
    for line in error_lines(err) {
        eprintln!("{line}");
    }
}

/// An error and its causes, one line each. Error types that repeat their
/// source's text in their own would print the same line twice: each thing
/// is said once.
fn error_lines(err: &dyn Error) -> Vec<String> {
    let mut shown = err.to_string();
    let mut lines = vec![format!("error: {shown}")];
    let mut cause = err.source();
    while let Some(err) = cause {
        let text = err.to_string();
        if !shown.contains(&text) {
            lines.push(format!("  caused by: {text}"));
        }
        shown = text;
        cause = err.source();
    }
    lines
}

/// What `crewq sim` found, as text; failures (with the command that
/// replays each) on stderr.
pub fn sim_text(args: &SimArgs, summary: &SimSummary) {
    if let Some(history) = &summary.history {
        // `crewq sim --trace ... | head`: a reader that stopped reading wants
        // no summary either (and `println!` would panic on the closed pipe).
        if crate::out::emit(history).is_err() || crate::out::closed() {
            return;
        }
    }
    let failed = summary.seeds - summary.passed;
    // Campaigns on Redis run in real time: fractions matter there.
    let precision = if summary.seeds_per_sec < 10.0 { 2 } else { 0 };
    outln!(
        "crewq sim on {}: {} seed(s), {} passed, {} failed ({:.*} seeds/s)",
        summary.backend,
        summary.seeds,
        summary.passed,
        failed,
        precision,
        summary.seeds_per_sec
    );
    outln!(
        "tasks: {} ok, {} duplicated, {} dead-lettered, {} lost, {} stuck, {} unexpected; {} violation(s)",
        summary.counts.ok,
        summary.counts.duplicated,
        summary.counts.dead_lettered,
        summary.counts.lost,
        summary.counts.stuck,
        summary.counts.unexpected,
        summary.violations
    );
    let c = &summary.counts;
    if c.lost_to_trim + c.lost_to_rollback + c.lost_to_delete + c.replayed > 0 {
        // What a setting or an operator's command outside crewq cost: not
        // crewq's violations, but never counted silently.
        outln!(
            "reported apart: {} lost to trims that cut unread entries, {} lost to broker rollbacks (writes the broker acknowledged, then forgot), {} lost to task streams deleted (DEL), {} replayed after their group was destroyed",
            c.lost_to_trim,
            c.lost_to_rollback,
            c.lost_to_delete,
            c.replayed
        );
    }
    if !summary.hits.is_empty() {
        let hits: Vec<String> = summary
            .hits
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        outln!("faults fired: {}", hits.join(", "));
    }
    if let Some(hash) = &summary.trace_hash {
        outln!("trace {hash}");
    }
    const SEEDS_SHOWN: usize = 5;
    const VIOLATIONS_SHOWN: usize = 6;
    for report in summary.failures.iter().take(SEEDS_SHOWN) {
        let c = &report.counts;
        eprintln!(
            "FAILED seed {}: {} ok, {} duplicated, {} dead-lettered, {} lost, {} stuck, {} unexpected",
            report.seed, c.ok, c.duplicated, c.dead_lettered, c.lost, c.stuck, c.unexpected
        );
        for violation in report.violations.iter().take(VIOLATIONS_SHOWN) {
            eprintln!("  {violation}");
        }
        if report.violations.len() > VIOLATIONS_SHOWN {
            eprintln!(
                "  ... and {} more",
                report.violations.len() - VIOLATIONS_SHOWN
            );
        }
        eprintln!("  plan: {}", report.plan);
        eprintln!("  replay: {}", crate::sim::replay(args, report.seed));
    }
    if summary.failures.len() > SEEDS_SHOWN {
        eprintln!(
            "... and {} more failing seed(s)",
            summary.failing_seeds.len() - SEEDS_SHOWN
        );
    }
    for divergence in &summary.divergences {
        eprintln!("DIVERGED {divergence}");
    }
    for err in &summary.errors {
        eprintln!("ERROR {err}");
    }
    if let Some(replay) = summary.replay.as_ref().filter(|_| !summary.passed()) {
        eprintln!("first failing seed: {replay}");
    }
}

/// What `crewq sim` found, as one JSON object.
pub fn sim_json(summary: &SimSummary) {
    match serde_json::to_string(summary) {
        Ok(json) => outln!("{json}"),
        Err(err) => error(&err),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error whose text includes its source's, as redis-rs's do.
    #[derive(Debug)]
    struct Wrapping(&'static str, Option<Box<Wrapping>>);

    impl fmt::Display for Wrapping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapping {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let refused = || Wrapping("Connection refused (os error 111)", None);
        let err = Wrapping(
            "connect on 'redis://127.0.0.1:1': Connection refused (os error 111)",
            Some(Box::new(Wrapping(
                "Connection refused (os error 111)",
                Some(Box::new(refused())),
            ))),
        );
        assert_eq!(
            error_lines(&err),
            ["error: connect on 'redis://127.0.0.1:1': Connection refused (os error 111)"]
        );
        let new = Wrapping("dispatch failed", Some(Box::new(refused())));
        assert_eq!(
            error_lines(&new),
            [
                "error: dispatch failed",
                "  caused by: Connection refused (os error 111)"
            ]
        );
    }
}
