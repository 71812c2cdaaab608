//! Relations between events (spec: "Forming relationships between events", and the modules
//! built on them: "Threading", "Event replacements", "Reference relations", "Event
//! annotations and reactions").
//!
//! A child's `m.relates_to` is indexed in the child's own batch (`event_relations`, and
//! `threads` for thread replies). The parent is flagged (`events.relations`) once a child
//! the server aggregates points at it, so an event without such children costs nothing
//! more to serve. Bundled aggregations (`unsigned.m.relations`) are computed when an event
//! is served, as of the position served, so they never name a child the reader cannot
//! have seen yet.

use std::collections::{HashMap, HashSet};

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde::{de::IgnoredAny, Deserialize};
use serde_json::{json, value::RawValue, Value as Json};

use super::{read::Direction, Pdu};
use crate::{
    ports::{Row, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// The relation types the server aggregates; annotations (reactions) are not
/// (spec: "Server-side aggregation of `m.annotation` relationships").
const AGGREGATED: [&str; 3] = ["m.thread", "m.replace", "m.reference"];
/// `/relations` and `/threads` page sizes when none or too many are asked for.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Levels `recurse` follows (spec: "Homeservers SHOULD traverse at least 3 levels").
const RECURSION_DEPTH: u32 = 3;
/// Children one recursive request looks at in all, however large the tree.
const MAX_TREE: usize = 2_000;
/// Children listed in an `m.reference` aggregation.
const MAX_REFERENCES: i64 = 50;
/// Rows a page may read per event it returns (hidden ones are skipped).
const MAX_SCAN_FACTOR: usize = 20;
/// Longest parent ID and `rel_type` indexed (the spec bounds event IDs at 255 bytes).
const MAX_ID_BYTES: usize = 255;
/// Longest annotation key indexed.
const MAX_KEY_BYTES: usize = 1024;

/// What an event's `m.relates_to` declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub parent: OwnedEventId,
    pub rel_type: String,
    /// The `m.annotation` key.
    pub key: Option<String>,
}

/// The relation an event's content declares, when it is well formed; anything else is
/// no relation (spec: relations "which don't match the schema … are simply ignored"). An
/// `m.replace` needs `m.new_content`, unless encrypted: then it is in the ciphertext.
pub fn relation_of(kind: &str, content: &str) -> Option<Relation> {
    if !content.contains("m.relates_to") {
        return None;
    }
    #[derive(Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Json>,
        #[serde(rename = "m.new_content")]
        new_content: Option<IgnoredAny>,
    }
    let c: Content = serde_json::from_str(content).ok()?;
    let r = c.relates_to?;
    let rel_type = r.get("rel_type")?.as_str()?;
    let parent = EventId::parse(r.get("event_id")?.as_str()?).ok()?;
    // Rows cannot hold a NUL on either engine (`ports::check_storable`), and PostgreSQL's
    // indexes refuse entries over about 2.7 KB: such a relation is none, so the event
    // itself is still stored (a remote one must be, or the room's graph has a hole).
    let fits = |s: &str| !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.contains('\0');
    if !fits(rel_type) || !fits(parent.as_str()) {
        return None;
    }
    if rel_type == "m.replace" && c.new_content.is_none() && kind != "m.room.encrypted" {
        return None;
    }
    let key = match rel_type {
        "m.annotation" => {
            let key = r.get("key")?.as_str()?;
            if key.len() > MAX_KEY_BYTES || key.contains('\0') {
                return None;
            }
            Some(key.to_owned())
        }
        _ => None,
    };
    Some(Relation {
        parent,
        rel_type: rel_type.to_owned(),
        key,
    })
}

