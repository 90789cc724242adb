//! `Broker` for [`FaultyBroker`], as a [`BrokerLayer`]: every call goes
//! through [`FaultyBroker::inject`], blocking reads through the same
//! [`FaultyBroker::apply`] with their `BLOCK` time shortened by the delay,
//! settles with their refused items taken out.

use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    Broker, BrokerCall, BrokerLayer, DeliveredEntry, Error, ReadFrom, ReadGroup, Result, Settle,
    Settled, StreamId,
};

use super::{Conn, Fault, FaultyBroker, Op};

#[async_trait]
impl<B: Broker> BrokerLayer for FaultyBroker<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(&'a self, op: Op, call: BrokerCall<'a, T>) -> BrokerCall<'a, T> {
        Box::pin(self.inject(op, call))
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        self.wait_while_paused().await;
        let mut plan = self.plan(Op::ReadGroup, conn_of(read));
        match blocks_for(read) {
            // Not blocking, or blocking forever: the delay is plain latency.
            None | Some(Duration::ZERO) => self.apply(plan, self.inner.read_group(read)).await,
            Some(block) => {
                // The delay is spent out of the BLOCK time, so the read
                // never takes longer than asked; what is left of it (none:
                // a non-blocking read, since BLOCK 0 would wait forever)
                // goes to the inner broker.
                plan.delay = plan.delay.min(block);
                let left = block - plan.delay;
                let read = ReadGroup {
                    block: (!left.is_zero()).then_some(left),
                    ..read.clone()
                };
                self.apply(plan, self.inner.read_group(&read)).await
            }
        }
    }

    /// A settle whose refused items (drawn per item) never reach the inner
    /// broker: nothing is written for them and they stay pending, as when
    /// Redis refuses one item's append (`WRONGTYPE`, `OOM`) and the script
    /// goes on with the next; the other items settle as usual.
    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        self.wait_while_paused().await;
        let plan = self.plan(Op::Settle, Conn::Shared);
        let refused = self.item_failures(&plan, settle.items.len());
        if refused.iter().all(Option::is_none) {
            return self.apply(plan, self.inner.settle(settle)).await;
        }
        let kept = Settle {
            items: settle
                .items
                .iter()
                .zip(&refused)
                .filter(|(_, refused)| refused.is_none())
                .map(|(item, _)| item.clone())
                .collect(),
            ..settle.clone()
        };
        let call = async {
            if kept.items.is_empty() {
                Ok(Vec::new())
            } else {
                self.inner.settle(kept).await
            }
        };
        let mut replies = match self.apply(plan, call).await {
            Ok(replies) => replies.into_iter(),
            // On Redis a settle fails as a whole on a missing group, before
            // any item's write could be refused: the refused items met the
            // missing group too. They are sent after all, so that what
            // records calls (the simulator's history) sees each of them
            // find no group, as the worker does (seed 2803: a success
            // settled in such a call looked dropped). Without its group
            // the call writes nothing (should the group be back already,
            // it settles every item, none refused).
            Err(Error::NoGroup { .. }) => return self.inner.settle(settle).await,
            Err(err) => return Err(err),
        };
        let mut settled = Vec::with_capacity(refused.len());
        for (item, refused) in refused.into_iter().enumerate() {
            match refused {
                Some(reply) => {
                    let item = u32::try_from(item).unwrap_or(u32::MAX);
                    self.record(&plan, Fault::ItemFailed { item });
                    settled.push(Settled::Failed(reply.to_owned()));
                }
                None => settled.push(replies.next().ok_or_else(|| {
                    Error::Protocol("the inner broker settled fewer items than asked".into())
                })?),
            }
        }
        Ok(settled)
    }
}

/// How long `read` may block: `None` for a read that returns at once
/// (no `BLOCK`, or a history read, which ignores it), `Some(ZERO)` forever.
fn blocks_for(read: &ReadGroup) -> Option<Duration> {
    match read.from {
        // `PendingAfter(MAX)` is how Redis spells `>`, BLOCK included.
        ReadFrom::New | ReadFrom::PendingAfter(StreamId::MAX) => read.block,
        ReadFrom::PendingAfter(_) => None,
    }
}

/// The connection the Redis backend sends `read` on: a read of new entries
/// with `BLOCK` gets a pooled connection of its own, any other read goes on
/// the shared one.
fn conn_of(read: &ReadGroup) -> Conn {
    match (read.from, read.block) {
        (ReadFrom::New, Some(_)) => Conn::Blocking,
        _ => Conn::Shared,
    }
}
