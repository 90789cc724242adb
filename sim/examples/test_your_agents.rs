//! Testing your own agents under faults, without Redis.
//!
//! Two agent types with their own handlers and typed payloads run in a
//! scenario where workers crash, freeze past their lease, and broker calls
//! and handler calls fail. Every seed is checked: no task lost, dead letters
//! only after `max_retries`, nothing left pending. A failing seed prints the
//! violations and the fault plan; rerun it alone to debug it.
//!
//! ```sh
//! cargo run -p crewq-sim --example test_your_agents -- 50
//! ```

#![allow(clippy::print_stdout, reason = "an example prints its findings")]

use std::process::ExitCode;
use std::time::Duration;

use crewq_core::Task;
use crewq_core::worker::HandlerError;
use crewq_sim::{Campaign, Crew, FaultRates, Faults, Scenario, Simulation, run_campaign};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the research agent is asked.
#[derive(Deserialize)]
struct Research {
    topic: String,
}

/// What the report agent is asked.
#[derive(Deserialize)]
struct Report {
    pages: u32,
}

async fn research(task: Task<Research>) -> Result<Value, HandlerError> {
    // Stands in for a model call.
    tokio::time::sleep(Duration::from_millis(15)).await;
    Ok(json!({ "finding": format!("{} is well documented", task.payload.topic) }))
}

async fn report(task: Task<Report>) -> Result<Value, HandlerError> {
    if task.payload.pages > 40 {
        // A bug in this agent: long reports always fail. The simulation
        // shows them dead-lettered after their retries, never lost.
        return Err("report too long".into());
    }
    Ok(json!({ "pages": task.payload.pages }))
}

fn main() -> ExitCode {
    let seeds = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let crew = Crew::new()
        .agent("research", research)
        .agent("report", report)
        .workload(|n, agent| match agent {
            "research" => ("search".into(), json!({ "topic": format!("topic {n}") })),
            _ => ("write".into(), json!({ "pages": n % 50 })),
        });
    let scenario = Scenario::default()
        .tasks(60)
        .agent_types(["research", "report"])
        .workers(2)
        .max_retries(2)
        .faults(Faults::Rates(FaultRates::STANDARD));
    let simulation = Simulation::new(scenario, crew);

    let campaign = run_campaign(&simulation, &Campaign::new(1, seeds), |_| {});
    println!(
        "{} seeds, {} passed: {} tasks ok, {} dead-lettered, {} lost, {} stuck ({:.0} seeds/s)",
        campaign.seeds,
        campaign.passed,
        campaign.counts.ok,
        campaign.counts.dead_lettered,
        campaign.counts.lost,
        campaign.counts.stuck,
        campaign.seeds_per_sec()
    );
    for failure in &campaign.failures {
        println!("{failure}\n  plan: {}", failure.plan);
    }
    if campaign.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
