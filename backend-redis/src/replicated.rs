//! Appends that wait for replicas: the opt-in of
//! [`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas).
//!
//! `WAIT n ms` counts the replicas that acknowledged every write made so
//! far *on the connection it is sent on*, so it must follow the appends on
//! their own connection: on one server, in the same pipeline; on a
//! cluster, at the end of each per-slot pipeline, which redis-rs routes to
//! the master of that slot (a keyless `WAIT` alone would go to every
//! master, where other connections' writes are not counted).
//!
//! `WAIT` also blocks the connection it is sent on until the replicas
//! answer or its time-out passes, so the appends that wait run on a
//! connection of their own from the blocking-read pool, never on the shared
//! one: a replica that is down costs the dispatches that wait, not every
//! other command of the crew.

use crewq_core::{Error, Result};
use redis::{Cmd, Pipeline, Value, cmd};

use crate::RedisBroker;
use crate::blocking::{BlockingError, Conn};
use crate::cluster;
use crate::config::{ReplicaWait, ceil_millis};
use crate::error::{Op, from_server_error};

/// The `WAIT` of `wait`. Its time-out is at least 1 ms: Redis reads
/// `WAIT n 0` as "forever".
fn wait_cmd(wait: ReplicaWait) -> Cmd {
    let mut c = cmd("WAIT");
    c.arg(wait.replicas).arg(ceil_millis(wait.timeout).max(1));
    c
}

impl RedisBroker {
    /// Whether appends wait for replicas.
    pub(crate) fn waits_for_replicas(&self) -> bool {
        self.config().replica_wait.is_some()
    }

    /// Sends a pipeline of appends (error replies in place). With
    /// [`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas)
    /// it goes out on a connection of its own with `WAIT` after it, and
    /// fails with [`Error::NotReplicated`] when fewer replicas than asked
    /// acknowledged it in time (the appends were applied all the same);
    /// without it, on the shared connection as any pipeline.
    pub(crate) async fn query_appends(&self, pipe: &Pipeline, op: Op<'_>) -> Result<Vec<Value>> {
        let Some(wait) = self.config().replica_wait else {
            return self.query_pipe(pipe, op).await;
        };
        let then = wait_cmd(wait);
        // The dedicated connection has no response time-out of its own:
        // the server may hold the reply for the whole WAIT.
        let deadline = self.config().response_timeout.saturating_add(wait.timeout);
        let sent = self
            .blocking()
            .run_on(Some(deadline), |conn| {
                let then = &then;
                async move {
                    match conn {
                        Conn::Single(mut conn) => {
                            let mut whole = pipe.clone();
                            whole.add_command(then.clone());
                            let mut replies: Vec<Value> = whole
                                .query_async(&mut conn)
                                .await
                                .map_err(BlockingError::Redis)?;
                            let acks = replies.pop().into_iter().collect();
                            Ok((replies, acks))
                        }
                        Conn::Cluster(conn) => {
                            match cluster::send_pipe_then(&conn, pipe, op, Some(then)).await {
                                Ok(Ok(sent)) => Ok(sent),
                                Ok(Err(err)) => Err(BlockingError::Redis(err)),
                                Err(err) => Err(BlockingError::Refused(err)),
                            }
                        }
                    }
                }
            })
            .await;
        let (replies, acks) = match sent {
            Ok(sent) => sent,
            Err(BlockingError::Redis(err)) => return Err(self.failed(op, err)),
            Err(BlockingError::Refused(err)) => return Err(err),
            Err(BlockingError::Deadline(deadline)) => {
                return Err(Error::Timeout(format!(
                    "{} on '{}' waiting for {} replicas: no reply within {deadline:?}; the \
                     appends may or may not have been applied",
                    op.name, op.stream, wait.replicas
                )));
            }
        };
        replicated(&acks, wait, op)?;
        Ok(replies)
    }
}

/// Checks the replies of the `WAIT`s (one per master written to).
fn replicated(acks: &[Value], wait: ReplicaWait, op: Op<'_>) -> Result<()> {
    if acks.is_empty() {
        return Err(op.protocol("no reply to WAIT"));
    }
    for ack in acks {
        let count = match ack {
            Value::Int(count) => *count,
            Value::ServerError(err) => return Err(op.error(from_server_error(err.clone()))),
            other => return Err(op.protocol(format_args!("WAIT replied {other:?}"))),
        };
        if count < i64::from(wait.replicas) {
            return Err(Error::NotReplicated(format!(
                "{} on '{}': {count} of {} replicas acknowledged the write within {:?}; it \
                 was applied on the primary and a failover now could lose it (dispatching \
                 again with a dedupe window is safe)",
                op.name, op.stream, wait.replicas, wait.timeout
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT_ONE: ReplicaWait = ReplicaWait {
        replicas: 1,
        timeout: Duration::from_millis(50),
    };

    #[test]
    fn too_few_acks_are_not_replicated_and_transient() {
        let op = Op::new("XADD", "s");
        let err = replicated(&[Value::Int(1), Value::Int(0)], WAIT_ONE, op)
            .expect_err("one master without its replica");
        assert_eq!(err.kind(), crewq_core::ErrorKind::NotReplicated);
        assert!(err.is_transient());
        assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
        assert!(replicated(&[Value::Int(1), Value::Int(2)], WAIT_ONE, op).is_ok());
        assert!(replicated(&[], WAIT_ONE, op).is_err());
    }

    #[test]
    fn a_zero_time_out_never_becomes_wait_forever() {
        let zero = ReplicaWait {
            replicas: 1,
            timeout: Duration::ZERO,
        };
        let packed = String::from_utf8_lossy(&wait_cmd(zero).get_packed_command()).into_owned();
        assert!(packed.ends_with("$1\r\n1\r\n$1\r\n1\r\n"), "{packed:?}");
    }
}
