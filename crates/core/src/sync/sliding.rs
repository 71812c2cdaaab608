//! Simplified sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//! A connection's lists pick rooms from the user's rooms by recent activity; each room
//! goes out whole the first time and then only with what changed. A request's cost
//! follows what changed: the room index moves forward from the rooms that moved, and
//! rooms the connection already has are compared in memory.

pub mod connection;
mod extensions;
mod index;
mod lists;
pub mod request;
mod room;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, TryStreamExt};
use ruma::{DeviceId, OwnedRoomId, UserId};
use serde_json::{value::RawValue, Value as Json};

pub use self::{connection::pos_position, request::Request};
use self::{
    connection::{conn_key, pos_token, Conn, ConnKey, Generation, Sent},
    request::{RequiredState, RoomConfig},
    room::{Ctx, Outcome, Wanted},
};
use super::{filter::EventFilter, SyncToken};
use crate::{Homeserver, Result};

/// Rooms built at once (each is a few reads).
const ROOMS_AT_ONCE: usize = 8;

#[derive(serde::Serialize)]
struct Response<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    txn_id: Option<&'a str>,
    pos: String,
    lists: BTreeMap<&'a str, ListCount>,
    rooms: BTreeMap<OwnedRoomId, Box<RawValue>>,
    extensions: Json,
}

#[derive(serde::Serialize)]
struct ListCount {
    count: usize,
}

impl Homeserver {
    /// Long-polls (with a `pos`) until something for the connection moved, or the
    /// timeout; the answer is JSON text.
    pub async fn sliding_sync(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: Request,
        set_presence: Option<&'static str>,
    ) -> Result<String> {
        if let Some(state) = set_presence {
            self.mark_active(user, state).await?;
        }
        let key = conn_key(user, device, &req.conn_id);
        let conn = match &req.pos {
            None => self.new_connection(&key).await?,
            Some(pos) => {
                let conn = self
                    .connection(&key)
                    .await?
                    .ok_or_else(Self::unknown_pos_error)?;
                Self::base_generation(&*conn.lock().await, pos)?;
                conn
            }
        };
        // The to-device `since` acknowledges what came before it (MSC3885).
        if let Some(since) = req.extensions.to_device.as_ref().and_then(|t| t.since) {
            self.ack_to_device(user, device, since.min(self.current_pos()))
                .await?;
        }
        let timeout = match req.pos {
            Some(_) => req.timeout_ms.min(self.config.max_sync_timeout_ms),
            None => 0,
        };
        let deadline = self.clock.now_ms() + timeout;
        let mut filter = EventFilter::new(&Default::default())?;
        filter.ignoring(self.ignored_users(user));
        let _syncing = self.start_syncing(user);
        let mut seen = 0;
        let mut last: Option<String> = None;
        loop {
            let ticket = self.wakeups.ticket();
            self.expire_typing().await;
            if last.is_none() || self.changed_since(user, seen) {
                seen = self.tick();
                let mut c = conn.lock().await;
                let base = match &req.pos {
                    Some(pos) => Some(Self::base_generation(&c, pos)?),
                    None => None,
                };
                let (body, news) = self.sliding_once(&key, &mut c, base, &req, &filter).await?;
                if news || timeout == 0 {
                    return Ok(body);
                }
                last = Some(body);
            }
            let now = self.clock.now_ms();
            let remaining = deadline.saturating_sub(now);
            if remaining == 0 {
                if let Some(body) = last {
                    return Ok(body);
                }
            }
            let wake = self
                .next_typing_expiry()
                .map_or(remaining, |at| remaining.min(at.saturating_sub(now) + 1));
            self.wakeups.wait(ticket, Duration::from_millis(wake)).await;
        }
    }

