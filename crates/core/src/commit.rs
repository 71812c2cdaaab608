//! Commits on the global stream: positions, the group commit, and publication in order.
//!
//! A commit takes the next positions and builds its statements at once, then joins the
//! queue. One writer task (started when the queue fills, gone when it empties) commits
//! everything queued as one transaction, one disk sync for many requests; if that fails
//! for a reason one batch can cause, it halves the group until the refused batches are
//! alone, so a refused batch fails alone and costs O(log n) transactions. For each
//! commit, in position order, the writer then runs its in-memory follow-up (room heads,
//! caches), publishes it and wakes the syncs concerned. The
//! requests only wait: a request dropped midway changes nothing. A room's writes are
//! ordered by its planning lock (`rooms/tip.rs`), so they queue in the order they were
//! planned and land in that order.
//!
//! Only successful commits move `current_pos`, so a position that holds no rows is never
//! handed to a client, and so never handed out again after a restart (when the next
//! position comes from the tables).

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc, Mutex},
};

use crate::{
    homeserver::{Audience, OwnedAudience, Stream},
    ports::{DbError, Statement},
    Homeserver, Result,
};

/// Commits taken into one transaction at most.
const MAX_GROUP: usize = 256;

/// How a commit's batch ended, for its follow-up.
pub(crate) enum Landed {
    /// Committed, at these positions from the first.
    Committed(i64),
    /// Perhaps committed (the database failed during the commit): in-memory state built
    /// on the assumption must be dropped. With the first position, as all variants.
    Unknown(i64),
    /// Rolled back, for sure.
    Refused(i64),
}

/// A commit's in-memory follow-up, run by the writer once the batch landed, may have or
/// was refused, before its positions are published.
pub(crate) type AfterCommit = Box<dyn FnOnce(&Homeserver, Landed) + Send>;

/// Commits waiting for the writer, in position order, and the next position to hand out.
pub(crate) struct CommitQueue {
    next: i64,
    waiting: VecDeque<Queued>,
    /// A writer task is running (or about to).
    writing: bool,
}

impl CommitQueue {
    pub(crate) fn new(current_pos: i64) -> Self {
        Self {
            next: current_pos + 1,
            waiting: VecDeque::new(),
            writing: false,
        }
    }
}

/// A queued batch, for [`Homeserver::landed`].
pub(crate) struct Ticket {
    pub(crate) first: i64,
    pub(crate) last: i64,
    start: bool,
    result: Arc<Mutex<Option<std::result::Result<(), DbError>>>>,
}

