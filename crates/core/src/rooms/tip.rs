//! Writes queued on a room but not yet published, so that the next write plans on the head
//! they leave (design brief, "Write path"): while one event of a room waits for its commit,
//! the next is planned and queued behind it, and both reach the database in one
//! transaction. One room's senders then share disk syncs as different rooms' do.
//!
//! Why a refused write cannot leave a successor behind: a linear event (its one prev event
//! is the room's one forward extremity) moves that extremity's row under a guard
//! (`write.rs`, `Step::replaces`), so a write planned on one that was refused is refused
//! too, in whatever batch it lands. Only such writes are queued behind others; any other
//! write waits until nothing is queued and keeps the room's lock until it is published.
//! A failure starts a new epoch: nothing planned before it is planned on again.

use std::sync::{Arc, Mutex};

use ruma::EventId;

use super::{head::RoomHead, state::Group, Pdu};

/// A room's planning lock, held.
pub(crate) struct RoomLock {
    pub(crate) gate: Arc<RoomGate>,
    pub(crate) guard: Option<async_lock::MutexGuardArc<()>>,
}

impl RoomGate {
    pub(crate) async fn lock(self: Arc<Self>) -> RoomLock {
        let guard = self.plan.lock_arc().await;
        RoomLock {
            gate: self,
            guard: Some(guard),
        }
    }
}

/// One room's write gate: the planning lock and the queued writes.
#[derive(Default)]
pub(crate) struct RoomGate {
    /// Held to plan a write. A linear write lets go once queued, any other once published.
    pub(crate) plan: Arc<async_lock::Mutex<()>>,
    tip: Mutex<Tip>,
}

#[derive(Default)]
struct Tip {
    /// Moves when a queued write fails: the writes queued behind it are doomed.
    epoch: u64,
    /// The head the last write queued in this epoch leaves; `None` when none is queued,
    /// and the committed head (`Homeserver::heads`, else the database) is the tip.
    head: Option<Arc<RoomHead>>,
    /// In position order.
    queued: Vec<Arc<Queued>>,
}

/// What a queued write planned, for the writes planned behind it.
pub(crate) struct Queued {
    /// Its first stream position, which names it.
    first: i64,
    /// Its last stream position: it is published once that one is.
    pub(crate) last: i64,
    epoch: u64,
    pub(crate) pdus: Vec<(Arc<Pdu>, (i64, i64))>,
    pub(crate) groups: Vec<(i64, Group)>,
    /// `[user, device, scope, txn_id]` of local events.
    pub(crate) txns: Vec<[String; 4]>,
}

impl Queued {
    pub(crate) fn new(
        pdus: Vec<(Arc<Pdu>, (i64, i64))>,
        groups: Vec<(i64, Group)>,
        txns: Vec<[String; 4]>,
    ) -> Self {
        Self {
            first: 0,
            last: 0,
            epoch: 0,
            pdus,
            groups,
            txns,
        }
    }
}

/// The tip a write starts on: its epoch, the head (if writes are queued) and what they
/// planned, newest first.
pub(crate) struct TipView {
    pub(crate) epoch: u64,
    pub(crate) head: Option<Arc<RoomHead>>,
    pub(crate) behind: Vec<Arc<Queued>>,
}

impl TipView {
    pub(crate) fn pdu(&self, id: &EventId) -> Option<&Arc<Pdu>> {
        self.behind
            .iter()
            .flat_map(|q| q.pdus.iter())
            .find(|(p, _)| p.event_id == id)
            .map(|(p, _)| p)
    }

    pub(crate) fn place(&self, id: &EventId) -> Option<(i64, i64)> {
        self.behind
            .iter()
            .flat_map(|q| q.pdus.iter())
            .find(|(p, _)| p.event_id == id)
            .map(|(_, place)| *place)
    }

    pub(crate) fn group(&self, id: i64) -> Option<&Group> {
        self.behind
            .iter()
            .flat_map(|q| q.groups.iter())
            .find(|(g, _)| *g == id)
            .map(|(_, g)| g)
    }
}

/// A queued write's way out of the tip, taken by its follow-up; if the follow-up panics
/// first, the write counts as failed, so nothing stays queued (or planned on) forever.
pub(crate) struct TipRelease {
    gate: Arc<RoomGate>,
    first: Option<i64>,
}

