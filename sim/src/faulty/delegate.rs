//! `Broker` for [`FaultyBroker`], as a [`BrokerLayer`]: every call goes
//! through [`FaultyBroker::inject`], blocking reads through the same
//! [`FaultyBroker::apply`] with their `BLOCK` time shortened by the delay.

use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    Broker, BrokerCall, BrokerLayer, DeliveredEntry, ReadFrom, ReadGroup, Result, StreamId,
};

use super::{FaultyBroker, Op};

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
        let mut plan = self.plan(Op::ReadGroup);
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
