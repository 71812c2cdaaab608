//! Delivering notifications to push gateways (spec: Push Gateway API, "Homeserver
//! behaviour"). Nothing is queued apart: each pusher remembers the stream position it has
//! pushed up to, and the notifications after it are the push outcomes the write path
//! committed with each event (`evaluate.rs`). So a crash loses none, and one that comes
//! between the gateway's answer and the pusher's move sends one again (gateways drop
//! duplicates by `event_id`, as the spec asks).
//!
//! One background task sends them. An event's commit marks the room's local members who
//! have pushers; the task takes marked users a few at a time, one request in flight per
//! pusher. A gateway that fails is retried with exponential back-off, kept in the pusher's
//! row so that it survives restarts; a notification that has failed for a day is dropped.
//! A pushkey the gateway rejects loses its pusher.
//!
//! A read receipt that changes the user's badge sends each pusher the new count alone (as
//! Synapse does, so phones clear their badges); best effort, in memory only: a lost one
//! is made good by the next notification's count.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use ruma::{events::StateEventType, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Map, Value as Json};

use crate::{
    ports::{PushError, Row, Value},
    rooms::{head::LocalMembers, read::content_str},
    Error, Homeserver, Result,
};

/// Notifications sent per pusher before others get their turn.
const PER_TURN: i64 = 20;
/// Users served at once.
const USERS_AT_ONCE: usize = 8;
/// Users taken from the marked ones per round.
const USERS_PER_ROUND: usize = 64;
/// Back-off: the first retry after a second, doubling up to an hour; a notification
/// failing for a day is given up.
const FIRST_RETRY_MS: i64 = 1_000;
const MAX_RETRY_MS: i64 = 3_600_000;
const GIVE_UP_MS: i64 = 24 * 3_600_000;
/// How long one user's turn may take before the others get theirs (a slow gateway).
const TURN_BUDGET_MS: i64 = 15_000;
/// The longest the task sleeps without looking (it is woken by commits anyway).
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Which users have pushers and which have something to push: in memory, rebuilt from
/// the `pushers` table at start-up.
#[derive(Default)]
pub(crate) struct PushQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Users who may have pushers, with a count of times noted (a user is forgotten
    /// only if not noted again since they were found to have none).
    users: HashMap<String, u64>,
    /// Users with something new to push, with the position it is at: a user is served
    /// once that position is published (marks are made just before).
    marked: HashMap<String, i64>,
    /// The earliest `retry_at` of a failing pusher, if known.
    next_retry: Option<i64>,
    /// Users whose badge may have changed through a read receipt.
    badges: std::collections::HashSet<String>,
    /// The badge each pusher (user, app ID, pushkey) was last sent.
    sent_badges: HashMap<(String, String, String), u64>,
}

