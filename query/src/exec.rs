//! Where queries run: a Tokio runtime of their own, apart from the one serving HTTP,
//! so health checks and other requests are answered while queries use every core;
//! its threads have a large stack ([`crate::admission::STACK_BYTES`]) for the planner
//! and optimizer's recursion. A semaphore bounds how many queries run at once.
//!
//! A query is one task on this runtime that plans, executes and sends batches through
//! a small channel to the handler. Dropping the handler's side (client gone, timeout,
//! shutdown) aborts the task, which drops the DataFusion stream and frees its memory.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::admission::STACK_BYTES;
use crate::error::{QueryError, Result};

/// The query runtime and its concurrency bound.
pub struct QueryRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime")
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

impl QueryRuntime {
    pub fn new(threads: usize, max_concurrent: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_stack_size(STACK_BYTES)
            .thread_name("flowlake-query-exec")
            .enable_all()
            .build()?;
        let max_concurrent = max_concurrent.max(1);
        Ok(QueryRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// A query slot, waited for until `deadline`.
    pub async fn permit(&self, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(QueryError::ShuttingDown),
            Err(_) => Err(QueryError::Busy(self.max_concurrent)),
        }
    }

    /// Refuses new queries (running ones go on until their handlers drop them).
    pub fn close(&self) {
        self.permits.close();
    }

    /// Runs `work` on the query runtime; it sends its output through the channel. The
    /// returned [`Running`] aborts the task when dropped.
    pub fn spawn<F>(&self, permit: OwnedSemaphorePermit, work: F) -> Running
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = self.handle.spawn(work);
        Running {
            abort: task.abort_handle(),
            _permit: permit,
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A query task; dropping it aborts the task and frees the slot.
pub struct Running {
    abort: AbortHandle,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// What a query task sends: its schema once, then batches; an error ends it.
pub enum Msg {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

pub type Sender = mpsc::Sender<Result<Msg>>;
pub type Receiver = mpsc::Receiver<Result<Msg>>;

pub fn channel() -> (Sender, Receiver) {
    mpsc::channel(2)
}

/// Keeps the runtime alive as long as any engine or job uses it.
pub type SharedRuntime = Arc<QueryRuntime>;