struct Queued {
    first: i64,
    last: i64,
    statements: Vec<Statement>,
    streams: Vec<Stream>,
    audience: OwnedAudience,
    after: Option<AfterCommit>,
    result: Arc<Mutex<Option<std::result::Result<(), DbError>>>>,
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
        self.commit_then(streams, audience, 1, build, None).await
    }

    /// Like [`Homeserver::commit`], for a batch that takes `positions` consecutive
    /// positions (the first is passed to `build` and returned), with a follow-up run
    /// once it landed and before anyone can see its positions. `build` runs at once,
    /// under a short lock: it only assembles rows. Returns once the commit is visible.
    pub(crate) async fn commit_then<F>(
        &self,
        streams: &[Stream],
        audience: Audience<'_>,
        positions: i64,
        build: F,
        after: Option<AfterCommit>,
    ) -> Result<i64>
    where
        F: FnOnce(i64) -> Vec<Statement>,
    {
        let ticket = self.enqueue(streams, audience, positions, build, after);
        self.landed(ticket).await
    }

    /// The first half of [`Homeserver::commit_then`]: takes the positions and queues the
    /// batch. The caller must go on to [`Homeserver::landed`] without awaiting anything
    /// else first: that starts the writer if none runs.
    pub(crate) fn enqueue<F>(
        &self,
        streams: &[Stream],
        audience: Audience<'_>,
        positions: i64,
        build: F,
        after: Option<AfterCommit>,
    ) -> Ticket
    where
        F: FnOnce(i64) -> Vec<Statement>,
    {
        let result = Arc::new(Mutex::new(None));
        let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
        let first = q.next;
        let last = first + positions.max(1) - 1;
        // Built before the positions are taken: if it panics, none are lost.
        let statements = build(first);
        q.next = last + 1;
        q.waiting.push_back(Queued {
            first,
            last,
            statements,
            streams: streams.to_vec(),
            audience: audience.to_owned(),
            after,
            result: result.clone(),
        });
        let start = !q.writing;
        q.writing = true;
        Ticket {
            first,
            last,
            start,
            result,
        }
    }

    /// The second half of [`Homeserver::commit_then`]: waits until the queued batch is
    /// published, and tells how it ended.
    pub(crate) async fn landed(&self, ticket: Ticket) -> Result<i64> {
        if ticket.start {
            self.start_writer().await;
        }
        self.published(ticket.last).await;
        let outcome = ticket
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match outcome {
            Some(Ok(())) => Ok(ticket.first),
            Some(Err(e)) => Err(e.into()),
            None => Err(DbError::CommitUnknown("the writer left no outcome".into()).into()),
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

    /// Runs the writer as a task of its own, so no request's fate depends on another
    /// request staying connected; inline if this homeserver is not shared (tests).
    async fn start_writer(&self) {
        match self.me.upgrade() {
            Some(hs) => {
                let task = Box::pin(async move { hs.write_queued().await });
                // No runtime to run it (shutting down): this request writes.
                if let Some(task) = self.offload.spawn(task) {
                    task.await;
                }
            }
            None => self.write_queued().await,
        }
    }

    /// Fails every commit still queued and lets the next one start a writer: no task can
    /// take over, and the requests must not wait forever.
    fn fail_queued(&self) {
        let unwritten: Vec<Queued> = {
            let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
            q.writing = false;
            q.waiting.drain(..).collect()
        };
        for q in unwritten {
            self.finish(q, Err(DbError::Other("the writer was interrupted".into())));
        }
    }

    /// The writer: takes groups off the queue until it is empty.
    async fn write_queued(&self) {
        let mut running = Writing {
            hs: self,
            group: Vec::new(),
            armed: true,
        };
        loop {
            {
                let mut q = self.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting.is_empty() {
                    q.writing = false;
                    running.armed = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_GROUP);
                running.group = q.waiting.drain(..n).collect();
            }
            let batches: Vec<&[Statement]> = running
                .group
                .iter()
                .map(|q| q.statements.as_slice())
                .collect();
            let results = self.write_group(&batches).await;
            drop(batches);
            let mut woken = Vec::new();
            for (q, r) in std::mem::take(&mut running.group).into_iter().zip(results) {
                if let Some(audience) = self.finish(q, r) {
                    woken.push(audience);
                }
            }
            for audience in &woken {
                self.touch(audience.borrow()).await;
            }
        }
    }

    /// One transaction for the group; if it was refused for a reason one batch can cause,
    /// the group is halved until the batches at fault are alone, so k refused batches
    /// cost O(k log n) transactions, not one per batch of the group.
    async fn write_group(&self, batches: &[&[Statement]]) -> Vec<std::result::Result<(), DbError>> {
        let mut results: Vec<Option<std::result::Result<(), DbError>>> = vec![None; batches.len()];
        // Ranges still to write, the leftmost on top.
        let mut todo = vec![(0, batches.len())];
        while let Some((from, to)) = todo.pop() {
            let Some(range) = batches.get(from..to) else {
                continue;
            };
            let all: Vec<Statement> = range.iter().flat_map(|b| b.iter().cloned()).collect();
            match self.db.batch(all).await {
                Ok(()) => results[from..to].fill(Some(Ok(()))),
                Err(
                    DbError::UniqueViolation
                    | DbError::Conflict
                    | DbError::Constraint(_)
                    | DbError::InvalidInput(_)
                    | DbError::Decode(_),
                ) if to - from > 1 => {
                    let mid = from + (to - from) / 2;
                    todo.push((mid, to));
                    todo.push((from, mid));
                }
                // Refused alone, or nothing to do with any one batch (the database is
                // unwell): the range fails alike.
                Err(e) => results[from..to].fill(Some(Err(e))),
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DbError::Other("not written".into()))))
            .collect()
    }

    /// A commit's end, in position order: its follow-up, its result for the request,
    /// then publication. Returns whom to wake.
    fn finish(&self, q: Queued, r: std::result::Result<(), DbError>) -> Option<OwnedAudience> {
        let landed = match &r {
            Ok(()) => Landed::Committed(q.first),
            Err(DbError::CommitUnknown(_)) => Landed::Unknown(q.first),
            Err(_) => Landed::Refused(q.first),
        };
        let committed = r.is_ok();
        if let Some(after) = q.after {
            // A follow-up that panics must not stop the writer.
            let run = std::panic::AssertUnwindSafe(|| after(self, landed));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!(first = q.first, "a commit's follow-up panicked");
                self.heads.retain(|_, _| false);
            }
        }
        let streams: &[Stream] = match &r {
            // Rows may exist: their streams count as moved, so no sync skips them once
            // a later commit publishes past them.
            Ok(()) | Err(DbError::CommitUnknown(_)) => &q.streams,
            Err(_) => &[],
        };
        *q.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.settle(q.last, streams, committed);
        committed.then_some(q.audience)
    }

    /// Settles positions up to `last` (the writer goes in order): the streams move,
    /// then, for a commit that landed, `current_pos`; then waiters are told.
    fn settle(&self, last: i64, streams: &[Stream], committed: bool) {
        // Heads move before the position is published: a sync that sees a position also
        // sees that these streams moved.
        for stream in streams {
            self.stream_heads[*stream as usize].fetch_max(last, Ordering::AcqRel);
        }
        if committed {
            self.current_pos.fetch_max(last, Ordering::AcqRel);
        }
        self.settled_upto.fetch_max(last, Ordering::AcqRel);
        self.settled_event.notify(usize::MAX);
    }

    /// Waits until everything up to `last` is settled.
    pub(crate) async fn published(&self, last: i64) {
        loop {
            if self.settled_upto.load(Ordering::Acquire) >= last {
                return;
            }
            let listener = self.settled_event.listen();
            if self.settled_upto.load(Ordering::Acquire) >= last {
                return;
            }
            listener.await;
        }
    }
}

/// The writer's group in hand. If the writer stops early (its task cancelled at
/// shutdown, or a panic), the group's fate is unknown and whatever is still queued gets
/// a new writer, so no request waits forever.
struct Writing<'a> {
    hs: &'a Homeserver,
    group: Vec<Queued>,
    /// Cleared when the writer leaves normally, having handed the queue back.
    armed: bool,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let hs = self.hs;
        for q in std::mem::take(&mut self.group) {
            let e = DbError::CommitUnknown("the write was interrupted".into());
            hs.finish(q, Err(e));
        }
        let Some(shared) = hs.me.upgrade() else {
            // Not shared (tests): no task can take over.
            hs.fail_queued();
            return;
        };
        let restart = {
            let mut q = hs.commit_queue.lock().unwrap_or_else(|e| e.into_inner());
            // Still this writer's queue (`writing` is only cleared by a writer).
            q.writing = !q.waiting.is_empty();
            q.writing
        };
        if restart {
            let task = Box::pin(async move { shared.write_queued().await });
            if hs.offload.spawn(task).is_some() {
                hs.fail_queued();
            }
        }
    }
}
