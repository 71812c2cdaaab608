//! Spaces and room summaries (spec: "Spaces": `/hierarchy`; "Room summaries":
//! `/room_summary`). Only rooms this server knows are shown: rooms elsewhere need
//! federation, which is not here yet.

use std::collections::HashSet;

use ruma::{events::StateEventType, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as Json};

use super::Pdu;
use crate::{storage::query_opt, Error, Homeserver, Result};

/// `/hierarchy` page sizes and depth.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
const MAX_DEPTH: usize = 10;
/// Rooms one request walks through at most, however the tree is built (a page further
/// on walks the pages before it again).
const MAX_WALKED: usize = 1_000;
/// `m.space.child` events read per space.
const MAX_CHILDREN: usize = 500;

/// What `/hierarchy` asks for.
pub struct HierarchyRequest {
    pub from: Option<String>,
    pub limit: Option<usize>,
    pub max_depth: Option<usize>,
    pub suggested_only: bool,
}

/// One `/hierarchy` page.
pub struct HierarchyPage {
    pub rooms: Vec<Json>,
    pub next_batch: Option<String>,
}

/// A child a space names, with what orders it (spec: "Ordering of children within a
/// space": `order`, then the child event's `origin_server_ts`, then the room ID).
struct Child {
    order: Option<String>,
    ts: u64,
    room_id: OwnedRoomId,
    suggested: bool,
}

/// A valid `order` (spec): at most 50 characters of `\x20`–`\x7E`.
fn valid_order(o: &Json) -> Option<String> {
    let o = o.as_str()?;
    (o.len() <= 50 && o.chars().all(|c| ('\x20'..='\x7e').contains(&c))).then(|| o.to_owned())
}