/// The rows an event's relation writes in its batch, after its `events` row.
pub(crate) fn relation_statements(room: &str, pdu: &Pdu, pos: i64) -> Vec<Statement> {
    let kind = pdu.kind.to_string();
    let Some(rel) = relation_of(&kind, pdu.content.get()) else {
        return Vec::new();
    };
    // Spec ("Validity of replacement events"): state events cannot be edited or edit.
    if rel.rel_type == "m.replace" && pdu.state_key.is_some() {
        return Vec::new();
    }
    let parent = rel.parent.as_str();
    let mut b = vec![Statement::new(
        "INSERT INTO event_relations (event_id, room_id, parent_id, rel_type, type, sender, key, origin_ts, stream_pos)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
        vec![
            pdu.event_id.as_str().into(),
            room.into(),
            parent.into(),
            rel.rel_type.as_str().into(),
            kind.into(),
            pdu.sender.as_str().into(),
            rel.key.into(),
            Value::Int(i64::from(pdu.origin_server_ts.get())),
            Value::Int(pos),
        ],
    )];
    if AGGREGATED.contains(&rel.rel_type.as_str()) {
        b.push(Statement::new(
            "UPDATE events SET relations = 1 WHERE event_id = $1 AND room_id = $2 AND relations = 0",
            vec![parent.into(), room.into()],
        ));
    }
    if rel.rel_type == "m.thread" {
        // Only a root known in this room makes a thread; both its sender and the
        // replier take part in it (spec: `current_user_participated`).
        b.push(Statement::new(
            "INSERT INTO threads (room_id, root_id, last_pos) SELECT $1, $2, $3 FROM events
             WHERE event_id = $2 AND room_id = $1
             ON CONFLICT (room_id, root_id) DO UPDATE SET last_pos = excluded.last_pos",
            vec![room.into(), parent.into(), Value::Int(pos)],
        ));
        b.push(Statement::new(
            "INSERT INTO thread_participants (room_id, root_id, user_id) VALUES ($1, $2, $3)
             ON CONFLICT (room_id, user_id, root_id) DO NOTHING",
            vec![room.into(), parent.into(), pdu.sender.as_str().into()],
        ));
        b.push(Statement::new(
            "INSERT INTO thread_participants (room_id, root_id, user_id) SELECT $1, $2, sender FROM events
             WHERE event_id = $2 AND room_id = $1
             ON CONFLICT (room_id, user_id, root_id) DO NOTHING",
            vec![room.into(), parent.into()],
        ));
    }
    b
}

/// The statement that drops a redacted event's relation: it leaves every aggregation
/// (spec: "Redactions" strips `m.relates_to`, so the event relates to nothing).
pub(crate) fn unrelate_statement(target: &EventId) -> Statement {
    Statement::new(
        "DELETE FROM event_relations WHERE event_id = $1",
        vec![target.as_str().into()],
    )
}

/// Who reads, and up to which position (their leaving, or the position being served).
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pub user: &'a UserId,
    pub membership: Option<&'a str>,
    pub upto: i64,
}

/// What the server aggregates for one parent.
#[derive(Default)]
struct Aggregate {
    thread: Option<(i64, OwnedEventId, bool)>,
    replace: Option<OwnedEventId>,
    references: Vec<OwnedEventId>,
}

/// `/relations`: what the request asks for.
pub struct RelationsRequest<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub dir: Direction,
    pub limit: Option<usize>,
    pub recurse: bool,
}

/// One page of `/relations` (children oldest or newest first, as asked).
pub struct RelationsPage {
    pub events: Vec<std::sync::Arc<Pdu>>,
    /// Where the next page starts, when there may be one.
    pub next: Option<i64>,
    /// The depth followed, when `recurse` was asked.
    pub recursion_depth: Option<u32>,
}

/// One page of `/threads`, newest activity first.
pub struct ThreadsPage {
    pub roots: Vec<std::sync::Arc<Pdu>>,
    pub next: Option<i64>,
}

