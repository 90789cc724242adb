//! Handlers that block their thread, run where blocking is allowed.
//!
//! A handler that blocks (a synchronous HTTP client, a sleep, heavy
//! computation) stalls the runtime thread it runs on. On a current-thread
//! runtime that is every task: the worker's lease renewals stop, the lease
//! lapses, and a peer takes the task over and runs it a second time.
//! [`blocking`] runs the handler on tokio's blocking pool instead, so
//! renewals (and everything else) go on while it works.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Context, Handler, HandlerError};
use crate::Task;

/// A handler of synchronous code that may block its thread, run with
/// [`tokio::task::spawn_blocking`]: the worker's renewals go on meanwhile,
/// on any runtime.
///
/// A panic in it fails the attempt, as an async handler's does. Past the
/// worker's (or the task's) time-out the attempt fails, but the thread
/// cannot be stopped: it runs to its end and its output is dropped. So is
/// it at a shutdown's end of grace.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::worker::{blocking, Worker};
/// use crewq_core::{AgentType, Task};
/// use crewq_memory::MemoryBroker;
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handler = blocking(|task: Task<Value>| {
///     // A synchronous client, say: it blocks this thread, not the worker.
///     std::thread::sleep(Duration::from_millis(10));
///     Ok(json!({ "echo": task.payload }))
/// });
/// let worker = Worker::new(MemoryBroker::new(), AgentType::new("research")?, "worker-1", handler)
///     .spawn();
/// worker.shutdown(Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub fn blocking<P, F>(handler: F) -> Blocking<P, F>
where
    F: Fn(Task<P>) -> std::result::Result<Value, HandlerError> + Send + Sync + 'static,
{
    Blocking {
        handler: Arc::new(handler),
        payload: PhantomData,
    }
}

/// A handler run on the blocking pool; made by [`blocking`].
pub struct Blocking<P, F> {
    handler: Arc<F>,
    payload: PhantomData<fn() -> P>,
}

#[async_trait]
impl<P, F> Handler<P> for Blocking<P, F>
where
    P: Send + 'static,
    F: Fn(Task<P>) -> std::result::Result<Value, HandlerError> + Send + Sync + 'static,
{
    async fn handle(&self, task: Task<P>, _: Context) -> std::result::Result<Value, HandlerError> {
        let handler = Arc::clone(&self.handler);
        match tokio::task::spawn_blocking(move || handler(task)).await {
            Ok(output) => output,
            // The worker catches a handler's panic and fails the attempt.
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(format!("the blocking handler did not finish: {join}").into()),
        }
    }
}