impl Homeserver {
    /// Whether the user may see the room's summary (spec, `/hierarchy`): a member or
    /// invitee, or a room anyone may join, knock on or read, or a restricted room whose
    /// allowed rooms they are in. Unknown rooms are not.
    pub async fn room_accessible(&self, room_id: &RoomId, user: Option<&UserId>) -> Result<bool> {
        if !self.room_known(room_id).await? {
            return Ok(false);
        }
        if let Some(u) = user {
            if matches!(
                self.membership(room_id, u).await?.as_deref(),
                Some("join" | "invite")
            ) {
                return Ok(true);
            }
        }
        if self.world_readable(room_id).await? {
            return Ok(true);
        }
        let state = self.current_state(room_id).await?;
        let content = self.join_rules_content(&state).await?;
        match content["join_rule"].as_str() {
            Some("public" | "knock" | "knock_restricted") => Ok(true),
            Some("restricted") => match user {
                Some(u) => self.in_allowed_room(&content, u).await,
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    /// A room this server has a head for.
    async fn room_known(&self, room_id: &RoomId) -> Result<bool> {
        Ok(!self.current_state(room_id).await?.is_empty())
    }

    /// `GET /rooms/{roomId}/hierarchy`: the space's rooms depth first, those the user may
    /// see; 403 when the user may not see the space itself.
    pub async fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        req: HierarchyRequest,
    ) -> Result<HierarchyPage> {
        if !self.room_accessible(root, Some(user)).await? {
            return Err(Error::forbidden("You cannot see this space"));
        }
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let max_depth = req.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        // The token says where the previous page ended and with which parameters
        // (spec: they cannot change between pages).
        let params = format!("{max_depth}_{}", u8::from(req.suggested_only));
        let skip = match &req.from {
            None => 0,
            Some(t) => match t.split_once('_') {
                Some((n, rest)) if rest == params => n
                    .parse::<usize>()
                    .map_err(|_| Error::invalid_param("Invalid from token"))?,
                _ => {
                    return Err(Error::invalid_param(
                        "from does not belong to this request (max_depth and suggested_only cannot change)",
                    ))
                }
            },
        };
        let mut rooms = Vec::new();
        let mut shown = 0usize;
        let mut next_batch = None;
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        // Depth first, iteratively: children pushed in reverse so the first comes next.
        let mut stack: Vec<(OwnedRoomId, usize, bool)> = vec![(root.to_owned(), 0, true)];
        let mut walked = 0;
        while let Some((room, depth, is_root)) = stack.pop() {
            if walked == MAX_WALKED {
                break;
            }
            if !seen.insert(room.clone()) {
                continue;
            }
            walked += 1;
            if !is_root && !self.room_accessible(&room, Some(user)).await? {
                continue;
            }
            if shown >= skip && rooms.len() == limit {
                next_batch = Some(format!("{shown}_{params}"));
                break;
            }
            let children = self.space_children(&room).await?;
            if shown >= skip {
                rooms.push(self.summary_entry(&room, Some(&children)).await?);
            }
            shown += 1;
            if depth < max_depth {
                for (child, _) in children.iter().rev() {
                    if !req.suggested_only || child.suggested {
                        stack.push((child.room_id.clone(), depth + 1, false));
                    }
                }
            }
        }
        Ok(HierarchyPage { rooms, next_batch })
    }

    /// `GET /room_summary/{roomIdOrAlias}`: the summary of a room the requester may see
    /// (404 otherwise, so a room's existence does not leak), with their membership.
    pub async fn room_summary(&self, room_id: &RoomId, user: Option<&UserId>) -> Result<Json> {
        if !self.room_accessible(room_id, user).await? {
            return Err(Error::not_found("Room not found"));
        }
        let mut entry = self.summary_entry(room_id, None).await?;
        if let Some(u) = user {
            if let Some(m) = self.membership(room_id, u).await? {
                entry["membership"] = m.into();
            }
        }
        Ok(entry)
    }

    /// The room IDs of a space's children (see [`Self::space_children`]).
    pub(crate) async fn space_child_ids(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .space_children(room_id)
            .await?
            .into_iter()
            .map(|(c, _)| c.room_id)
            .collect())
    }

    /// The children a space's `m.space.child` events name (a `via` list makes a child),
    /// in the spec's order; none for a room that is not a space.
    async fn space_children(&self, room_id: &RoomId) -> Result<Vec<(Child, std::sync::Arc<Pdu>)>> {
        let state = self.current_state(room_id).await?;
        let create = match state.get(&(StateEventType::RoomCreate, String::new())) {
            Some(id) => self.get_pdu(id).await?,
            None => None,
        };
        let is_space = create
            .is_some_and(|c| super::read::content_str(&c, "type").as_deref() == Some("m.space"));
        if !is_space {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let space_child = StateEventType::from("m.space.child");
        for ((kind, key), id) in state.iter() {
            if *kind != space_child || out.len() == MAX_CHILDREN {
                continue;
            }
            let Ok(child) = RoomId::parse(key.as_str()) else {
                continue;
            };
            let Some(pdu) = self.get_pdu(id).await? else {
                continue;
            };
            let content: Json = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            let via_ok = content["via"]
                .as_array()
                .is_some_and(|v| !v.is_empty() && v.iter().all(Json::is_string));
            if !via_ok {
                continue;
            }
            let c = Child {
                order: valid_order(&content["order"]),
                ts: pdu.origin_server_ts.get().into(),
                room_id: child,
                suggested: content["suggested"].as_bool() == Some(true),
            };
            out.push((c, pdu));
        }
        // Rooms with an `order` first, by it; then by the event's time; then room ID.
        out.sort_by(|(a, _), (b, _)| {
            let key = |c: &Child| (c.order.is_none(), c.order.clone(), c.ts, c.room_id.clone());
            key(a).cmp(&key(b))
        });
        Ok(out)
    }

    /// A room as `/hierarchy` and `/room_summary` show it: the directory's fields, its
    /// version and encryption, the rooms a restricted one allows, and for a space its
    /// children's events (stripped, with `origin_server_ts`).
    async fn summary_entry(
        &self,
        room_id: &RoomId,
        children: Option<&[(Child, std::sync::Arc<Pdu>)]>,
    ) -> Result<Json> {
        let joined = query_opt(
            self.db.as_ref(),
            "SELECT joined_members FROM rooms WHERE room_id = $1",
            vec![room_id.as_str().into()],
        )
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
        let mut e = self.directory_entry(room_id, joined).await?;
        e["room_version"] = self.room_version(room_id).await?.as_str().into();
        let state = self.current_state(room_id).await?;
        if let Some(id) = state.get(&(StateEventType::RoomEncryption, String::new())) {
            if let Some(p) = self.get_pdu(id).await? {
                if let Some(alg) = super::read::content_str(&p, "algorithm") {
                    e["encryption"] = alg.into();
                }
            }
        }
        if let Some(id) = state.get(&(StateEventType::RoomJoinRules, String::new())) {
            if let Some(p) = self.get_pdu(id).await? {
                let content: Json = serde_json::from_str(p.content.get()).unwrap_or_default();
                let allowed = super::join_rules::allowed_rooms(&content);
                if !allowed.is_empty() {
                    e["allowed_room_ids"] = json!(allowed);
                }
            }
        }
        if let Some(children) = children {
            let stripped: Vec<Json> = children
                .iter()
                .map(|(_, p)| {
                    json!({
                        "type": "m.space.child",
                        "state_key": p.state_key,
                        "content": serde_json::from_str::<Json>(p.content.get()).unwrap_or_default(),
                        "sender": p.sender,
                        "origin_server_ts": p.origin_server_ts,
                    })
                })
                .collect();
            e["children_state"] = Json::Array(stripped);
        }
        Ok(e)
    }
}