impl Homeserver {
    /// Refuses a local event whose relation the spec says a server should refuse: a
    /// thread off an event that itself relates to another (400 `M_UNKNOWN`, spec:
    /// "Validation of `m.thread` relationships"), and a second identical annotation
    /// (400 `M_DUPLICATE_ANNOTATION`, spec: "Avoiding duplicate annotations").
    pub(crate) async fn check_new_relation(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        content: &Json,
    ) -> Result<()> {
        if content.get("m.relates_to").is_none() {
            return Ok(());
        }
        let Some(rel) = relation_of(kind, &content.to_string()) else {
            return Ok(());
        };
        match rel.rel_type.as_str() {
            "m.thread" => {
                if let Some(root) = self.get_pdu(&rel.parent).await? {
                    if root.room_id.as_deref() == Some(room_id)
                        && relation_of(&root.kind.to_string(), root.content.get()).is_some()
                    {
                        return Err(Error::Matrix(
                            ruma::api::error::ErrorKind::Unknown,
                            "Cannot start a thread from an event with a relation".into(),
                        ));
                    }
                }
            }
            "m.annotation" => {
                let dup = query_opt(
                    self.db.as_ref(),
                    "SELECT 1 FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.annotation'
                     AND sender = $2 AND room_id = $3 AND type = $4 AND key = $5",
                    vec![
                        rel.parent.as_str().into(),
                        sender.as_str().into(),
                        room_id.as_str().into(),
                        kind.into(),
                        rel.key.into(),
                    ],
                )
                .await?;
                if dup.is_some() {
                    return Err(Error::Matrix(
                        ruma::api::error::ErrorKind::DuplicateAnnotation,
                        "You already sent this annotation".into(),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Bundled aggregations (spec: "Aggregations of child events") of those of `parents`
    /// that have children the server aggregates, as `m.relations` objects by event ID.
    /// Children are those `reader` may see at or below `reader.upto`; the events inside
    /// (a thread's latest event, the latest edit) are formatted with `room_id` when
    /// `with_room` (as the parents are) and carry their own aggregations.
    pub async fn bundles(
        &self,
        room_id: &RoomId,
        reader: Reader<'_>,
        parents: &[&Pdu],
        with_room: bool,
    ) -> Result<HashMap<OwnedEventId, Box<RawValue>>> {
        let mut out = HashMap::new();
        for parent in parents {
            // Spec: "State events do not currently receive bundled aggregations."
            if parent.state_key.is_some() {
                continue;
            }
            let agg = self.aggregate(room_id, reader, parent).await?;
            let mut rels = serde_json::Map::new();
            if let Some((count, latest, participated)) = &agg.thread {
                let latest = match self.get_pdu(latest).await? {
                    Some(p) if self.can_see(reader.user, &p, reader.membership).await? => {
                        // The latest reply's own children (its edits), one level down.
                        let inner = self.aggregate(room_id, reader, &p).await?;
                        let inner = self.render(reader, inner, with_room, room_id).await?;
                        let room = with_room.then_some(room_id);
                        Some(p.client_raw(room, None, inner.as_deref())?)
                    }
                    _ => None,
                };
                if let Some(latest) = latest {
                    rels.insert(
                        "m.thread".into(),
                        json!({
                            "latest_event": latest,
                            "count": count,
                            "current_user_participated": participated,
                        }),
                    );
                }
            }
            let agg = Aggregate {
                thread: None,
                ..agg
            };
            if let Some(rest) = self.render(reader, agg, with_room, room_id).await? {
                let rest: serde_json::Map<String, Json> = serde_json::from_str(rest.get())?;
                rels.extend(rest);
            }
            if !rels.is_empty() {
                out.insert(
                    parent.event_id.clone(),
                    serde_json::value::to_raw_value(&rels)?,
                );
            }
        }
        Ok(out)
    }

    /// The edit and references of an aggregate as an `m.relations` object, if any.
    async fn render(
        &self,
        reader: Reader<'_>,
        agg: Aggregate,
        with_room: bool,
        room_id: &RoomId,
    ) -> Result<Option<Box<RawValue>>> {
        let mut rels = serde_json::Map::new();
        if let Some(edit) = &agg.replace {
            if let Some(p) = self.get_pdu(edit).await? {
                if self.can_see(reader.user, &p, reader.membership).await? {
                    let room = with_room.then_some(room_id);
                    rels.insert(
                        "m.replace".into(),
                        serde_json::to_value(p.client_raw(room, None, None)?)?,
                    );
                }
            }
        }
        if !agg.references.is_empty() {
            let chunk: Vec<Json> = agg
                .references
                .iter()
                .map(|id| json!({ "event_id": id }))
                .collect();
            rels.insert("m.reference".into(), json!({ "chunk": chunk }));
        }
        if rels.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::value::to_raw_value(&rels)?))
    }

    /// One parent's aggregate, in one query (and one more when it has references).
    async fn aggregate(
        &self,
        room_id: &RoomId,
        reader: Reader<'_>,
        parent: &Pdu,
    ) -> Result<Aggregate> {
        let kind = parent.kind.to_string();
        let row = query_opt(
            self.db.as_ref(),
            "SELECT
               (SELECT COUNT(*) FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.thread'
                  AND room_id = $2 AND stream_pos <= $3),
               (SELECT event_id FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.thread'
                  AND room_id = $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT 1),
               (SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.thread'
                  AND sender = $4 AND room_id = $2 AND stream_pos <= $3 LIMIT 1) AS p),
               (SELECT event_id FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.replace'
                  AND sender = $5 AND room_id = $2 AND type = $6 AND stream_pos <= $3
                  ORDER BY origin_ts DESC, event_id DESC LIMIT 1),
               (SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.reference'
                  AND room_id = $2 AND stream_pos <= $3 LIMIT 1) AS r)",
            vec![
                parent.event_id.as_str().into(),
                room_id.as_str().into(),
                Value::Int(reader.upto),
                reader.user.as_str().into(),
                parent.sender.as_str().into(),
                kind.as_str().into(),
            ],
        )
        .await?;
        let Some(row) = row else {
            return Ok(Aggregate::default());
        };
        let mut agg = Aggregate::default();
        if let (n, Some(latest)) = (row.int(0)?, row.opt_text(1)?) {
            let participated = row.int(2)? > 0 || parent.sender == reader.user;
            let latest = OwnedEventId::try_from(latest).map_err(Error::internal)?;
            agg.thread = Some((n, latest, participated));
        }
        // Spec ("Validity of replacement events", "Server-side aggregation of `m.replace`
        // relationships"): same sender and type (in the query), not an edit of an edit,
        // and nothing for a redacted original.
        let redacted = matches!(parent.json.get("unsigned"),
            Some(ruma::CanonicalJsonValue::Object(u)) if u.contains_key("redacted_because"));
        let is_edit =
            relation_of(&kind, parent.content.get()).is_some_and(|r| r.rel_type == "m.replace");
        if !redacted && !is_edit {
            if let Some(edit) = row.opt_text(3)? {
                agg.replace = Some(OwnedEventId::try_from(edit).map_err(Error::internal)?);
            }
        }
        if row.int(4)? > 0 {
            let rows = self
                .db
                .query(
                    "SELECT event_id FROM event_relations WHERE parent_id = $1 AND rel_type = 'm.reference'
                     AND room_id = $2 AND stream_pos <= $3 ORDER BY stream_pos LIMIT $4",
                    vec![
                        parent.event_id.as_str().into(),
                        room_id.as_str().into(),
                        Value::Int(reader.upto),
                        Value::Int(MAX_REFERENCES),
                    ],
                )
                .await?;
            for r in rows {
                let id = OwnedEventId::try_from(r.text(0)?).map_err(Error::internal)?;
                if let Some(p) = self.get_pdu(&id).await? {
                    if self.can_see(reader.user, &p, reader.membership).await? {
                        agg.references.push(id);
                    }
                }
            }
        }
        Ok(agg)
    }

    /// Adds `unsigned.m.relations` to those of `events` (client-format JSON, with
    /// `room_id`) that have aggregated children, as `user` may see them now.
    pub async fn add_relations(
        &self,
        room_id: &RoomId,
        user: &UserId,
        events: &mut [Json],
    ) -> Result<()> {
        let ids: Vec<&str> = events
            .iter()
            .filter(|e| e.get("state_key").is_none())
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        let mut flagged = HashSet::new();
        for chunk in ids.chunks(super::events::MAX_IDS) {
            // By event ID only: with the room in the query, SQLite's planner walked the
            // room's whole history by `events_room_pos`. The bundles ask within the room.
            let (list, params) = super::events::in_ids(chunk, 1);
            let sql =
                format!("SELECT event_id FROM events WHERE event_id {list} AND relations = 1");
            for r in self.db.query(&sql, params).await? {
                flagged.insert(r.text(0)?);
            }
        }
        if flagged.is_empty() {
            return Ok(());
        }
        // Whoever could read the parents (an invitee too, per history visibility) sees
        // the children they may see, none past their leaving.
        let (membership, ceiling) = match self.reading_ceiling(room_id, user).await {
            Ok(m) => m,
            Err(_) => (self.membership(room_id, user).await?, i64::MAX),
        };
        let reader = Reader {
            user,
            membership: membership.as_deref(),
            upto: ceiling.min(self.current_pos()),
        };
        let mut parents = Vec::new();
        for id in &flagged {
            if let Ok(id) = EventId::parse(id) {
                if let Some(p) = self.get_pdu(&id).await? {
                    parents.push(p);
                }
            }
        }
        let refs: Vec<&Pdu> = parents.iter().map(|p| &**p).collect();
        let bundles = self.bundles(room_id, reader, &refs, true).await?;
        for e in events.iter_mut() {
            let Some(b) = e["event_id"]
                .as_str()
                .and_then(|id| EventId::parse(id).ok())
                .and_then(|id| bundles.get(&id))
            else {
                continue;
            };
            if !e["unsigned"].is_object() {
                e["unsigned"] = json!({});
            }
            e["unsigned"]["m.relations"] = serde_json::from_str(b.get())?;
        }
        Ok(())
    }
}

impl Homeserver {
    /// `/relations/{eventId}[/{relType}[/{eventType}]]`: the children of an event the user
    /// may see (404 otherwise, as the spec says), those they may see, from `from` in `dir`.
    pub async fn relations(
        &self,
        room_id: &RoomId,
        user: &UserId,
        parent: &EventId,
        req: RelationsRequest<'_>,
    ) -> Result<RelationsPage> {
        self.event_for_user(room_id, user, parent).await?;
        let (membership, ceiling) = self.reading_ceiling(room_id, user).await?;
        let reader = Reader {
            user,
            membership: membership.as_deref(),
            upto: ceiling,
        };
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let backward = req.dir == Direction::Backward;
        // Backward: children at or below `cursor`; forward: above it (tokens are places
        // between events, as everywhere).
        let mut cursor = req.from.unwrap_or(if backward { i64::MAX } else { 0 });
        let (tree, depth) = match req.recurse {
            true => {
                let (tree, depth) = self.relation_tree(room_id, parent, &req, ceiling).await?;
                (Some(tree), Some(depth))
            }
            false => (None, None),
        };
        let mut events = Vec::new();
        let mut scanned = 0;
        loop {
            let rows: Vec<(i64, String)> = match &tree {
                Some(tree) => {
                    let mut rows: Vec<_> = tree
                        .iter()
                        .filter(|(pos, _)| {
                            if backward {
                                *pos <= cursor
                            } else {
                                *pos > cursor
                            }
                        })
                        .cloned()
                        .collect();
                    if backward {
                        rows.reverse();
                    }
                    rows.truncate(limit + 1);
                    rows
                }
                None => {
                    self.direct_children(room_id, parent, &req, cursor, ceiling, limit + 1)
                        .await?
                }
            };
            let more = rows.len() > limit;
            for (pos, id) in &rows {
                let past_to = match req.to {
                    Some(t) if backward => *pos <= t,
                    Some(t) => *pos > t,
                    None => false,
                };
                if past_to {
                    return Ok(RelationsPage {
                        events,
                        next: None,
                        recursion_depth: depth,
                    });
                }
                if events.len() == limit || scanned == limit * MAX_SCAN_FACTOR {
                    return Ok(RelationsPage {
                        events,
                        next: Some(cursor),
                        recursion_depth: depth,
                    });
                }
                scanned += 1;
                cursor = if backward { pos - 1 } else { *pos };
                let Ok(id) = EventId::parse(id) else { continue };
                if let Some(p) = self.get_pdu(&id).await? {
                    if self.can_see(user, &p, reader.membership).await? {
                        events.push(p);
                    }
                }
            }
            if !more {
                return Ok(RelationsPage {
                    events,
                    next: None,
                    recursion_depth: depth,
                });
            }
        }
    }

    /// Direct children as (position, event ID), newest first going back.
    async fn direct_children(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        req: &RelationsRequest<'_>,
        cursor: i64,
        ceiling: i64,
        n: usize,
    ) -> Result<Vec<(i64, String)>> {
        // One statement per filter, so each can seek its index (a generic plan of
        // `($3 = '' OR rel_type = $3)` could not).
        let (filter, mut params) = match (req.rel_type, req.event_type) {
            (None, _) => ("", vec![]),
            (Some(t), None) => (" AND rel_type = $6", vec![Value::from(t)]),
            (Some(t), Some(e)) => (
                " AND rel_type = $6 AND type = $7",
                vec![Value::from(t), Value::from(e)],
            ),
        };
        let (cmp, order) = match req.dir {
            Direction::Backward => ("<=", "DESC"),
            Direction::Forward => (">", "ASC"),
        };
        let sql = format!(
            "SELECT stream_pos, event_id FROM event_relations WHERE parent_id = $1 AND room_id = $2{filter}
             AND stream_pos {cmp} $3 AND stream_pos <= $4 ORDER BY stream_pos {order} LIMIT $5"
        );
        let mut all = vec![
            parent.as_str().into(),
            room_id.as_str().into(),
            Value::Int(cursor),
            Value::Int(ceiling),
            Value::Int(n as i64),
        ];
        all.append(&mut params);
        let rows = self.db.query(&sql, all).await?;
        rows.iter().map(|r| Ok((r.int(0)?, r.text(1)?))).collect()
    }

    /// Children and their children down to [`RECURSION_DEPTH`] levels, at most
    /// [`MAX_TREE`] of them, oldest first, those of the asked type; and the depth followed.
    /// Walked level by level (no recursion), so a cycle cannot loop: each event once.
    async fn relation_tree(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        req: &RelationsRequest<'_>,
        ceiling: i64,
    ) -> Result<(Vec<(i64, String)>, u32)> {
        let mut seen: HashSet<String> = HashSet::from([parent.to_string()]);
        let mut level = vec![parent.to_string()];
        let mut found: Vec<(i64, String)> = Vec::new();
        let mut depth = 0;
        let mut looked_at = 0;
        while depth < RECURSION_DEPTH && !level.is_empty() && looked_at < MAX_TREE {
            depth += 1;
            let mut next = Vec::new();
            let ids: Vec<&str> = level.iter().map(String::as_str).collect();
            for chunk in ids.chunks(super::events::MAX_IDS) {
                let (list, ids) = super::events::in_ids(chunk, 4);
                let sql = format!(
                    "SELECT stream_pos, event_id, rel_type, type FROM event_relations
                     WHERE room_id = $1 AND stream_pos <= $2 AND parent_id {list}
                     ORDER BY stream_pos LIMIT $3"
                );
                let mut params = vec![
                    Value::from(room_id.as_str()),
                    Value::Int(ceiling),
                    Value::Int((MAX_TREE - looked_at) as i64),
                ];
                params.extend(ids);
                for r in self.db.query(&sql, params).await? {
                    looked_at += 1;
                    let id = r.text(1)?;
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    let wanted = req
                        .rel_type
                        .is_none_or(|t| t == r.text(2).unwrap_or_default())
                        && req
                            .event_type
                            .is_none_or(|t| t == r.text(3).unwrap_or_default());
                    if wanted {
                        found.push((r.int(0)?, id.clone()));
                    }
                    next.push(id);
                }
                if looked_at >= MAX_TREE {
                    break;
                }
            }
            level = next;
        }
        found.sort();
        Ok((found, depth))
    }

    /// `/threads`: the room's threads, latest activity first, whose root the user may see;
    /// with `participated_only`, those the user started or replied in.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        user: &UserId,
        participated_only: bool,
        from: Option<i64>,
        limit: Option<usize>,
    ) -> Result<ThreadsPage> {
        let (membership, ceiling) = self.reading_ceiling(room_id, user).await?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut cursor = from.unwrap_or(i64::MAX).min(ceiling);
        let mut roots = Vec::new();
        let mut scanned = 0;
        loop {
            let rows: Vec<Row> = match participated_only {
                true => {
                    self.db
                        .query(
                            "SELECT t.root_id, t.last_pos FROM threads t
                             JOIN thread_participants p ON p.room_id = t.room_id AND p.root_id = t.root_id AND p.user_id = $3
                             WHERE t.room_id = $1 AND t.last_pos <= $2 ORDER BY t.last_pos DESC LIMIT $4",
                            vec![
                                room_id.as_str().into(),
                                Value::Int(cursor),
                                user.as_str().into(),
                                Value::Int(limit as i64 + 1),
                            ],
                        )
                        .await?
                }
                false => {
                    self.db
                        .query(
                            "SELECT root_id, last_pos FROM threads WHERE room_id = $1 AND last_pos <= $2
                             ORDER BY last_pos DESC LIMIT $3",
                            vec![
                                room_id.as_str().into(),
                                Value::Int(cursor),
                                Value::Int(limit as i64 + 1),
                            ],
                        )
                        .await?
                }
            };
            let more = rows.len() > limit;
            for r in &rows {
                if roots.len() == limit || scanned == limit * MAX_SCAN_FACTOR {
                    return Ok(ThreadsPage {
                        roots,
                        next: Some(cursor),
                    });
                }
                scanned += 1;
                cursor = r.int(1)? - 1;
                let Ok(id) = EventId::parse(r.text(0)?) else {
                    continue;
                };
                if let Some(p) = self.get_pdu(&id).await? {
                    if self.can_see(user, &p, membership.as_deref()).await? {
                        roots.push(p);
                    }
                }
            }
            if !more {
                return Ok(ThreadsPage { roots, next: None });
            }
        }
    }
}
