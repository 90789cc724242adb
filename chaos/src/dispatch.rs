//! The producer side: tasks with known ids, dispatched through the real
//! [`Producer`] with its default retention and dedupe window, retried until
//! acknowledged (safe: the dedupe window turns a retried append into a
//! duplicate), so "dispatched" means "acknowledged to the producer".

use std::collections::BTreeMap;
use std::time::Duration;

use crewq_core::producer::{Producer, Retention};
use crewq_core::{AgentType, Broker, DEFAULT_MAX_RETRIES, GroupStart, Keyspace, Task};
use crewq_redis::{RedisBroker, RedisConfig};
use serde_json::Value;
use tokio::time::Instant;

use crate::worker::{Mode, Plan, mix};

/// The suite's one agent type.
pub const AGENT: &str = "work";

/// The group on the results stream that stands for the accounting's reader.
const ACCOUNTING_GROUP: &str = "chaos-accounting";

/// How long one batch may take before it is sent again.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The `n`th task of scenario `scenario`: 4% always fail, 20% are flaky
/// (30% of runs fail), the rest succeed; each works between `min_sleep_ms`
/// and `max_sleep_ms`. Of the tasks that succeed, a tenth have
/// `max_retries` 0 and a tenth 1; every other task has the default 3.
///
/// # Errors
///
/// Never for the names the suite uses; a bad agent type would be one.
pub fn task(scenario: &str, n: u64, min_sleep_ms: u64, max_sleep_ms: u64) -> Result<Task, String> {
    let task_id = format!("{scenario}-{n:07}");
    let (mode, fail_pct) = match n % 25 {
        0 => (Mode::Fail, 100),
        1..=5 => (Mode::Flaky, 30),
        _ => (Mode::Ok, 0),
    };
    let spread = max_sleep_ms.saturating_sub(min_sleep_ms) + 1;
    let plan = Plan {
        mode,
        sleep_ms: min_sleep_ms + mix(&task_id, 0) % spread,
        fail_pct,
    };
    // Some tasks that always succeed may not be retried at all, some once:
    // a delivery that ends without an outcome must not burn what little
    // they have. (Only those: a flaky task whose success died with its
    // SIGKILLed worker may then fail for good, legitimately.)
    let max_retries = match (mode, n % 10) {
        (Mode::Ok, 3) => 0,
        (Mode::Ok, 4) => 1,
        _ => DEFAULT_MAX_RETRIES,
    };
    Task::new(AGENT, "chaos", plan.to_payload())
        .task_id(task_id)
        .max_retries(max_retries)
        .build()
        .map_err(|e| e.to_string())
}

/// A producer that keeps what was acknowledged.
pub struct Dispatcher {
    producer: Producer<RedisBroker>,
    /// Acknowledged task ids, with their `max_retries`.
    pub acked: BTreeMap<String, u32>,
    /// Batches sent again after an error or a time-out.
    pub resent: u64,
}

impl Dispatcher {
    /// Connects (waiting up to `wait` for Redis) a producer with the
    /// product's defaults, or with `retention` when given.
    ///
    /// # Errors
    ///
    /// When Redis stays unreachable, or the prefix is invalid.
    pub async fn connect(
        url: &str,
        prefix: &str,
        retention: Option<Retention>,
        wait: Duration,
    ) -> Result<Dispatcher, String> {
        let keyspace = Keyspace::default()
            .with_prefix(prefix)
            .map_err(|e| e.to_string())?;
        let broker = RedisConfig::new(url)
            .wait_for_server(wait)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        // The accounting reads every result, as a supervisor would: like a
        // supervisor it has a group on the results stream, so the default
        // results retention keeps what it has not gathered (it reads the
        // stream with XRANGE, never through the group, so nothing is
        // trimmed).
        let agent = AgentType::new(AGENT).map_err(|e| e.to_string())?;
        let results = keyspace.keys(&agent).results;
        match broker
            .group_create(&results, ACCOUNTING_GROUP, GroupStart::BEGINNING, true)
            .await
        {
            Ok(()) | Err(crewq_core::Error::GroupExists { .. }) => {}
            Err(err) => return Err(format!("creating the accounting group: {err}")),
        }
        let mut producer = Producer::new(broker).with_keyspace(keyspace);
        if let Some(retention) = retention {
            producer = producer.with_retention(retention);
        }
        Ok(Dispatcher {
            producer,
            acked: BTreeMap::new(),
            resent: 0,
        })
    }

    /// Dispatches `tasks` in one batch, sending what is not acknowledged
    /// again until `deadline`; returns how many stayed unacknowledged.
    pub async fn dispatch(&mut self, tasks: &[Task<Value>], deadline: Instant) -> usize {
        let mut left: Vec<&Task<Value>> = tasks.iter().collect();
        while !left.is_empty() {
            let batch: Vec<Task<Value>> = left.iter().map(|t| (*t).clone()).collect();
            let reply =
                tokio::time::timeout(BATCH_TIMEOUT, self.producer.dispatch_batch(&batch)).await;
            if let Ok(Ok(results)) = reply {
                let mut still = Vec::new();
                for (task, result) in left.iter().zip(results) {
                    match result {
                        Ok(done) => {
                            self.acked.insert(done.task_id, task.max_retries);
                        }
                        Err(_) => still.push(*task),
                    }
                }
                left = still;
            }
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return left.len();
            }
            self.resent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_reproducible_and_mixed() {
        let a = task("s", 7, 0, 100).expect("task");
        let b = task("s", 7, 0, 100).expect("task");
        assert_eq!(a.task_id, "s-0000007");
        assert_eq!(a.payload, b.payload);
        let modes: Vec<Mode> = (0..25)
            .map(|n| Plan::from_payload(&task("s", n, 0, 0).expect("task").payload).mode)
            .collect();
        assert_eq!(modes.iter().filter(|m| **m == Mode::Fail).count(), 1);
        assert_eq!(modes.iter().filter(|m| **m == Mode::Flaky).count(), 5);
    }
}
