//! The public room directory and a room's aliases (spec: client-server API "Room
//! discovery" and "Room aliases": `/publicRooms`, `/directory/list/room/{roomId}`,
//! `/rooms/{roomId}/aliases`).
//!
//! A room is listed when `rooms.is_public` is set (by `createRoom` with `visibility:
//! public`, or by a room admin the publication rules allow). Listing order is by joined
//! members, largest first, then room ID: `rooms.joined_members`, which the write path
//! keeps, so a page reads an index range rather than every public room.

use ruma::{events::StateEventType, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as Json};

use super::{read::content_str, Pdu};
use crate::{ports::Value, storage::query_opt, Error, Homeserver, Result};

/// `/publicRooms` page sizes.
const DEFAULT_LIMIT: usize = 30;
const MAX_LIMIT: usize = 100;
/// Listed rooms one filtered request looks at, at most (each is read from its state).
const MAX_SCANNED: usize = 300;

/// One of `room_directory.publication_rules` (the config): the first rule whose patterns
/// all match decides whether a user may publish a room. No rules: room admins may.
#[derive(Clone, Debug)]
pub struct PublicationRule {
    pub user_id: Option<regex::Regex>,
    pub room_id: Option<regex::Regex>,
    /// Matches when any of the room's aliases matches; a room without aliases only
    /// matches a rule without this pattern or with `*`.
    pub alias: Option<(regex::Regex, bool)>,
    pub allow: bool,
}

/// The first rule that matches decides; none matching denies; no rules allow.
pub(crate) fn rules_allow(
    rules: &[PublicationRule],
    user: &UserId,
    room_id: &RoomId,
    aliases: &[String],
) -> bool {
    if rules.is_empty() {
        return true;
    }
    for rule in rules {
        let user_ok = rule
            .user_id
            .as_ref()
            .is_none_or(|r| r.is_match(user.as_str()));
        let room_ok = rule
            .room_id
            .as_ref()
            .is_none_or(|r| r.is_match(room_id.as_str()));
        let alias_ok = match &rule.alias {
            None => true,
            Some((_, true)) if aliases.is_empty() => true,
            Some((r, _)) => aliases.iter().any(|a| r.is_match(a)),
        };
        if user_ok && room_ok && alias_ok {
            return rule.allow;
        }
    }
    false
}

/// A glob (`*` any run, `?` one character) as an anchored regex; linear to match.
pub fn glob(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::RegexBuilder::new(&re).size_limit(1 << 20).build()
}

/// Where a `/publicRooms` page starts: after (forward) or before (backward) a listed room.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Since {
    forward: bool,
    joined: i64,
    room_id: String,
}

impl Since {
    fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid_param("Invalid since token");
        let (forward, rest) = match s.split_at_checked(1) {
            Some(("f", rest)) => (true, rest),
            Some(("b", rest)) => (false, rest),
            _ => return Err(bad()),
        };
        let (joined, room_id) = rest.split_once('_').ok_or_else(bad)?;
        Ok(Since {
            forward,
            joined: joined.parse().map_err(|_| bad())?,
            room_id: room_id.to_owned(),
        })
    }

    fn token(forward: bool, joined: i64, room_id: &str) -> String {
        format!("{}{joined}_{room_id}", if forward { 'f' } else { 'b' })
    }
}

/// What `/publicRooms` asks for.
#[derive(Default)]
pub struct PublicRoomsRequest {
    pub limit: Option<usize>,
    pub since: Option<String>,
    pub search: Option<String>,
    /// `room_types`: `None` inside is a room without a type.
    pub room_types: Option<Vec<Option<String>>>,
}

/// One `/publicRooms` page.
pub struct PublicRoomsPage {
    pub chunk: Vec<Json>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: i64,
}

impl Homeserver {
    /// `GET /directory/list/room/{roomId}`.
    pub async fn room_visibility(&self, room_id: &RoomId) -> Result<bool> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT is_public FROM rooms WHERE room_id = $1",
            vec![room_id.as_str().into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
        Ok(row.int(0)? != 0)
    }

