//! Bounded queues for model work.
//!
//! Model work runs on tokio's blocking pool (never on the async threads), at most
//! `workers` jobs at a time, with at most `waiting` more admitted behind them. A request
//! that finds the queue full is refused at once ([`QueueError::Busy`]: the API answers 503
//! with `Retry-After`) instead of piling up: under overload the server stays responsive
//! and its memory flat. Each job has a time limit; when it passes, the request is answered
//! ([`QueueError::TimedOut`]) while the job's thread runs to its end (ONNX Runtime calls
//! cannot be interrupted) still holding its worker slot, so the limit on concurrent work
//! holds. At shutdown, jobs that have not started are cancelled; running ones finish.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a job did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the {queue} queue is full ({running} running, {waiting} waiting); try again in {retry_after_s} s")]
    Busy {
        queue: &'static str,
        running: usize,
        waiting: usize,
        retry_after_s: u64,
    },
    #[error("the job ran past its time limit of {0} s and was abandoned")]
    TimedOut(u64),
    #[error("the server is shutting down; the job was cancelled before it started")]
    Cancelled,
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// A place in a queue, taken before the request's work is set up.
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
}

/// Counts of a queue, for `/api/health`.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStatus {
    pub workers: usize,
    pub running: usize,
    pub waiting: usize,
    /// Jobs admitted at most (running + waiting).
    pub capacity: usize,
}

pub struct Queue {
    name: &'static str,
    workers: usize,
    capacity: usize,
    slots: Arc<Semaphore>,
    running_permits: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    timeout: Duration,
    closing: Arc<AtomicBool>,
}

impl Queue {
    /// `workers` at once, `waiting` more admitted, each job at most `timeout`.
    pub fn new(name: &'static str, workers: usize, waiting: usize, timeout: Duration) -> Queue {
        let workers = workers.max(1);
        Queue {
            name,
            workers,
            capacity: workers + waiting,
            slots: Arc::new(Semaphore::new(workers + waiting)),
            running_permits: Arc::new(Semaphore::new(workers)),
            running: Arc::new(AtomicUsize::new(0)),
            timeout,
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn status(&self) -> QueueStatus {
        let admitted = self.capacity - self.slots.available_permits();
        let running = self.running.load(Ordering::SeqCst);
        QueueStatus {
            workers: self.workers,
            running,
            waiting: admitted.saturating_sub(running),
            capacity: self.capacity,
        }
    }

    /// Seconds a client is told to wait before trying again.
    pub fn retry_after(&self) -> u64 {
        (self.timeout.as_secs() / 4).clamp(1, 30)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A place in the queue, or `Busy` at once when it is full or closing.
    pub fn admit(&self) -> Result<Ticket, QueueError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(QueueError::Cancelled);
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(Ticket { _slot: p }),
            Err(_) => {
                let s = self.status();
                Err(QueueError::Busy {
                    queue: self.name,
                    running: s.running,
                    waiting: s.waiting,
                    retry_after_s: self.retry_after(),
                })
            }
        }
    }

    /// Waits for a worker, then runs `f` on the blocking pool with the time limit.
    pub async fn run<T, F>(&self, ticket: Ticket, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    {
        let worker = self
            .running_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Cancelled)?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(QueueError::Cancelled);
        }
        let running = self.running.clone();
        running.fetch_add(1, Ordering::SeqCst);
        let handle = tokio::task::spawn_blocking(move || {
            // Both places are given back when the work really ends, not when the
            // request stops waiting for it.
            let _worker = worker;
            let _ticket = ticket;
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            running.fetch_sub(1, Ordering::SeqCst);
            match out {
                Ok(r) => r,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown".into());
                    Err(anyhow::anyhow!(
                        "internal error (a panic in the job: {msg})"
                    ))
                }
            }
        });
        match tokio::time::timeout(self.timeout, handle).await {
            Err(_) => Err(QueueError::TimedOut(self.timeout.as_secs())),
            Ok(Err(join)) => Err(QueueError::Failed(anyhow::anyhow!(
                "internal error: {join}"
            ))),
            Ok(Ok(Err(e))) => Err(QueueError::Failed(e)),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    /// Refuses new jobs from now on; jobs waiting for a worker are cancelled when they
    /// get one.
    pub fn stop_admitting(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// [`stop_admitting`](Self::stop_admitting), then waits up to `grace` for running
    /// jobs. Returns how many were still running.
    pub async fn close(&self, grace: Duration) -> usize {
        self.stop_admitting();
        let all = self
            .running_permits
            .clone()
            .acquire_many_owned(self.workers as u32);
        match tokio::time::timeout(grace, all).await {
            Ok(_) => 0,
            Err(_) => self.running.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_frees_its_places() {
        let q = Arc::new(Queue::new("test", 1, 1, Duration::from_secs(5)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t1 = q.admit().unwrap();
        let q1 = q.clone();
        let first = tokio::spawn(async move {
            q1.run(t1, move || {
                rx.recv().ok();
                Ok(1)
            })
            .await
        });
        let t2 = q.admit().unwrap();
        assert!(matches!(q.admit(), Err(QueueError::Busy { .. })));
        tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(q.run(t2, || Ok(2)).await.unwrap(), 2);
        // Both places are free again.
        let (a, b) = (q.admit().unwrap(), q.admit().unwrap());
        drop((a, b));
        assert_eq!(q.status().running, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_job_times_out_and_keeps_its_worker_until_it_ends() {
        let q = Arc::new(Queue::new("test", 1, 0, Duration::from_millis(100)));
        let t = q.admit().unwrap();
        let r = q
            .run(t, || {
                std::thread::sleep(Duration::from_millis(400));
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(QueueError::TimedOut(_))), "{r:?}");
        // Still running: no place for another job.
        assert!(matches!(q.admit(), Err(QueueError::Busy { .. })));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(q.admit().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_and_panics_become_failures() {
        let q = Queue::new("test", 1, 0, Duration::from_secs(5));
        let r: Result<(), _> = q
            .run(q.admit().unwrap(), || anyhow::bail!("bad input"))
            .await;
        assert_eq!(r.unwrap_err().to_string(), "bad input");
        let r: Result<(), _> = q.run(q.admit().unwrap(), || panic!("boom")).await;
        assert!(r.unwrap_err().to_string().contains("boom"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_refuses_new_jobs() {
        let q = Queue::new("test", 1, 1, Duration::from_secs(5));
        assert_eq!(q.close(Duration::from_secs(1)).await, 0);
        assert!(matches!(q.admit(), Err(QueueError::Cancelled)));
    }
}
