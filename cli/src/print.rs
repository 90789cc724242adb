//! Everything `crewq` shows a person: tables, JSON, errors.

use std::error::Error;

use crate::bench::BenchReport;
use crate::demo::DemoReport;

/// The demo as readable tables.
pub fn demo_table(report: &DemoReport) {
    println!("crewq demo: the research workflow on {}", report.backend);
    println!("trace {}   keys under '{}'", report.trace_id, report.prefix);
    println!();
    println!(
        "{:<10} {:>6} {:>10} {:>9} {:>8} {:>8} {:>9}",
        "step", "tasks", "completed", "failed", "retried", "missing", "wall ms"
    );
    for step in &report.steps {
        println!(
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
    println!();
    println!(
        "{:<18} {:>8} {:>8} {:>8}",
        "action", "results", "p50 ms", "max ms"
    );
    for action in &report.actions {
        println!(
            "{:<18} {:>8} {:>8} {:>8}",
            action.action, action.results, action.p50_ms, action.max_ms
        );
    }
    println!();
    println!(
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
        Ok(json) => println!("{json}"),
        Err(err) => error(&err),
    }
}

/// A bench run as a few lines of text.
pub fn bench_text(report: &BenchReport) {
    let mode = match report.rate {
        Some(rate) => format!("open loop at {rate:.0} tasks/s"),
        None => "closed loop".to_owned(),
    };
    println!("crewq bench on {}: {mode}", report.backend);
    println!(
        "{} tasks in {:.3} s: {:.0} tasks/s",
        report.tasks, report.seconds, report.tasks_per_sec
    );
    println!(
        "dispatch -> handler start: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        report.p50_us, report.p99_us, report.p999_us, report.max_us
    );
    if let Some(lag) = report.max_schedule_lag_us {
        println!("largest lag behind the dispatch schedule: {lag} us");
    }
    println!(
        "{} producer(s), {} worker(s) x {} concurrent, batches of {}, payload ~{} B, \
         dedupe window {} s, retention {}",
        report.producers,
        report.workers,
        report.concurrency,
        report.batch,
        report.payload_bytes,
        report.dedupe_window_secs,
        report.retention
    );
    let mb = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} MiB"));
    println!(
        "peak RSS: crewq {}, redis-server {}",
        mb(report.peak_rss_mb),
        mb(report.redis_peak_rss_mb)
    );
}

/// A bench run as one JSON object.
pub fn bench_json(report: &BenchReport) {
    match serde_json::to_string(report) {
        Ok(json) => println!("{json}"),
        Err(err) => error(&err),
    }
}

/// An error and its causes, one per line.
pub fn error(err: &dyn Error) {
    eprintln!("error: {err}");
    let mut cause = err.source();
    while let Some(err) = cause {
        eprintln!("  caused by: {err}");
        cause = err.source();
    }
}