    /// One pass: the answer as of now, and whether it holds anything new. An answer with
    /// something new (or a connection's first) hands out a new generation; one without
    /// gives the client its `pos` back.
    async fn sliding_once(
        &self,
        key: &ConnKey,
        conn: &mut Conn,
        base: Option<Generation>,
        req: &Request,
        filter: &EventFilter,
    ) -> Result<(String, bool)> {
        let user = UserId::parse(key.0.as_str()).map_err(crate::Error::internal)?;
        let device: &DeviceId = key.1.as_str().into();
        let fresh = base.is_none();
        let base = base.unwrap_or_default();
        let since = (!fresh).then_some(base.at.pos);
        let pos = match &req.extensions.to_device {
            Some(td) => {
                let from = td.since.unwrap_or(0);
                self.to_device_cap(&user, device, from, self.current_pos())
                    .await?
            }
            None => self.current_pos(),
        };
        let now = SyncToken {
            pos,
            typing: self.typing.serial(),
        };
        let mut index = match conn.index.take() {
            Some(mut index) if index.at.pos <= now.pos => {
                self.advance_index(&user, &mut index, now).await?;
                index
            }
            _ => self.build_index(&user, now).await?,
        };
        if lists::needs_attrs(&req.lists) {
            self.load_attrs(&user, &mut index).await?;
        }
        let ordered = lists::server_list(&index, &base);
        // The request's room configs, each with its `required_state` shared with the
        // connection's earlier requests where equal (so rooms compare by pointer).
        let mut configs: Vec<(&RoomConfig, Arc<RequiredState>)> = Vec::new();
        // (room, config, list) for each room of each list's window and each subscription,
        // grouped by room below (MSC4186 "Combining room configs"). Rooms are the index's
        // keys, so one room is one address.
        let mut pairs: Vec<(&OwnedRoomId, usize, Option<&str>)> = Vec::new();
        let mut counts = BTreeMap::new();
        let mut windows: BTreeMap<&str, Vec<&OwnedRoomId>> = BTreeMap::new();
        for (name, list) in &req.lists {
            let children = match &list.filters.spaces {
                Some(spaces) => Some(self.filter_spaces(&index, spaces).await?),
                None => None,
            };
            let (rooms, count) = lists::window(list, &ordered, &index, children.as_ref());
            counts.insert(name.as_str(), ListCount { count });
            configs.push((&list.config, conn.intern(&list.config.required_state)));
            let c = configs.len() - 1;
            pairs.extend(rooms.iter().map(|r| (*r, c, Some(name.as_str()))));
            windows.insert(name.as_str(), rooms);
        }
        // Subscriptions: rooms the user is, was or is asked to be in; others are ignored.
        let mut subscribed: Vec<&OwnedRoomId> = Vec::new();
        for (room, config) in &req.subscriptions {
            let Some((id, _)) = index.rooms.get_key_value(room) else {
                continue;
            };
            subscribed.push(id);
            configs.push((config, conn.intern(&config.required_state)));
            pairs.push((id, configs.len() - 1, None));
        }
        let addr = |r: &OwnedRoomId| r as *const OwnedRoomId as usize;
        pairs.sort_unstable_by_key(|p| (addr(p.0), p.1));
        let ctx = Ctx {
            user: &user,
            device,
            now,
            since,
            filter,
        };
        let mut rooms = BTreeMap::new();
        let mut sent_now: Vec<(OwnedRoomId, Sent)> = Vec::new();
        let mut quiet: Vec<(OwnedRoomId, Sent)> = Vec::new();
        let mut initial: Vec<&OwnedRoomId> = Vec::new();
        let mut work = Vec::new();
        for group in pairs.chunk_by(|a, b| addr(a.0) == addr(b.0)) {
            let Some(&(room, first, _)) = group.first() else {
                continue;
            };
            let Some(entry) = index.rooms.get(room) else {
                continue;
            };
            let is_dm = index.direct.contains(room);
            let sent = base.rooms.get(room);
            let single = group.iter().all(|p| p.1 == first);
            // The common case, in memory: one config, sent before as it is, nothing moved.
            if let (Some(s), true, Some((cfg, rs))) = (sent, single, configs.get(first)) {
                if s.membership == entry.m.membership
                    && Arc::ptr_eq(rs, &s.required_state)
                    && cfg.timeline_limit <= s.timeline_limit
                    && entry.touched <= s.pos
                    && entry.m.changed_pos <= s.pos
                    && s.is_dm == is_dm
                {
                    continue;
                }
            }
            let (config, required_state) = if single {
                match configs.get(first) {
                    Some((c, rs)) => (std::borrow::Cow::Borrowed(*c), rs.clone()),
                    None => continue,
                }
            } else {
                let mut c = RoomConfig::default();
                for (cfg, _) in group.iter().filter_map(|p| configs.get(p.1)) {
                    c.combine(cfg);
                }
                let rs = conn.intern(&c.required_state);
                (std::borrow::Cow::Owned(c), rs)
            };
            let w = Wanted {
                config,
                required_state,
                lists: group.iter().filter_map(|p| p.2).collect(),
                is_dm,
            };
            work.push((room, entry, w, sent));
        }
        // Rooms are built a few at once: on PostgreSQL each read is a round trip.
        let mut builds = Vec::with_capacity(work.len());
        for (room, entry, w, sent) in work {
            let ctx = &ctx;
            builds.push(async move {
                let out = self.sliding_room(ctx, room, entry, &w, sent).await?;
                Ok::<_, crate::Error>((room, sent, out))
            });
        }
        let built: Vec<(&OwnedRoomId, Option<&Sent>, Outcome)> = futures_util::stream::iter(builds)
            .buffered(ROOMS_AT_ONCE)
            .try_collect()
            .await?;
        for (room, sent, outcome) in built {
            match outcome {
                Outcome::Sent(json, s) => {
                    if sent.is_none() || json.get().contains("\"initial\":true") {
                        initial.push(room);
                    }
                    rooms.insert(room.clone(), json);
                    sent_now.push((room.clone(), s));
                }
                Outcome::Quiet(s) => quiet.push((room.clone(), s)),
                Outcome::Skip => {}
            }
        }
        // Rooms something moved in since the connection's previous answer.
        let touched: Vec<&OwnedRoomId> = match since {
            Some(s) => index
                .rooms
                .iter()
                .filter(|(_, e)| e.touched > s)
                .map(|(id, _)| id)
                .collect(),
            None => Vec::new(),
        };
        let scope = extensions::Rooms {
            lists: &windows,
            subscriptions: &subscribed,
            initial: &initial,
            touched: &touched,
        };
        let (extensions, ext_news) = self
            .sliding_extensions(
                &ctx,
                &req.extensions,
                &scope,
                now.pos,
                (!fresh).then_some(base.at.typing),
            )
            .await?;
        conn.index = Some(index);
        let news = !rooms.is_empty() || ext_news;
        let pos = if news || fresh {
            let mut next = self
                .commit_generation(key, conn, base, now, sent_now)
                .await?;
            for (room, s) in quiet {
                next.rooms.insert(room, s);
            }
            conn.current = next.clone();
            pos_token(conn.nonce, &next)
        } else {
            // Nothing new: the same position again (rooms looked at without news are
            // remembered in memory, so they are not looked at again).
            if base.generation == conn.current.generation {
                for (room, s) in quiet {
                    conn.current.rooms.insert(room, s);
                }
            }
            pos_token(conn.nonce, &base)
        };
        let body = Response {
            txn_id: req.txn_id.as_deref(),
            pos,
            lists: counts,
            rooms,
            extensions,
        };
        Ok((serde_json::to_string(&body)?, news))
    }
}
