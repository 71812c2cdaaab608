//! The native host's clock, wake-ups and offloaded work.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use tessera_core::ports::{Clock, Offload, Wakeups};
use tokio::sync::{watch, Semaphore};

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a broken host; 0 is as good an answer as any.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Runs jobs on tokio's blocking threads, a bounded number at once, so password hashes
/// neither stall request threads nor stack up their memory (12 MiB each).
pub struct BlockingOffload {
    permits: Arc<Semaphore>,
}

impl BlockingOffload {
    pub fn new(concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }
}

#[async_trait]
impl Offload for BlockingOffload {
    async fn run(&self, job: Box<dyn FnOnce() + Send>) {
        // The semaphore is never closed. The permit goes with the job, so a request dropped
        // while its hash runs does not free a slot before the hash ends.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let task = tokio::task::spawn_blocking(move || {
            job();
            drop(permit);
        });
        if let Err(e) = task.await {
            tracing::error!("offloaded job failed: {e}");
        }
    }

    fn spawn(&self, task: tessera_core::ports::Task) -> Option<tessera_core::ports::Task> {
        // Outside a runtime (shutting down) there is nothing to run it on.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(task);
                None
            }
            Err(_) => Some(task),
        }
    }
}

/// A counter in a watch channel: a ticket is the counter's value, and a waiter wakes once
/// the counter has passed it, so a notify between `ticket` and `wait` is never lost.
pub struct WatchWakeups {
    tx: watch::Sender<u64>,
}

impl WatchWakeups {
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(0),
        }
    }
}

impl Default for WatchWakeups {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Wakeups for WatchWakeups {
    fn ticket(&self) -> u64 {
        *self.tx.borrow()
    }

    fn notify(&self) {
        // send_modify updates even when nobody is subscribed.
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn wait(&self, ticket: u64, timeout: Duration) {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n != ticket)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notify_after_ticket_is_not_lost() {
        let w = WatchWakeups::new();
        let ticket = w.ticket();
        w.notify();
        // Would take the full minute if the notification were lost.
        tokio::time::timeout(
            Duration::from_secs(5),
            w.wait(ticket, Duration::from_secs(60)),
        )
        .await
        .expect("wait returned");
        let start = std::time::Instant::now();
        w.wait(w.ticket(), Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
