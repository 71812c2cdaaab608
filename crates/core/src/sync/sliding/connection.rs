//! Sliding sync connections (MSC4186 "Connections"): per user, device and `conn_id`,
//! what the connection sent of each room as of the last two positions handed out. The
//! client may retry the previous position (it never saw the answer to it), so both are
//! kept; a position older than that, or not this device's, is `M_UNKNOWN_POS`.
//!
//! Kept in memory (bounded) and in the database, written before the answer goes out:
//! `sliding_connections` holds the positions, `sliding_rooms` a row per room sent, with
//! the generation that sent it. After a restart the rooms sent in a generation the client
//! never confirmed count as not sent, so they go out whole again: nothing is lost.

use std::sync::Arc;

use ruma::{DeviceId, OwnedRoomId, UserId};

use super::{index::RoomIndex, request::RequiredState};
use crate::{
    ports::{Statement, Value},
    sync::SyncToken,
    Error, Homeserver, Result,
};

/// Connections a device may keep; the least recently used go first (MSC4186 "Security
/// considerations": bound what a client may make the server store).
const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Connections kept in memory, each with its user's room index (about 300 bytes a room);
/// the others are read back from the database when used.
pub(crate) const CACHED_CONNECTIONS: usize = 128;

pub(crate) type ConnKey = (String, String, String);
pub(crate) type ConnCache = crate::cache::BoundedCache<ConnKey, Arc<async_lock::Mutex<Conn>>>;

/// What a connection last sent of a room.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Sent {
    /// Everything of the room up to here was sent (the leave, for a room left).
    pub(super) pos: i64,
    pub(super) membership: String,
    pub(super) timeline_limit: usize,
    pub(super) required_state: Arc<RequiredState>,
    /// Notification and highlight counts, and `is_dm`, as sent.
    pub(super) counts: (u64, u64),
    pub(super) is_dm: bool,
}

/// The connection as of one position handed out.
#[derive(Clone, Debug, Default)]
pub(super) struct Generation {
    pub(super) generation: i64,
    pub(super) at: SyncToken,
    pub(super) rooms: imbl::HashMap<OwnedRoomId, Sent>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(super) nonce: i64,
    pub(super) current: Generation,
    pub(super) previous: Option<Generation>,
    /// The user's rooms, moved forward by each request (not part of a generation: it is
    /// the server's view, not the client's).
    pub(super) index: Option<RoomIndex>,
    /// The `required_state` configs in use, shared by the rooms sent with them.
    pub(super) interned: Vec<Arc<RequiredState>>,
}

/// Distinct `required_state` configs a connection shares (clients use a handful).
const MAX_INTERNED: usize = 32;

impl Conn {
    /// The connection's shared copy of `rs`: rooms sent with equal configs hold one
    /// allocation, and compare by pointer.
    pub(super) fn intern(&mut self, rs: &RequiredState) -> Arc<RequiredState> {
        if let Some(a) = self.interned.iter().find(|a| ***a == *rs) {
            return a.clone();
        }
        let a = Arc::new(rs.clone());
        if self.interned.len() >= MAX_INTERNED {
            self.interned.remove(0);
        }
        self.interned.push(a.clone());
        a
    }
}

/// `pos`: `p{nonce}.{generation}.{stream position}.{typing}`. The stream position makes
/// it usable in `/messages` like a `/sync` `next_batch` (MSC4186).
pub(super) fn pos_token(nonce: i64, g: &Generation) -> String {
    format!("p{nonce}.{}.{}.{}", g.generation, g.at.pos, g.at.typing)
}

/// The nonce and generation a `pos` names.
pub(super) fn parse_pos(s: &str) -> Option<(i64, i64)> {
    let mut parts = s.strip_prefix('p')?.split('.');
    let nonce = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    Some((nonce, generation))
}

/// The stream position of a sliding sync `pos`, for the pagination APIs.
pub fn pos_position(s: &str) -> Option<i64> {
    let mut parts = s.strip_prefix('p')?.split('.');
    parts.next()?;
    parts.next()?;
    parts.next()?.parse().ok().filter(|p: &i64| *p >= 0)
}

fn unknown_pos() -> Error {
    Error::Matrix(
        ruma::api::error::ErrorKind::UnknownPos,
        "Unknown position: start the connection again".into(),
    )
}