    /// `PUT /directory/list/room/{roomId}`: a member with the power to set the room's
    /// canonical alias (as Synapse asks), or a server admin, may change it; publishing
    /// must also pass the publication rules.
    pub async fn set_room_visibility(
        &self,
        room_id: &RoomId,
        user: &UserId,
        server_admin: bool,
        public: bool,
    ) -> Result<()> {
        self.ensure_not_suspended(user)?;
        self.room_visibility(room_id).await?;
        if !server_admin {
            if self.membership(room_id, user).await?.as_deref() != Some("join") {
                return Err(Error::forbidden("You are not in this room"));
            }
            let version = self.room_version(room_id).await?;
            let rules = version
                .rules()
                .ok_or_else(|| Error::internal("room version without rules"))?;
            let state = self.current_state_ids(room_id).await?;
            let levels = self.power_levels(&state, &rules).await?;
            if !levels.user_can_send_state(user, StateEventType::RoomCanonicalAlias) {
                return Err(Error::forbidden(
                    "Only room admins may change the room's visibility",
                ));
            }
            if public && !self.may_publish(room_id, user).await? {
                return Err(Error::forbidden(
                    "The server's rules do not let you publish this room",
                ));
            }
        }
        self.db
            .execute(
                "UPDATE rooms SET is_public = $2 WHERE room_id = $1",
                vec![room_id.as_str().into(), Value::Int(i64::from(public))],
            )
            .await?;
        Ok(())
    }

    /// The publication rules' answer for `user` publishing `room_id`.
    async fn may_publish(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let rules = &self.config.publication_rules;
        if rules.is_empty() {
            return Ok(true);
        }
        let aliases = self.all_aliases(room_id).await?;
        Ok(rules_allow(rules, user, room_id, &aliases))
    }

    /// The room's local aliases and those its `m.room.canonical_alias` names.
    async fn all_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let mut aliases = self.local_aliases(room_id).await?;
        let state = self.current_state(room_id).await?;
        if let Some(id) = state.get(&(StateEventType::RoomCanonicalAlias, String::new())) {
            if let Some(p) = self.get_pdu(id).await? {
                let content: Json = serde_json::from_str(p.content.get()).unwrap_or_default();
                if let Some(a) = content["alias"].as_str() {
                    aliases.push(a.to_owned());
                }
                for a in content["alt_aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(100)
                {
                    if let Some(a) = a.as_str() {
                        aliases.push(a.to_owned());
                    }
                }
            }
        }
        Ok(aliases)
    }