impl TipRelease {
    pub(crate) fn new(gate: Arc<RoomGate>) -> Self {
        Self { gate, first: None }
    }

    /// Names the write, by its first position, as its follow-up starts.
    pub(crate) fn start(&mut self, first: i64) {
        self.first = Some(first);
    }

    pub(crate) fn landed(mut self) {
        if let Some(first) = self.first.take() {
            self.gate.landed(first);
        }
    }

    pub(crate) fn failed(mut self) {
        if let Some(first) = self.first.take() {
            self.gate.failed(first);
        }
    }
}

impl Drop for TipRelease {
    fn drop(&mut self) {
        if let Some(first) = self.first {
            self.gate.failed(first);
        }
    }
}

/// Why a write could not be queued: a write it was planned behind failed, so it must be
/// planned again. The same as the database's refusal of a write planned on a stale head.
#[derive(Debug)]
pub(crate) struct Doomed;

impl From<Doomed> for crate::Error {
    fn from(_: Doomed) -> Self {
        crate::Error::Db(crate::ports::DbError::Conflict)
    }
}

impl RoomGate {
    /// The tip, for a write about to be planned (under `plan`).
    pub(crate) fn view(&self) -> TipView {
        let tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        TipView {
            epoch: tip.epoch,
            head: tip.head.clone(),
            behind: tip
                .queued
                .iter()
                .rev()
                .filter(|q| q.epoch == tip.epoch)
                .cloned()
                .collect(),
        }
    }

    /// The last position of a queued write of this local transaction, if one is queued.
    pub(crate) fn queued_txn(&self, txn: &[&str; 4]) -> Option<i64> {
        let tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        tip.queued
            .iter()
            .find(|q| {
                q.txns
                    .iter()
                    .any(|t| t.iter().zip(txn).all(|(a, b)| a == b))
            })
            .map(|q| q.last)
    }

    /// The last position of every queued write, if any is queued.
    pub(crate) fn last_queued(&self) -> Option<i64> {
        let tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        tip.queued.iter().map(|q| q.last).max()
    }

    /// The epoch now (a write planned in another has to be planned again).
    pub(crate) fn epoch(&self) -> u64 {
        self.tip.lock().unwrap_or_else(|e| e.into_inner()).epoch
    }

    /// Queues a linear write planned in `epoch`: `enqueue` takes its positions (returning
    /// the first and last) while no failure can intervene, then it becomes the tip.
    pub(crate) fn queue<T>(
        &self,
        epoch: u64,
        head: Arc<RoomHead>,
        mut planned: Queued,
        enqueue: impl FnOnce() -> (i64, i64, T),
    ) -> Result<T, Doomed> {
        let mut tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        if tip.epoch != epoch {
            return Err(Doomed);
        }
        let (first, last, ticket) = enqueue();
        planned.first = first;
        planned.last = last;
        planned.epoch = epoch;
        tip.queued.push(Arc::new(planned));
        tip.head = Some(head);
        Ok(ticket)
    }

    /// A queued write was published (its follow-up ran): it leaves the tip, and the
    /// committed head is the tip again once the epoch's last write is out.
    pub(crate) fn landed(&self, first: i64) {
        let mut tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        tip.queued.retain(|q| q.first != first);
        let epoch = tip.epoch;
        if !tip.queued.iter().any(|q| q.epoch == epoch) {
            tip.head = None;
        }
    }

    /// A queued write failed (or may have): if it was of this epoch, the writes behind it
    /// are doomed, and the next write plans on the committed head.
    pub(crate) fn failed(&self, first: i64) {
        let mut tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = tip.epoch;
        let mine = tip
            .queued
            .iter()
            .find(|q| q.first == first)
            .map(|q| q.epoch);
        tip.queued.retain(|q| q.first != first);
        if mine.is_none_or(|e| e == epoch) {
            tip.epoch += 1;
            tip.head = None;
        }
    }

    /// Held by nobody, and nothing queued: the gate may go.
    pub(crate) fn idle(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && Arc::strong_count(&self.plan) == 1
    }
}