impl PushQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user has a pusher now.
    pub(crate) fn note_user(&self, user: &str) {
        let mut s = self.lock();
        *s.users.entry(user.to_owned()).or_default() += 1;
        s.marked.entry(user.to_owned()).or_insert(0);
    }

    fn mark(&self, user: &str) {
        self.lock().marked.entry(user.to_owned()).or_insert(0);
    }

    /// The user read something: if they have pushers, their badge is sent again.
    pub(crate) fn mark_badge(&self, user: &str) {
        let mut s = self.lock();
        if s.users.contains_key(user) {
            s.badges.insert(user.to_owned());
            s.marked.entry(user.to_owned()).or_insert(0);
        }
    }

    fn take_badge(&self, user: &str) -> bool {
        self.lock().badges.remove(user)
    }

    fn badge_sent(&self, user: &UserId, pusher: &Pusher, badge: u64) {
        let key = (
            user.to_string(),
            pusher.app_id.clone(),
            pusher.pushkey.clone(),
        );
        self.lock().sent_badges.insert(key, badge);
    }

    fn last_badge(&self, user: &UserId, pusher: &Pusher) -> Option<u64> {
        let key = (
            user.to_string(),
            pusher.app_id.clone(),
            pusher.pushkey.clone(),
        );
        self.lock().sent_badges.get(&key).copied()
    }

    fn forget_pushers(&self, user: &str) {
        self.lock().sent_badges.retain(|(u, _, _), _| u != user);
    }

    /// An event that notifies someone committed at `pos` in a room with these local
    /// members. Whichever set is smaller is walked.
    pub(crate) fn mark_members(&self, members: &LocalMembers, pos: i64) {
        let mut s = self.lock();
        if s.users.is_empty() {
            return;
        }
        let found: Vec<String> = if s.users.len() <= members.len() {
            s.users
                .keys()
                .filter(|u| members.contains(*u))
                .cloned()
                .collect()
        } else {
            members
                .iter()
                .filter(|u| s.users.contains_key(*u))
                .cloned()
                .collect()
        };
        for user in found {
            let at = s.marked.entry(user).or_insert(pos);
            *at = (*at).max(pos);
        }
    }

    fn retry_by(&self, at: i64) {
        let mut s = self.lock();
        s.next_retry = Some(s.next_retry.map_or(at, |n| n.min(at)));
    }
}

/// A pusher as delivery reads it.
#[derive(Clone)]
struct Pusher {
    app_id: String,
    pushkey: String,
    data: Map<String, Json>,
    updated_ts: i64,
    pushed_upto: i64,
    failures: i64,
    failing_since: Option<i64>,
}

impl Pusher {
    fn of(r: &Row) -> Result<Self> {
        let data = match serde_json::from_str(&r.text(2)?) {
            Ok(Json::Object(d)) => d,
            _ => Map::new(),
        };
        Ok(Pusher {
            app_id: r.text(0)?,
            pushkey: r.text(1)?,
            data,
            updated_ts: r.int(3)?,
            pushed_upto: r.int(4)?,
            failures: r.int(5)?,
            failing_since: r.opt_int(6)?,
        })
    }

    fn url(&self) -> Option<&str> {
        self.data.get("url").and_then(Json::as_str)
    }
}

/// One notification to send: the event and what it does for the user.
struct Due {
    room: OwnedRoomId,
    pos: i64,
    event_id: String,
    highlight: bool,
    sound: Option<String>,
}

/// The pusher as the notification's `devices` entry names it (spec: `Device`): its
/// `data` without the `url`.
fn device_json(pusher: &Pusher, tweaks: Map<String, Json>) -> Json {
    let mut data = pusher.data.clone();
    data.remove("url");
    json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.updated_ts / 1000,
        "data": data,
        "tweaks": tweaks,
    })
}

/// The delay before retry number `failures` (1 for the first).
fn backoff_ms(failures: i64) -> i64 {
    let doublings = failures.saturating_sub(1).clamp(0, 30) as u32;
    FIRST_RETRY_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_RETRY_MS)
}

impl Homeserver {
    /// Gives the homeserver its push gateway client; without one, nothing is pushed.
    pub fn with_push_gateway(mut self, gateway: Arc<dyn crate::ports::PushGateway>) -> Self {
        self.push_gateway = Some(gateway);
        self
    }

    /// Starts the delivery task. It holds the homeserver only while it works, so a
    /// homeserver that is dropped stops it.
    pub async fn start_push_delivery(&self) -> Result<()> {
        if self.push_gateway.is_none() {
            return Ok(());
        }
        // After a restart every user with a pusher is looked at: what was not pushed
        // before the stop goes now.
        let rows = self
            .db
            .query("SELECT DISTINCT user_id FROM pushers", vec![])
            .await?;
        for r in &rows {
            self.push_queue.note_user(&r.text(0)?);
        }
        let me = self.me.clone();
        let wakeups = self.wakeups.clone();
        let task = Box::pin(async move {
            loop {
                let ticket = wakeups.ticket();
                let wait = {
                    let Some(hs) = me.upgrade() else { return };
                    hs.push_round().await
                };
                if let Some(wait) = wait {
                    wakeups.wait(ticket, wait).await;
                }
            }
        });
        if self.offload.spawn(task).is_some() {
            tracing::warn!("push delivery could not start: the host is shutting down");
        }
        Ok(())
    }

