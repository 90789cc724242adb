//! An application exporting crewq's metrics from its own process with
//! `metrics-exporter-prometheus`: it installs the recorder, runs a worker
//! on the in-memory broker, and renders what a Prometheus scrape of it
//! would read (an application serves that text on its own `/metrics`).
//!
//! ```text
//! cargo run -p crewq-core --example prometheus
//! ```
//!
//! The worker records its counters (`crewq_tasks_completed_total` ...) and
//! two histograms: `crewq_handler_duration_seconds` (by agent type and
//! outcome) and `crewq_queue_wait_seconds` (dispatch to start, by agent
//! type). Histograms are rendered with buckets only when given bounds
//! ([`SECONDS_BUCKETS`] suits both); without, the exporter writes summaries.
//!
//! This is how a worker process's metrics reach Prometheus: they are
//! recorded in the process that runs the worker, so `crewq serve` (another
//! process, which runs none) has the queue gauges but never these.

// An example's job is printing what it made.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use crewq_core::metrics::SECONDS_BUCKETS;
use crewq_core::producer::Producer;
use crewq_core::worker::{HandlerError, Worker};
use crewq_core::{AgentType, Task};
use crewq_memory::MemoryBroker;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Once per process, before the crew starts: metrics recorded before it
    // go nowhere.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install_recorder()?;
    crewq_core::metrics::describe();

    let broker = MemoryBroker::new();
    let research = AgentType::new("research")?;
    let worker = Worker::new(
        broker.clone(),
        research,
        "worker-1",
        |task: Task| async move {
            if task.payload["fail"] == json!(true) {
                return Err::<Value, HandlerError>("the model refused".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(json!({ "summary": "..." }))
        },
    )
    .spawn();

    let producer = Producer::new(broker.clone());
    for n in 0..5 {
        let payload = json!({ "query": format!("question {n}"), "fail": n == 4 });
        let task = Task::new("research", "search", payload)
            .max_retries(0)
            .build()?;
        producer.dispatch(&task).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.shutdown(Duration::from_secs(5)).await?;

    // What GET /metrics would answer.
    print!("{}", prometheus.render());
    Ok(())
}
