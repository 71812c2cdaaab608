//! Sliding sync extensions (MSC3884 to-device and e2ee, MSC3959 account data, MSC3960
//! receipts, MSC3961 typing, as MSC4186 uses them). Each reads what moved since the
//! connection's previous answer, for the rooms its scope names.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, RoomId};
use serde_json::{json, Map, Value as Json};

use super::{
    request::{Extensions, Scope},
    room::Ctx,
};
use crate::{Homeserver, Result};

/// The rooms of a response, for the extensions' scopes.
pub(super) struct Rooms<'a> {
    /// Each list's rooms in its ranges.
    pub(super) lists: &'a BTreeMap<&'a str, Vec<&'a OwnedRoomId>>,
    pub(super) subscriptions: &'a [&'a OwnedRoomId],
    /// Rooms sent whole in this response: their extension data is sent whole too.
    pub(super) initial: &'a [&'a OwnedRoomId],
    /// Rooms something moved in since the connection's previous answer.
    pub(super) touched: &'a [&'a OwnedRoomId],
}

impl Rooms<'_> {
    fn list_in(scope: &Scope, name: &str) -> bool {
        scope
            .lists
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == name || n == "*"))
    }

    fn subscriptions_in(&self, scope: &Scope) -> Vec<&OwnedRoomId> {
        match &scope.rooms {
            None => self.subscriptions.to_vec(),
            Some(named) => self
                .subscriptions
                .iter()
                .filter(|r| named.iter().any(|n| n == "*" || n == r.as_str()))
                .copied()
                .collect(),
        }
    }

    /// Whether a scope covers `room`: in one of its lists (all when unnamed), or one of
    /// its rooms (the subscriptions for `*` or when unnamed).
    fn covers(&self, scope: &Scope, room: &RoomId) -> bool {
        self.lists.iter().any(|(name, rooms)| {
            Self::list_in(scope, name) && rooms.iter().any(|r| r.as_str() == room.as_str())
        }) || self
            .subscriptions_in(scope)
            .iter()
            .any(|r| r.as_str() == room.as_str())
    }

    /// The rooms whose data a scope sends: every room it covers on a new connection;
    /// else those sent whole now and those `moved` says moved, that it covers.
    fn candidates<'b>(
        &'b self,
        scope: &Scope,
        fresh: bool,
        moved: &'b [&'b OwnedRoomId],
    ) -> Vec<&'b OwnedRoomId> {
        let mut out: Vec<&OwnedRoomId> = Vec::new();
        if fresh {
            for (name, rooms) in self.lists {
                if Self::list_in(scope, name) {
                    out.extend(rooms.iter().copied());
                }
            }
            out.extend(self.subscriptions_in(scope));
        } else {
            out.extend(
                self.initial
                    .iter()
                    .chain(moved)
                    .copied()
                    .filter(|r| self.covers(scope, r)),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Homeserver {
    /// The `extensions` object, and whether it holds anything new.
    pub(super) async fn sliding_extensions(
        &self,
        ctx: &Ctx<'_>,
        ext: &Extensions,
        rooms: &Rooms<'_>,
        to_device_upto: i64,
        typing_since: Option<u64>,
    ) -> Result<(Json, bool)> {
        let mut out = Map::new();
        let mut news = false;
        if let Some(td) = &ext.to_device {
            let since = td.since.unwrap_or(0).min(ctx.now.pos);
            let events = self
                .to_device_since(ctx.user, ctx.device, since, to_device_upto)
                .await?;
            news |= !events.is_empty();
            let next = if events.is_empty() {
                since.max(to_device_upto)
            } else {
                to_device_upto
            };
            out.insert(
                "to_device".into(),
                json!({ "next_batch": next.to_string(), "events": events }),
            );
        }
        if ext.e2ee {
            let (changed, left) = match ctx.since {
                Some(s) => self.device_list_updates(ctx.user, s, ctx.now.pos).await?,
                None => (vec![], vec![]),
            };
            news |= !changed.is_empty() || !left.is_empty();
            let (otk, fallback) = self.sync_key_counts(ctx.user, ctx.device).await?;
            out.insert(
                "e2ee".into(),
                json!({
                    "device_lists": { "changed": changed, "left": left },
                    "device_one_time_keys_count": otk,
                    "device_unused_fallback_key_types": fallback,
                }),
            );
        }
        let fresh = ctx.since.is_none();
        let is_initial = |room: &OwnedRoomId| rooms.initial.contains(&room);
        if let Some(scope) = &ext.account_data {
            let mut global = self
                .account_data_since(ctx.user, None, ctx.since, ctx.now.pos)
                .await?;
            // Clients expect their push rules at first, defaults included.
            if ctx.since.is_none() && !global.iter().any(|e| e["type"] == "m.push_rules") {
                global.push(json!({ "type": "m.push_rules", "content": self.push_rules_content(ctx.user).await? }));
            }
            let mut per_room = Map::new();
            for room in rooms.candidates(scope, fresh, rooms.touched) {
                let since = if is_initial(room) { None } else { ctx.since };
                let events = self
                    .account_data_since(ctx.user, Some(room), since, ctx.now.pos)
                    .await?;
                if !events.is_empty() {
                    per_room.insert(room.to_string(), Json::Array(events));
                }
            }
            news |= !global.is_empty() || !per_room.is_empty();
            out.insert(
                "account_data".into(),
                json!({ "global": global, "rooms": per_room }),
            );
        }
        if let Some(scope) = &ext.receipts {
            let mut per_room = Map::new();
            for room in rooms.candidates(scope, fresh, rooms.touched) {
                let since = if is_initial(room) { None } else { ctx.since };
                if let Some(r) = self
                    .receipts_since(room, ctx.user, since, ctx.now.pos)
                    .await?
                {
                    per_room.insert(room.to_string(), r);
                }
            }
            news |= !per_room.is_empty();
            out.insert("receipts".into(), json!({ "rooms": per_room }));
        }
        if let Some(scope) = &ext.typing {
            let mut per_room = Map::new();
            // Rooms whose typing moved since the connection's previous answer.
            let moved: Vec<OwnedRoomId> = match typing_since {
                Some(serial) => self.typing_rooms_since(serial),
                None => Vec::new(),
            };
            let moved: Vec<&OwnedRoomId> = moved.iter().collect();
            for room in rooms.candidates(scope, fresh, &moved) {
                let since = if is_initial(room) { None } else { typing_since };
                if let Some(users) = self.typing_since(room, since) {
                    per_room.insert(
                        room.to_string(),
                        json!({ "type": "m.typing", "content": { "user_ids": users } }),
                    );
                }
            }
            news |= !per_room.is_empty();
            out.insert("typing".into(), json!({ "rooms": per_room }));
        }
        Ok((Json::Object(out), news))
    }
}