    /// The aliases on this server that point at the room (at most 1,000).
    async fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let rows = self
            .db
            .query(
                "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias LIMIT 1000",
                vec![room_id.as_str().into()],
            )
            .await?;
        rows.iter().map(|r| Ok(r.text(0)?)).collect()
    }

    /// `GET /rooms/{roomId}/aliases`: for members, and anyone when the room is
    /// world-readable (spec).
    pub async fn room_aliases(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<String>> {
        let joined = self.membership(room_id, user).await?.as_deref() == Some("join");
        if !joined && !self.world_readable(room_id).await? {
            return Err(Error::forbidden("You are not in this room"));
        }
        self.local_aliases(room_id).await
    }

    /// `/publicRooms`: the listed rooms, largest first, those the filter keeps.
    pub async fn public_rooms(&self, req: PublicRoomsRequest) -> Result<PublicRoomsPage> {
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let since = req.since.as_deref().map(Since::parse).transpose()?;
        let search = req
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        let forward = since.as_ref().is_none_or(|s| s.forward);
        let (mut joined, mut room) = match &since {
            Some(s) => (s.joined, s.room_id.clone()),
            None => (i64::MAX, String::new()),
        };
        let mut chunk: Vec<(i64, String, Json)> = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        while chunk.len() < limit && scanned < MAX_SCANNED {
            let batch = (limit - chunk.len() + 1) as i64;
            // Forward: after (joined, room) in (joined desc, room asc); backward: before.
            let rows = self
                .db
                .query(
                    if forward {
                        "SELECT room_id, joined_members FROM rooms WHERE is_public = 1
                         AND (joined_members < $1 OR (joined_members = $1 AND room_id > $2))
                         ORDER BY joined_members DESC, room_id ASC LIMIT $3"
                    } else {
                        "SELECT room_id, joined_members FROM rooms WHERE is_public = 1
                         AND (joined_members > $1 OR (joined_members = $1 AND room_id < $2))
                         ORDER BY joined_members ASC, room_id DESC LIMIT $3"
                    },
                    vec![Value::Int(joined), room.as_str().into(), Value::Int(batch)],
                )
                .await?;
            if rows.is_empty() {
                exhausted = true;
                break;
            }
            let mut consumed = 0;
            for r in &rows {
                if chunk.len() == limit || scanned == MAX_SCANNED {
                    break;
                }
                scanned += 1;
                consumed += 1;
                (room, joined) = (r.text(0)?, r.int(1)?);
                let Ok(id) = OwnedRoomId::try_from(room.as_str()) else {
                    continue;
                };
                let entry = self.directory_entry(&id, joined).await?;
                if keep(&entry, search.as_deref(), req.room_types.as_deref()) {
                    chunk.push((joined, room.clone(), entry));
                }
            }
            // Fewer rows than asked for, all looked at: the listing ends here.
            if (rows.len() as i64) < batch && consumed == rows.len() {
                exhausted = true;
                break;
            }
        }
        if !forward {
            chunk.reverse();
        }
        // On from the last room looked at, unless the listing ended there; and back from
        // the other end of the page.
        let onward = (!exhausted).then(|| Since::token(forward, joined, &room));
        let (next_batch, prev_batch) = if forward {
            let back = chunk.first().filter(|_| since.is_some());
            (onward, back.map(|(j, r, _)| Since::token(false, *j, r)))
        } else {
            let ahead = chunk.last().map(|(j, r, _)| Since::token(true, *j, r));
            (ahead, onward)
        };
        let total = query_opt(
            self.db.as_ref(),
            "SELECT COUNT(*) FROM rooms WHERE is_public = 1",
            vec![],
        )
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
        Ok(PublicRoomsPage {
            chunk: chunk.into_iter().map(|(_, _, e)| e).collect(),
            next_batch,
            prev_batch,
            total,
        })
    }

    /// A room as the directory shows it (spec: `PublishedRoomsChunk`), from its current
    /// state.
    pub(crate) async fn directory_entry(&self, room_id: &RoomId, joined: i64) -> Result<Json> {
        let state = self.current_state(room_id).await?;
        let get = |kind: StateEventType| state.get(&(kind, String::new())).cloned();
        let pdu = |id: Option<ruma::OwnedEventId>| async move {
            match id {
                Some(id) => self.get_pdu(&id).await,
                None => Ok(None),
            }
        };
        let field = |p: &Option<std::sync::Arc<Pdu>>, key: &str| {
            p.as_deref().and_then(|p| content_str(p, key))
        };
        let name = pdu(get(StateEventType::RoomName)).await?;
        let topic = pdu(get(StateEventType::RoomTopic)).await?;
        let alias = pdu(get(StateEventType::RoomCanonicalAlias)).await?;
        let avatar = pdu(get(StateEventType::RoomAvatar)).await?;
        let join_rules = pdu(get(StateEventType::RoomJoinRules)).await?;
        let visibility = pdu(get(StateEventType::RoomHistoryVisibility)).await?;
        let guests = pdu(get(StateEventType::RoomGuestAccess)).await?;
        let create = pdu(get(StateEventType::RoomCreate)).await?;
        let mut e = json!({
            "room_id": room_id,
            "num_joined_members": joined.max(0),
            "world_readable": field(&visibility, "history_visibility").as_deref() == Some("world_readable"),
            "guest_can_join": field(&guests, "guest_access").as_deref() == Some("can_join"),
            "join_rule": field(&join_rules, "join_rule").unwrap_or_else(|| "invite".into()),
        });
        let optional = [
            ("name", field(&name, "name")),
            ("topic", field(&topic, "topic")),
            ("canonical_alias", field(&alias, "alias")),
            ("avatar_url", field(&avatar, "url")),
            ("room_type", field(&create, "type")),
        ];
        for (key, value) in optional {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                e[key] = v.into();
            }
        }
        Ok(e)
    }
}

/// Whether a directory entry passes the filter: `generic_search_term` in the name, topic
/// or canonical alias (case-insensitive), and a room type among `room_types`.
fn keep(entry: &Json, search: Option<&str>, room_types: Option<&[Option<String>]>) -> bool {
    let found = search.is_none_or(|term| {
        ["name", "topic", "canonical_alias"].iter().any(|k| {
            entry[k]
                .as_str()
                .is_some_and(|v| v.to_lowercase().contains(term))
        })
    });
    let typed = room_types.is_none_or(|types| {
        let kind = entry["room_type"].as_str();
        types.iter().any(|t| t.as_deref() == kind)
    });
    found && typed
}
