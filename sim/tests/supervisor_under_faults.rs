//! A supervisor whose reads lose their replies (the server delivered the
//! results, the supervisor never saw them) still gathers every result: the
//! next round reads its own pending entries first.

use std::time::Duration;

use crewq_core::producer::Producer;
use crewq_core::supervisor::{Supervisor, SupervisorOptions};
use crewq_core::worker::{HandlerError, Worker};
use crewq_core::{AgentType, Task};
use crewq_sim::{Fault, FaultConfig, FaultyBroker, Op, OpSet, memory_broker_on_virtual_time};
use serde_json::{Value, json};

#[tokio::test(start_paused = true)]
async fn a_gather_gets_the_results_of_reads_whose_reply_was_lost() {
    let inner = memory_broker_on_virtual_time();
    let worker = Worker::new(
        inner.clone(),
        AgentType::new("research").expect("agent"),
        "w1",
        |task: Task<Value>| async move { Ok::<Value, HandlerError>(json!({ "id": task.task_id })) },
    )
    .spawn();
    let lossy = FaultyBroker::new(
        inner,
        FaultConfig {
            seed: 3,
            error_after: 0.5,
            ops: OpSet::only([Op::ReadGroup]),
            ..FaultConfig::default()
        },
    );
    let options = SupervisorOptions::default().poll(Duration::from_millis(50));
    let supervisor =
        Supervisor::with_options("s1", Producer::new(lossy.clone()), options).expect("supervisor");
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            Task::new("research", "analyze", json!({ "n": n }))
                .task_id(format!("t{n}"))
                .build()
                .expect("task")
        })
        .collect();
    let fanned = supervisor.fan_out("trace-1", tasks).await.expect("fan out");
    let gathered = supervisor
        .gather(&fanned.workflow, Duration::from_secs(30))
        .await
        .expect("gather");
    assert!(gathered.is_complete(), "missing {:?}", gathered.missing);
    assert_eq!(gathered.results.len(), 20);
    assert!(
        lossy
            .faults()
            .iter()
            .any(|f| f.op == Op::ReadGroup && f.fault == Fault::After),
        "some read replies were lost"
    );
    worker
        .shutdown(Duration::from_secs(1))
        .await
        .expect("worker");
}
