//! Commits on the global stream: positions, the group commit, and publication in order.
//!
//! A commit takes the next positions and builds its statements at once, then joins the
//! queue. Whoever holds the writer runs everything queued as one transaction (one disk
//! sync for many requests), and falls back to one transaction each if that fails, so a
//! refused batch fails alone. Positions become visible strictly in order: a commit is
//! published once every position before it is settled, and only successful commits move
//! `current_pos`, so a position without rows is never handed to a client (and so is never
//! handed out again after a restart, when the next position comes from the tables).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, Mutex},
};

use crate::{
    homeserver::{Audience, Stream},
    ports::{DbError, Statement},
    Homeserver, Result,
};

/// Commits waiting for the writer, in position order, and the next position to hand out.
pub(crate) struct CommitQueue {
    next: i64,
    waiting: Vec<Queued>,
}

struct Queued {
    statements: Vec<Statement>,
    outcome: Arc<Outcome>,
}

/// Where the writer leaves a queued commit's result, and the commit's positions, for the
/// writer to settle if nobody waits for the result any more.
struct Outcome {
    first: i64,
    last: i64,
    streams: Vec<Stream>,
    state: Mutex<OutcomeState>,
}

#[derive(Default)]
struct OutcomeState {
    result: Option<std::result::Result<(), DbError>>,
    /// The commit's future was dropped before its result came.
    abandoned: bool,
}

impl Outcome {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutcomeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Settled commits waiting for those before them, by first position.
pub(crate) struct Settled {
    /// Every position up to this one is settled (published, or known to have no rows).
    upto: i64,
    /// (last position, streams to mark moved, whether it committed) by first position.
    ready: BTreeMap<i64, (i64, Vec<Stream>, bool)>,
}

impl CommitQueue {
    pub(crate) fn new(current_pos: i64) -> Self {
        Self {
            next: current_pos + 1,
            waiting: Vec::new(),
        }
    }
}

impl Settled {
    pub(crate) fn new(current_pos: i64) -> Self {
        Self {
            upto: current_pos,
            ready: BTreeMap::new(),
        }
    }
}

impl Homeserver {
    /// Commits a batch stamped with the next stream position, atomically, then wakes the
    /// syncs of `audience`. `streams` names every stream the batch writes rows of.
    pub async fn commit<F>(
        &self,
        streams: &[Stream],
        audience: Audience<'_>,
        build: F,
    ) -> Result<i64>
    where
        F: FnOnce(i64) -> Vec<Statement>,
    {
        self.commit_then(streams, audience, 1, build, |_| ()).await
    }

    /// Like [`Homeserver::commit`], for a batch that takes `positions` consecutive
    /// positions (the first is passed to `build` and returned). `committed` runs once the
    /// batch is durable and before anyone can see its positions, to bring in-memory state
    /// in step with it. `build` runs at once, under a short lock: it only assembles rows.
    pub(crate) async fn commit_then<F, C>(
        &self,
        streams: &[Stream],
        audience: Audience<'_>,
        positions: i64,
        build: F,
        committed: C,
    ) -> Result<i64>
    where
        F: FnOnce(i64) -> Vec<Statement>,
        C: FnOnce(i64),
    {
        let (first, last, outcome) = {
            let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
            let first = q.next;
            let last = first + positions.max(1) - 1;
            q.next = last + 1;
            let outcome = Arc::new(Outcome {
                first,
                last,
                streams: streams.to_vec(),
                state: Default::default(),
            });
            q.waiting.push(Queued {
                statements: build(first),
                outcome: outcome.clone(),
            });
            (first, last, outcome)
        };
        // From here the positions must be settled whatever happens, or no later commit
        // could be published; see `Abandon`.
        let mut abandon = Abandon {
            hs: self,
            outcome: &outcome,
            armed: true,
        };
        {
            let _writer = self.commit_lock.lock().await;
            // A writer before us may have committed our batch along with its own.
            if outcome.lock().result.is_none() {
                self.write_queued().await;
            }
        }
        let result =
            outcome.lock().result.take().unwrap_or_else(|| {
                Err(DbError::CommitUnknown("the writer left no outcome".into()))
            });
        abandon.armed = false;
        match result {
            Ok(()) => {
                committed(first);
                self.settle(first, last, streams, true);
                self.published(last).await;
                self.touch(audience).await;
                Ok(first)
            }
            Err(e) => {
                self.settle_failed(&outcome, &e);
                Err(e.into())
            }
        }
    }

    /// Settles a commit that failed, or whose result nobody waits for.
    fn settle_failed(&self, outcome: &Outcome, e: &DbError) {
        match e {
            // Rows may exist: their streams count as moved, so no sync skips them once a
            // later commit publishes past them.
            DbError::CommitUnknown(_) => {
                self.settle(outcome.first, outcome.last, &outcome.streams, false)
            }
            // Rolled back: the positions hold nothing. Handed out again if nothing was
            // handed out after them, else skipped.
            _ => {
                let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.next == outcome.last + 1 {
                    q.next = outcome.first;
                    return;
                }
                drop(q);
                self.settle(outcome.first, outcome.last, &[], false)
            }
        }
    }