impl Homeserver {
    /// The connection, from memory or the database; `None` when it does not exist.
    pub(super) async fn connection(
        &self,
        key: &ConnKey,
    ) -> Result<Option<Arc<async_lock::Mutex<Conn>>>> {
        if let Some(c) = self.sliding.get(key) {
            return Ok(Some(c));
        }
        let (user, device, conn_id) = key;
        let k = || -> Vec<Value> { vec![user.into(), device.into(), conn_id.into()] };
        let Some(row) = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT nonce, generation, pos, typing, prev_generation, prev_pos, prev_typing
             FROM sliding_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
            k(),
        )
        .await?
        else {
            return Ok(None);
        };
        let token = |i: usize| -> Result<SyncToken> {
            Ok(SyncToken {
                pos: row.int(i)?,
                typing: u64::try_from(row.int(i + 1)?).unwrap_or(0),
            })
        };
        let mut current = Generation {
            generation: row.int(1)?,
            at: token(2)?,
            rooms: Default::default(),
        };
        let prev_generation = row.int(4)?;
        let mut previous = (prev_generation > 0).then(|| Generation {
            generation: prev_generation,
            at: SyncToken::default(),
            rooms: Default::default(),
        });
        if let Some(p) = previous.as_mut() {
            p.at = token(5)?;
        }
        let rows = self
            .db
            .query(
                "SELECT room_id, generation, pos, membership, timeline_limit, required_state, counts
                 FROM sliding_rooms WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
                k(),
            )
            .await?;
        let mut interned: std::collections::HashMap<String, Arc<RequiredState>> =
            Default::default();
        for r in &rows {
            let Ok(room) = OwnedRoomId::try_from(r.text(0)?) else {
                continue;
            };
            let generation = r.int(1)?;
            let counts = r.text(6)?;
            let mut c = counts.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
            let sent = Sent {
                pos: r.int(2)?,
                membership: r.text(3)?,
                timeline_limit: usize::try_from(r.int(4)?).unwrap_or(0),
                required_state: interned
                    .entry(r.text(5)?)
                    .or_insert_with_key(|t| Arc::new(RequiredState::from_text(t)))
                    .clone(),
                counts: (c.next().unwrap_or(0), c.next().unwrap_or(0)),
                is_dm: c.next() == Some(1),
            };
            // A room last sent after the previous generation: the previous one does not
            // know what it had sent before, so it counts the room as not sent.
            if let Some(p) = previous.as_mut() {
                if generation <= p.generation {
                    p.rooms.insert(room.clone(), sent.clone());
                }
            }
            if generation <= current.generation {
                current.rooms.insert(room, sent);
            }
        }
        let conn = Arc::new(async_lock::Mutex::new(Conn {
            nonce: row.int(0)?,
            current,
            previous,
            index: None,
            interned: interned.into_values().take(MAX_INTERNED).collect(),
        }));
        self.sliding.put(key.clone(), conn.clone());
        Ok(Some(conn))
    }

    /// The generation a request's `pos` names: the current one, or the previous one (a
    /// retry); anything else is `M_UNKNOWN_POS`.
    pub(super) fn base_generation(conn: &Conn, pos: &str) -> Result<Generation> {
        let (nonce, generation) = parse_pos(pos).ok_or_else(unknown_pos)?;
        if nonce != conn.nonce {
            return Err(unknown_pos());
        }
        if generation == conn.current.generation {
            return Ok(conn.current.clone());
        }
        match &conn.previous {
            Some(p) if p.generation == generation => Ok(p.clone()),
            _ => Err(unknown_pos()),
        }
    }

    pub(super) fn unknown_pos_error() -> Error {
        unknown_pos()
    }

    /// A new connection under `key`, replacing any it had; the oldest connections of the
    /// device beyond the bound go.
    pub(super) async fn new_connection(
        &self,
        key: &ConnKey,
    ) -> Result<Arc<async_lock::Mutex<Conn>>> {
        use rand::Rng;
        let (user, device, conn_id) = key;
        let others = self
            .db
            .query(
                "SELECT conn_id FROM sliding_connections WHERE user_id = $1 AND device_id = $2 AND conn_id <> $3
                 ORDER BY used_ms DESC",
                vec![user.into(), device.into(), conn_id.into()],
            )
            .await?;
        let mut batch = Vec::new();
        let mut dropped = vec![conn_id.clone()];
        for r in others.iter().skip(MAX_CONNECTIONS_PER_DEVICE - 1) {
            dropped.push(r.text(0)?);
        }
        for c in &dropped {
            for sql in [
                "DELETE FROM sliding_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
                "DELETE FROM sliding_rooms WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
            ] {
                batch.push(Statement::new(
                    sql,
                    vec![user.into(), device.into(), c.into()],
                ));
            }
            self.sliding
                .remove(&(user.clone(), device.clone(), c.clone()));
        }
        self.db.batch(batch).await?;
        let conn = Arc::new(async_lock::Mutex::new(Conn {
            nonce: rand::thread_rng().gen_range(1..i64::from(u32::MAX)),
            current: Generation::default(),
            previous: None,
            index: None,
            interned: Vec::new(),
        }));
        self.sliding.put(key.clone(), conn.clone());
        Ok(conn)
    }

    /// Hands out a new generation: `base` with the rooms sent now. Written before the
    /// answer goes out. The rooms the abandoned generation had sent (when `base` is the
    /// previous one) get their rows back as `base` knows them.
    pub(super) async fn commit_generation(
        &self,
        key: &ConnKey,
        conn: &mut Conn,
        base: Generation,
        at: SyncToken,
        sent: Vec<(OwnedRoomId, Sent)>,
    ) -> Result<Generation> {
        let (user, device, conn_id) = key;
        let generation = conn.current.generation + 1;
        let mut next = Generation {
            generation,
            at,
            rooms: base.rooms.clone(),
        };
        let k = || -> Vec<Value> { vec![user.into(), device.into(), conn_id.into()] };
        let mut batch = Vec::new();
        let room_row = |room: &OwnedRoomId, s: &Sent, g: i64| {
            let mut p = k();
            p.extend([
                Value::from(room.as_str()),
                Value::Int(g),
                Value::Int(s.pos),
                Value::from(s.membership.as_str()),
                Value::Int(i64::try_from(s.timeline_limit).unwrap_or(i64::MAX)),
                Value::from(s.required_state.to_text()),
                Value::from(format!(
                    "{},{},{}",
                    s.counts.0,
                    s.counts.1,
                    u8::from(s.is_dm)
                )),
            ]);
            Statement::new(
                "INSERT INTO sliding_rooms (user_id, device_id, conn_id, room_id, generation, pos, membership,
                   timeline_limit, required_state, counts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (user_id, device_id, conn_id, room_id) DO UPDATE SET generation = excluded.generation,
                   pos = excluded.pos, membership = excluded.membership, timeline_limit = excluded.timeline_limit,
                   required_state = excluded.required_state, counts = excluded.counts",
                p,
            )
        };
        let sent_now: std::collections::HashSet<&OwnedRoomId> =
            sent.iter().map(|(r, _)| r).collect();
        if base.generation != conn.current.generation {
            for (room, s) in conn.current.rooms.iter() {
                if sent_now.contains(room) || base.rooms.get(room) == Some(s) {
                    continue;
                }
                match base.rooms.get(room) {
                    Some(old) => batch.push(room_row(room, old, base.generation)),
                    None => {
                        let mut p = k();
                        p.push(room.as_str().into());
                        batch.push(Statement::new(
                            "DELETE FROM sliding_rooms WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND room_id = $4",
                            p,
                        ));
                    }
                }
            }
        }
        for (room, s) in &sent {
            batch.push(room_row(room, s, generation));
        }
        let mut p = k();
        p.extend([
            Value::Int(conn.nonce),
            Value::Int(generation),
            Value::Int(at.pos),
            Value::Int(i64::try_from(at.typing).unwrap_or(i64::MAX)),
            Value::Int(base.generation),
            Value::Int(base.at.pos),
            Value::Int(i64::try_from(base.at.typing).unwrap_or(i64::MAX)),
            Value::Int(i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)),
        ]);
        batch.push(Statement::new(
            "INSERT INTO sliding_connections (user_id, device_id, conn_id, nonce, generation, pos, typing,
               prev_generation, prev_pos, prev_typing, used_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (user_id, device_id, conn_id) DO UPDATE SET nonce = excluded.nonce,
               generation = excluded.generation, pos = excluded.pos, typing = excluded.typing,
               prev_generation = excluded.prev_generation, prev_pos = excluded.prev_pos,
               prev_typing = excluded.prev_typing, used_ms = excluded.used_ms",
            p,
        ));
        self.db.batch(batch).await?;
        for (room, s) in sent {
            next.rooms.insert(room, s);
        }
        conn.previous = Some(base);
        conn.current = next.clone();
        Ok(next)
    }
}

/// The key of a connection.
pub(super) fn conn_key(user: &UserId, device: &DeviceId, conn_id: &str) -> ConnKey {
    (user.to_string(), device.to_string(), conn_id.to_owned())
}
