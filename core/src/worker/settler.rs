//! Groups the settles of attempts that finish close together into one
//! [`Broker::settle`] call.
//!
//! Each finished attempt hands its [`SettleItem`] to the worker's settler and
//! waits for that item's own outcome. The settler sends what has queued up as
//! one settle (one Lua script on Redis), keeping a few in flight: under load
//! many items share a call, so the per-call cost (a round trip, the script's
//! start) is paid once per batch; at low load an item goes out at once,
//! alone, adding no wait.
//!
//! Nothing about the guarantees changes: [`Broker::settle`] checks ownership
//! and writes each item's outcome before its acknowledgement, item by item,
//! all in one atomic step. A batch that fails fails every item in it with an
//! error of the same transience, and each attempt then retries its own item
//! exactly as it retried a settle of its own before.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use crate::retention::{Retention, Trimmer};
use crate::{Broker, Clock, Error, Result, Settle, SettleItem, Settled};

/// Settles in flight at once per worker: enough to keep a batch on the wire
/// while the next one fills, few enough to keep batches large.
const IN_FLIGHT: usize = 4;

/// One item waiting for its settle.
struct Request {
    item: SettleItem,
    reply: oneshot::Sender<Result<Settled>>,
}

/// The attempts' side: hands items to the settler.
pub(crate) struct Settler {
    requests: mpsc::UnboundedSender<Request>,
}

/// The settler's side: what [`Settler::new`] returns to be run.
pub(crate) struct Settling<B> {
    broker: B,
    stream: String,
    group: String,
    consumer: String,
    max_batch: usize,
    requests: mpsc::UnboundedReceiver<Request>,
    retained: Retained,
}

/// The streams a worker's settles append to whose retention the worker
/// runs: results and dead letters. Their [`Trimmer`]s are told what each
/// batch recorded, and trim when a check is due (every so many appends or
/// seconds), after the batch's waiters have their outcomes.
pub(crate) struct Retained {
    results: (String, Trimmer),
    dead_letters: (String, Trimmer),
    clock: Arc<dyn Clock>,
}

impl Retained {
    /// Runs `results` on the stream `results_stream`, `dead_letters` on
    /// `dlq_stream`, on `clock`'s time.
    pub(crate) fn new(
        results_stream: &str,
        results: Retention,
        dlq_stream: &str,
        dead_letters: Retention,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Retained {
            results: (results_stream.to_owned(), Trimmer::new(results)),
            dead_letters: (dlq_stream.to_owned(), Trimmer::new(dead_letters)),
            clock,
        }
    }

    /// How many of `item`'s appends go to the results and to the
    /// dead-letter stream.
    fn count(&self, item: &SettleItem) -> (u64, u64) {
        item.appends.iter().fold((0, 0), |(r, d), entry| {
            if entry.stream == self.results.0 {
                (r + 1, d)
            } else if entry.stream == self.dead_letters.0 {
                (r, d + 1)
            } else {
                (r, d)
            }
        })
    }

    /// Tells the trimmers what a batch recorded; each trims if due.
    async fn recorded<B: Broker>(&self, broker: &B, (results, dead_letters): (u64, u64)) {
        let now_ms = self.clock.now_ms();
        for ((stream, trimmer), n) in [(&self.results, results), (&self.dead_letters, dead_letters)]
        {
            if n > 0 {
                trimmer.appended(broker, stream, n, now_ms).await;
            }
        }
    }
}

impl Settler {
    /// A settler for `consumer`'s entries of `group` on `stream`, sending at
    /// most `max_batch` items per call; run the [`Settling`] to serve it.
    pub(crate) fn new<B: Broker>(
        broker: B,
        stream: &str,
        group: &str,
        consumer: &str,
        max_batch: usize,
        retained: Retained,
    ) -> (Settler, Settling<B>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let settling = Settling {
            broker,
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            max_batch: max_batch.max(1),
            requests: receiver,
            retained,
        };
        (Settler { requests }, settling)
    }