    /// One round: the marked users' pushers, and failing pushers whose time came. Gives
    /// how long to wait for more, or `None` to go on at once.
    async fn push_round(&self) -> Option<Duration> {
        let now = self.now();
        let published = self.current_pos();
        let (mut users, retry_due) = {
            let mut s = self.push_queue.lock();
            let users: Vec<String> = s
                .marked
                .iter()
                .filter(|(_, pos)| **pos <= published)
                .map(|(u, _)| u.clone())
                .take(USERS_PER_ROUND)
                .collect();
            for u in &users {
                s.marked.remove(u);
            }
            let due = s.next_retry.is_some_and(|t| t <= now);
            if due {
                s.next_retry = None;
            }
            (users, due)
        };
        if retry_due {
            match self.failing_users(now).await {
                Ok(more) => users.extend(more),
                // Looked at again in a while.
                Err(e) => {
                    tracing::warn!("push delivery: {e}");
                    self.push_queue.retry_by(now + FIRST_RETRY_MS);
                }
            }
            users.sort();
            users.dedup();
        }
        futures_util::stream::iter(users)
            .for_each_concurrent(USERS_AT_ONCE, |user| async move {
                if let Err(e) = self.push_user(&user).await {
                    tracing::warn!("push delivery for {user}: {e}");
                }
            })
            .await;
        let s = self.push_queue.lock();
        // More to do now; marks not yet published wake the task when they are.
        let published = self.current_pos();
        if s.marked.values().any(|pos| *pos <= published) {
            return None;
        }
        let until_retry = s
            .next_retry
            .map(|t| Duration::from_millis(t.saturating_sub(self.now()).max(0) as u64));
        Some(until_retry.map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT)))
    }

    /// Users with a failing pusher due for a retry; notes when the next one is due.
    async fn failing_users(&self, now: i64) -> Result<Vec<String>> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT user_id FROM pushers WHERE retry_at <= $1 LIMIT $2",
                vec![Value::Int(now), Value::Int(USERS_PER_ROUND as i64)],
            )
            .await?;
        let next = self
            .db
            .query(
                "SELECT MIN(retry_at) FROM pushers WHERE retry_at > $1",
                vec![Value::Int(now)],
            )
            .await?;
        if let Some(t) = next.first().map(|r| r.opt_int(0)).transpose()?.flatten() {
            self.push_queue.retry_by(t);
        }
        if rows.len() >= USERS_PER_ROUND {
            self.push_queue.retry_by(now);
        }
        rows.iter()
            .map(|r| r.text(0))
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Sends what the user's pushers have not sent yet, a turn's worth each.
    async fn push_user(&self, user: &str) -> Result<()> {
        let noted = self.push_queue.lock().users.get(user).copied();
        let rows = self
            .db
            .query(
                "SELECT app_id, pushkey, data, updated_ts, pushed_upto, failures, failing_since, retry_at
                 FROM pushers WHERE user_id = $1 AND kind = 'http' LIMIT $2",
                vec![
                    user.into(),
                    Value::Int(super::pushers::MAX_PUSHERS_PER_USER as i64),
                ],
            )
            .await?;
        let badge_due = self.push_queue.take_badge(user);
        if rows.is_empty() {
            self.push_queue.forget_pushers(user);
            let mut s = self.push_queue.lock();
            if s.users.get(user).copied() == noted {
                s.users.remove(user);
            }
            return Ok(());
        }
        let Ok(user_id) = UserId::parse(user) else {
            return Ok(());
        };
        let now = self.now();
        // The badge is counted once per turn, when something is sent.
        let mut badge = None;
        for r in &rows {
            // A slow gateway holds back this user's other pushers for a while only.
            if self.now() - now > TURN_BUDGET_MS {
                self.push_queue.mark(user);
                break;
            }
            if r.opt_int(7)?.is_some_and(|t| t > now) {
                self.push_queue.retry_by(r.opt_int(7)?.unwrap_or(now));
                continue;
            }
            let pusher = Pusher::of(r)?;
            self.push_pusher(&user_id, pusher.clone(), &mut badge)
                .await?;
            if badge_due {
                self.push_badge(&user_id, pusher, &mut badge).await?;
            }
        }
        Ok(())
    }

    /// Sends the pusher the user's badge alone, if it is not what it was last sent.
    async fn push_badge(
        &self,
        user: &UserId,
        pusher: Pusher,
        badge: &mut Option<u64>,
    ) -> Result<()> {
        let (Some(gateway), Some(url)) = (self.push_gateway.clone(), pusher.url()) else {
            return Ok(());
        };
        let unread = match *badge {
            Some(b) => b,
            None => *badge.insert(self.unread_badge(user).await?),
        };
        if self.push_queue.last_badge(user, &pusher) == Some(unread) {
            return Ok(());
        }
        // Unlike a notification's, a zero count is sent: it is what clears the badge
        // (push gateways such as Sygnal leave a badge alone when the count is absent).
        let body = json!({ "notification": {
            "counts": { "unread": unread },
            "prio": "low",
            "devices": [device_json(&pusher, Map::new())],
        } });
        match gateway.notify(url, serde_json::to_vec(&body)?).await {
            Ok(_) | Err(PushError::Refused(_)) => self.push_queue.badge_sent(user, &pusher, unread),
            // Best effort: the next notification carries the count anyway.
            Err(PushError::Failed(why)) => {
                tracing::info!(
                    "push gateway of {user}'s pusher {} failed a badge: {why}",
                    pusher.app_id
                );
            }
        }
        Ok(())
    }

    /// One pusher's turn.
    async fn push_pusher(
        &self,
        user: &UserId,
        mut pusher: Pusher,
        badge: &mut Option<u64>,
    ) -> Result<()> {
        let Some(gateway) = self.push_gateway.clone() else {
            return Ok(());
        };
        let upto = self.current_pos();
        let due = self
            .due_notifications(user, pusher.pushed_upto, upto)
            .await?;
        let complete = (due.len() as i64) < PER_TURN;
        for n in &due {
            let Some(url) = pusher.url().map(str::to_owned) else {
                break;
            };
            let unread = match *badge {
                Some(b) => b,
                None => *badge.insert(self.unread_badge(user).await?),
            };
            let body = self.notification_body(user, &pusher, n, unread).await?;
            match gateway.notify(&url, serde_json::to_vec(&body)?).await {
                Ok(rejected) if rejected.contains(&pusher.pushkey) => {
                    // Spec: the homeserver must stop and remove the pusher.
                    tracing::info!(
                        "push gateway rejected the pushkey of {user}'s pusher {}; removing it",
                        pusher.app_id
                    );
                    self.db
                        .execute(
                            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                            vec![user.as_str().into(), pusher.app_id.as_str().into(), pusher.pushkey.as_str().into()],
                        )
                        .await?;
                    return Ok(());
                }
                Ok(_) => {
                    self.push_queue.badge_sent(user, &pusher, unread);
                    if !self.pushed(user, &mut pusher, n.pos).await? {
                        return Ok(());
                    }
                }
                Err(PushError::Refused(why)) => {
                    tracing::warn!(
                        "push gateway of {user}'s pusher {} refused a notification: {why}",
                        pusher.app_id
                    );
                    if !self.pushed(user, &mut pusher, n.pos).await? {
                        return Ok(());
                    }
                }
                Err(PushError::Failed(why)) => {
                    let now = self.now();
                    let since = pusher.failing_since.unwrap_or(now);
                    if now - since >= GIVE_UP_MS {
                        tracing::warn!(
                            "push gateway of {user}'s pusher {} failed for a day; dropping a notification: {why}",
                            pusher.app_id
                        );
                        if !self.pushed(user, &mut pusher, n.pos).await? {
                            return Ok(());
                        }
                        continue;
                    }
                    let failures = pusher.failures + 1;
                    let at = now + backoff_ms(failures);
                    tracing::info!(
                        "push gateway of {user}'s pusher {} failed ({why}); retrying in {} ms",
                        pusher.app_id,
                        at - now
                    );
                    self.db
                        .execute(
                            "UPDATE pushers SET failures = $4, failing_since = $5, retry_at = $6
                             WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                            vec![
                                user.as_str().into(),
                                pusher.app_id.as_str().into(),
                                pusher.pushkey.as_str().into(),
                                Value::Int(failures),
                                Value::Int(since),
                                Value::Int(at),
                            ],
                        )
                        .await?;
                    self.push_queue.retry_by(at);
                    return Ok(());
                }
            }
        }
        if complete {
            // Nothing else notified the user up to `upto`: later turns start there.
            if pusher.pushed_upto < upto {
                self.pushed(user, &mut pusher, upto).await?;
            }
        } else {
            self.push_queue.mark(user.as_str());
        }
        Ok(())
    }

    /// The pusher has sent everything up to `pos`; `false` when its row is gone (deleted
    /// meanwhile): its turn ends.
    async fn pushed(&self, user: &UserId, pusher: &mut Pusher, pos: i64) -> Result<bool> {
        let changed = self
            .db
            .execute(
                "UPDATE pushers SET pushed_upto = $4, failures = 0, failing_since = NULL, retry_at = NULL
                 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND pushed_upto < $4",
                vec![
                    user.as_str().into(),
                    pusher.app_id.as_str().into(),
                    pusher.pushkey.as_str().into(),
                    Value::Int(pos),
                ],
            )
            .await?;
        pusher.pushed_upto = pos;
        pusher.failures = 0;
        pusher.failing_since = None;
        Ok(changed > 0)
    }

    /// The events in `(after, upto]` that notify the user, oldest first: in rooms they
    /// are joined to (after their join), and invites of them.
    async fn due_notifications(&self, user: &UserId, after: i64, upto: i64) -> Result<Vec<Due>> {
        let rows = self
            .db
            .query(
                "SELECT e.room_id, e.stream_pos, e.event_id, COALESCE(x.highlight, e.highlight),
                        CASE WHEN x.user_id IS NULL THEN e.sound ELSE x.sound END
                 FROM memberships m
                 JOIN push_events e ON e.room_id = m.room_id AND e.stream_pos >= m.stream_pos
                 LEFT JOIN push_exceptions x ON x.room_id = e.room_id AND x.user_id = $1 AND x.stream_pos = e.stream_pos
                 WHERE m.user_id = $1 AND e.sender <> $1
                   AND e.stream_pos > $2 AND e.stream_pos <= $3 AND COALESCE(x.notify, e.notify) = 1
                   AND ((m.membership = 'join' AND e.stream_pos > m.stream_pos)
                        OR (m.membership = 'invite' AND e.stream_pos = m.stream_pos AND x.user_id IS NOT NULL))
                 ORDER BY e.stream_pos LIMIT $4",
                vec![
                    user.as_str().into(),
                    Value::Int(after),
                    Value::Int(upto),
                    Value::Int(PER_TURN),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    room: OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?,
                    pos: r.int(1)?,
                    event_id: r.text(2)?,
                    highlight: r.int(3)? != 0,
                    sound: r.opt_text(4)?,
                })
            })
            .collect()
    }

    /// The request body (spec: `POST /_matrix/push/v1/notify`): with `data.format`
    /// `event_id_only`, only the event's and room's IDs, the counts and the device.
    async fn notification_body(
        &self,
        user: &UserId,
        pusher: &Pusher,
        n: &Due,
        unread: u64,
    ) -> Result<Json> {
        let mut tweaks = Map::new();
        if let Some(sound) = &n.sound {
            tweaks.insert("sound".into(), sound.clone().into());
        }
        if n.highlight {
            tweaks.insert("highlight".into(), true.into());
        }
        let event_id_only =
            pusher.data.get("format").and_then(Json::as_str) == Some("event_id_only");
        let mut counts = Map::new();
        // Spec: counts that are zero are left out.
        if unread > 0 {
            counts.insert("unread".into(), unread.into());
        }
        let mut notification = json!({
            "event_id": n.event_id,
            "room_id": n.room,
            "counts": counts,
            "devices": [device_json(pusher, tweaks)],
        });
        let pdu = match ruma::EventId::parse(&n.event_id) {
            Ok(id) => self.get_pdu(&id).await?,
            Err(_) => None,
        };
        let Some(pdu) = pdu else {
            return Ok(json!({ "notification": notification }));
        };
        // Encrypted events and those the user must see at once wake the device; the rest
        // may wait (spec: `prio`).
        let high = pdu.kind == ruma::events::TimelineEventType::RoomEncrypted
            || n.highlight
            || n.sound.is_some();
        notification["prio"] = if high { "high" } else { "low" }.into();
        if event_id_only {
            return Ok(json!({ "notification": notification }));
        }
        notification["type"] = pdu.kind.to_string().into();
        notification["sender"] = pdu.sender.as_str().into();
        if let Ok(content) = serde_json::from_str::<Json>(pdu.content.get()) {
            notification["content"] = content;
        }
        if pdu.kind == ruma::events::TimelineEventType::RoomMember {
            notification["user_is_target"] =
                (pdu.state_key.as_deref() == Some(user.as_str())).into();
        }
        let state = |kind: StateEventType, key: &str| {
            let key = key.to_owned();
            let room = n.room.clone();
            async move { self.current_state_pdu(&room, kind, &key).await }
        };
        if let Some(name) = state(StateEventType::RoomMember, pdu.sender.as_str())
            .await?
            .and_then(|m| content_str(&m, "displayname"))
        {
            notification["sender_display_name"] = name.into();
        }
        if let Some(name) = state(StateEventType::RoomName, "")
            .await?
            .and_then(|p| content_str(&p, "name"))
            .filter(|s| !s.is_empty())
        {
            notification["room_name"] = name.into();
        }
        if let Some(alias) = state(StateEventType::RoomCanonicalAlias, "")
            .await?
            .and_then(|p| content_str(&p, "alias"))
            .filter(|s| !s.is_empty())
        {
            notification["room_alias"] = alias.into();
        }
        Ok(json!({ "notification": notification }))
    }

    /// A state event of the room's current state.
    async fn current_state_pdu(
        &self,
        room: &RoomId,
        kind: StateEventType,
        key: &str,
    ) -> Result<Option<Arc<crate::rooms::Pdu>>> {
        let head = self.room_head(room).await?;
        match head.state.get(&(kind, key.to_owned())) {
            Some(id) => self.get_pdu(id).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_an_hour() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(3), 4_000);
        assert_eq!(backoff_ms(13), MAX_RETRY_MS);
        assert_eq!(backoff_ms(i64::MAX), MAX_RETRY_MS);
    }

    #[test]
    fn marking_walks_the_smaller_set() {
        let q = PushQueue::default();
        let members: LocalMembers = ["@a:x", "@b:x", "@c:x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        q.mark_members(&members, 5);
        assert!(q.lock().marked.is_empty(), "nobody has a pusher");
        q.note_user("@b:x");
        q.lock().marked.clear();
        q.mark_members(&members, 5);
        q.mark_members(&members, 3);
        assert_eq!(
            q.lock().marked.iter().collect::<Vec<_>>(),
            [(&"@b:x".to_owned(), &5)]
        );
    }
}