    /// Commits waiting for the writer (for tests and metrics).
    pub fn queued_commits(&self) -> usize {
        self.commit_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .len()
    }

    /// Waits until every position handed out so far is settled: whatever was in flight
    /// is then either in the database or never will be (a room's head is reloaded only
    /// after this).
    pub(crate) async fn settle_in_flight(&self) {
        let last = self
            .commit_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next
            - 1;
        self.published(last).await;
    }

    /// Runs everything queued: one transaction for all, or, if that fails before its
    /// commit, one each (so only the batch at fault fails). The caller holds the writer.
    async fn write_queued(&self) {
        let group: Vec<Queued> = {
            let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut q.waiting)
        };
        // If this future is dropped mid-write, the batches' fate is unknown.
        let mut pending = Unwritten(self, group);
        let results: Vec<std::result::Result<(), DbError>> = match pending.1.as_slice() {
            [] => Vec::new(),
            [one] => vec![self.db.batch(one.statements.clone()).await],
            many => {
                let all: Vec<Statement> = many
                    .iter()
                    .flat_map(|q| q.statements.iter().cloned())
                    .collect();
                match self.db.batch(all).await {
                    Ok(()) => many.iter().map(|_| Ok(())).collect(),
                    Err(DbError::CommitUnknown(m)) => many
                        .iter()
                        .map(|_| Err(DbError::CommitUnknown(m.clone())))
                        .collect(),
                    // Rolled back: each on its own, to find the one at fault.
                    Err(_) => {
                        let mut each = Vec::with_capacity(many.len());
                        for q in many {
                            each.push(self.db.batch(q.statements.clone()).await);
                        }
                        each
                    }
                }
            }
        };
        for (q, r) in std::mem::take(&mut pending.1).into_iter().zip(results) {
            self.give_outcome(&q.outcome, r);
        }
    }

    /// Hands a commit its result; if its future is gone, settles it here.
    fn give_outcome(&self, outcome: &Outcome, r: std::result::Result<(), DbError>) {
        let mut state = outcome.lock();
        if !state.abandoned {
            state.result = Some(r);
            return;
        }
        drop(state);
        match r {
            // Committed: visible like any other (its in-memory effects were dropped with
            // its future; see `rooms/write.rs`, `ForgetHead`).
            Ok(()) => self.settle(outcome.first, outcome.last, &outcome.streams, true),
            Err(e) => self.settle_failed(outcome, &e),
        }
    }

    /// Marks `first..=last` settled, then publishes every settled commit in order: each
    /// one's streams move, then `current_pos` moves to a committed one's last position.
    fn settle(&self, first: i64, last: i64, streams: &[Stream], committed: bool) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.ready.insert(first, (last, streams.to_vec(), committed));
        loop {
            let next = s.upto + 1;
            let Some((last, streams, committed)) = s.ready.remove(&next) else {
                break;
            };
            // Heads move before the position is published: a sync that sees a position
            // also sees that these streams moved.
            for stream in streams {
                self.stream_heads[stream as usize].fetch_max(last, Ordering::AcqRel);
            }
            if committed {
                self.current_pos.store(last, Ordering::Release);
            }
            s.upto = last;
        }
        drop(s);
        self.settled_event.notify(usize::MAX);
    }

    /// Waits until everything up to `last` is settled, so the commit is visible before
    /// its request is answered.
    async fn published(&self, last: i64) {
        loop {
            let listener = self.settled_event.listen();
            if self.settled.lock().unwrap_or_else(|e| e.into_inner()).upto >= last {
                return;
            }
            listener.await;
        }
    }
}

/// A commit's future dropped before it settled its positions: if the writer has not
/// given its result yet, it will settle them itself; if it has, they are settled here.
struct Abandon<'a> {
    hs: &'a Homeserver,
    outcome: &'a Outcome,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.outcome.lock();
        match state.result.take() {
            None => state.abandoned = true,
            Some(r) => {
                drop(state);
                let o = self.outcome;
                match r {
                    Ok(()) => self.hs.settle(o.first, o.last, &o.streams, true),
                    Err(e) => self.hs.settle_failed(o, &e),
                }
            }
        }
    }
}

/// Batches taken from the queue and not yet given an outcome.
/// Gives interrupted batches an unknown outcome, through their homeserver.
struct Unwritten<'a>(&'a Homeserver, Vec<Queued>);

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        for q in std::mem::take(&mut self.1) {
            let e = DbError::CommitUnknown("the write was interrupted".into());
            self.0.give_outcome(&q.outcome, Err(e));
        }
    }
}
