//! Typing notifications: in memory, with timeouts (spec: "Typing Notifications").

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::Homeserver;

/// Longest typing timeout honoured.
pub const MAX_TYPING_TIMEOUT_MS: u64 = 120_000;

/// user → expiry (ms), and the serial at which the room last changed.
type RoomTyping = (HashMap<OwnedUserId, u64>, u64);

#[derive(Default)]
pub struct Typing {
    serial: AtomicU64,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

impl Typing {
    pub fn serial(&self) -> u64 {
        self.serial.load(Ordering::Acquire)
    }
}

impl Homeserver {
    pub async fn set_typing(&self, room: &RoomId, user: &UserId, typing: bool, timeout_ms: u64) {
        let now = self.clock.now_ms();
        {
            let mut rooms = self.typing.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let entry = rooms.entry(room.to_owned()).or_default();
            if typing {
                let until = now + timeout_ms.min(MAX_TYPING_TIMEOUT_MS);
                // Clients repeat "typing" every few seconds: a longer timeout for someone
                // already typing changes nothing others see, so nobody is woken.
                if entry
                    .0
                    .insert(user.to_owned(), until)
                    .is_some_and(|old| old > now)
                {
                    return;
                }
            } else if entry.0.remove(user).is_none() {
                return;
            }
            entry.1 = self.typing.serial.fetch_add(1, Ordering::AcqRel) + 1;
        }
        self.touch(crate::homeserver::Audience::Room(room)).await;
    }

    /// Drops typers whose timeout passed; the syncs of those rooms' members wake, so a
    /// long-poll learns that someone stopped typing when it happens.
    pub(crate) async fn expire_typing(&self) {
        let now = self.clock.now_ms();
        let expired: Vec<OwnedRoomId> = {
            let mut rooms = self.typing.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let mut expired = Vec::new();
            for (room, entry) in rooms.iter_mut() {
                let before = entry.0.len();
                entry.0.retain(|_, exp| *exp > now);
                if entry.0.len() != before {
                    entry.1 = self.typing.serial.fetch_add(1, Ordering::AcqRel) + 1;
                    expired.push(room.clone());
                }
            }
            expired
        };
        for room in expired {
            self.touch(crate::homeserver::Audience::Room(&room)).await;
        }
    }

    /// Rooms whose typing changed after serial `since`.
    pub(crate) fn typing_rooms_since(&self, since: u64) -> Vec<OwnedRoomId> {
        let rooms = self.typing.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .iter()
            .filter(|(_, (_, serial))| *serial > since)
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// When the next typing timeout falls (ms since the epoch), if anyone is typing.
    pub(crate) fn next_typing_expiry(&self) -> Option<u64> {
        let rooms = self.typing.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .values()
            .flat_map(|(users, _)| users.values())
            .min()
            .copied()
    }

    /// Current typers, if the room's typing changed after `since`. Typers whose timeout
    /// passed are left out; only [`Homeserver::expire_typing`] removes them, and it wakes
    /// every sync concerned.
    pub fn typing_since(&self, room: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let now = self.clock.now_ms();
        let rooms = self.typing.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let (users, serial) = rooms.get(room)?;
        if since.is_some_and(|s| *serial <= s) {
            return None;
        }
        let typing: Vec<OwnedUserId> = users
            .iter()
            .filter(|(_, exp)| **exp > now)
            .map(|(u, _)| u.clone())
            .collect();
        if since.is_none() && typing.is_empty() {
            return None;
        }
        Some(typing)
    }
}
