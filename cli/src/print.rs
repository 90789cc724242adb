//! Everything `crewq` shows a person: tables, JSON, errors.

use std::error::Error;

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

/// An error and its causes, one per line.
pub fn error(err: &dyn Error) {
    eprintln!("error: {err}");
    let mut cause = err.source();
    while let Some(err) = cause {
        eprintln!("  caused by: {err}");
        cause = err.source();
    }
}