    /// Settles `item` in the next batch and returns its outcome.
    ///
    /// # Errors
    ///
    /// The batch's broker error; [`Error::Connection`] (transient: the
    /// outcome is unknown) when the settler stopped before replying.
    pub(crate) async fn settle(&self, item: SettleItem) -> Result<Settled> {
        let (reply, outcome) = oneshot::channel();
        if self.requests.send(Request { item, reply }).is_err() {
            return Err(stopped());
        }
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl<B: Broker> Settling<B> {
    /// Serves settles until every [`Settler`] is gone.
    pub(crate) async fn run(mut self) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(()) = in_flight.next() => {}
                request = self.requests.recv(), if in_flight.len() < IN_FLIGHT => {
                    let Some(first) = request else { break };
                    let mut batch = vec![first];
                    while batch.len() < self.max_batch {
                        match self.requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    in_flight.push(settle_batch(
                        &self.broker,
                        &self.stream,
                        &self.group,
                        &self.consumer,
                        &self.retained,
                        batch,
                    ));
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }
}

/// Sends one batch and hands each item its outcome.
async fn settle_batch<B: Broker>(
    broker: &B,
    stream: &str,
    group: &str,
    consumer: &str,
    retained: &Retained,
    batch: Vec<Request>,
) {
    let mut settle = Settle::new(stream, group, consumer);
    let mut replies = Vec::with_capacity(batch.len());
    let mut appends = Vec::with_capacity(batch.len());
    for request in batch {
        appends.push(retained.count(&request.item));
        settle.items.push(request.item);
        replies.push(request.reply);
    }
    let count = replies.len();
    match broker.settle(settle).await {
        Ok(outcomes) if outcomes.len() == count => {
            let mut recorded = (0, 0);
            for ((reply, outcome), (results, dead_letters)) in
                replies.into_iter().zip(outcomes).zip(appends)
            {
                if matches!(outcome, Settled::Done(_)) {
                    recorded.0 += results;
                    recorded.1 += dead_letters;
                }
                // A waiter gone was aborted with its attempt: nothing to tell.
                let _ = reply.send(Ok(outcome));
            }
            // After the replies: trimming never delays an outcome.
            retained.recorded(broker, recorded).await;
        }
        Ok(outcomes) => {
            let err = Error::Protocol(format!("{} outcomes for {count} items", outcomes.len()));
            fail_all(replies, &err);
        }
        Err(err) => fail_all(replies, &err),
    }
}

/// Tells every waiter of a failed batch, with an error as transient as `err`.
fn fail_all(replies: Vec<oneshot::Sender<Result<Settled>>>, err: &Error) {
    for reply in replies {
        let _ = reply.send(Err(copy_of(err)));
    }
}

/// An error each item of a failed batch gets: what happened, and whether
/// retrying may help, or the group is gone (what an attempt acts on).
fn copy_of(err: &Error) -> Error {
    match err {
        Error::NoGroup { stream, group } => Error::no_group(stream, group),
        Error::Timeout(message) => Error::Timeout(message.clone()),
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        other if other.is_transient() => Error::Connection {
            message: other.to_string(),
            source: None,
        },
        other => Error::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

fn stopped() -> Error {
    Error::Connection {
        message: "the worker's settler stopped before replying".to_owned(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn copies_keep_whether_a_retry_may_help() {
        let transient = [
            Error::Timeout("t".into()),
            Error::Unavailable("u".into()),
            Error::Connection {
                message: "c".into(),
                source: None,
            },
        ];
        for err in &transient {
            assert!(copy_of(err).is_transient(), "{err}");
        }
        let lasting = Error::no_group("s", "g");
        assert!(!copy_of(&lasting).is_transient());
        assert!(matches!(copy_of(&lasting), Error::NoGroup { .. }));
        assert!(copy_of(&lasting).to_string().contains("NOGROUP"));
    }
}
