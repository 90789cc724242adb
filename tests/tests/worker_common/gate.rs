//! A broker wrapper for the worker's tests: forwards every call to the
//! broker it wraps, except calls of the operations told to fail, which fail
//! with the error asked for, before the call (nothing applied) or after it
//! (applied, reply lost). Works over either backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crewq_core::{
    Broker, BrokerCall, BrokerOp, DeliveredEntry, Error, ReadFrom, ReadGroup, Result, StreamId,
};

/// When a gated call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Before it reaches the broker: nothing applied.
    Before,
    /// After the broker applied it: the reply is lost.
    After,
}

/// How calls of one operation fail.
type Rule = (When, fn() -> Error);

/// The wrapper; see the module docs.
pub struct Gate {
    inner: Arc<dyn Broker>,
    rules: Mutex<BTreeMap<&'static str, Rule>>,
    failed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Gate {
    pub fn new(inner: Arc<dyn Broker>) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            rules: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Fails every call of `op` (a `Broker` method's name) `when`, with
    /// `error()`, until [`Gate::heal`].
    pub fn fail(&self, op: &'static str, when: When, error: fn() -> Error) {
        self.rules.lock().expect("rules").insert(op, (when, error));
    }

    /// Lets every call through again.
    pub fn heal(&self) {
        self.rules.lock().expect("rules").clear();
    }

    /// How many calls of `op` were failed.
    pub fn failed(&self, op: &'static str) -> u64 {
        self.failed
            .lock()
            .expect("failed")
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    async fn gate<T>(&self, op: &'static str, call: BrokerCall<'_, T>) -> Result<T> {
        let rule = self.rules.lock().expect("rules").get(op).copied();
        let Some((when, error)) = rule else {
            return call.await;
        };
        *self.failed.lock().expect("failed").entry(op).or_default() += 1;
        if when == When::After {
            let _ = call.await;
        }
        Err(error())
    }
}

/// A transient error: the connection dropped.
pub fn dropped() -> Error {
    Error::Connection {
        message: "connection reset (injected)".into(),
        source: None,
    }
}

/// Every call goes through [`Gate::gate`] under its method's name; reads
/// of a consumer's own history are gated as `read_history`, apart from
/// reads of new entries (`read_group`).
#[async_trait::async_trait]
impl crewq_core::BrokerLayer for Gate {
    type Inner = dyn Broker;

    fn inner(&self) -> &(dyn Broker + 'static) {
        &*self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        op: BrokerOp,
        call: BrokerCall<'a, T>,
    ) -> BrokerCall<'a, T> {
        Box::pin(self.gate(op.name(), call))
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        let op = match read.from {
            ReadFrom::PendingAfter(id) if id != StreamId::MAX => "read_history",
            _ => "read_group",
        };
        self.gate(op, Broker::read_group(&*self.inner, read)).await
    }
}
