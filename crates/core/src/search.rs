//! Server-side search (spec: "Server Side Search", `POST /search`): message bodies, room
//! names and topics, indexed in each event's batch (SQLite FTS5, PostgreSQL `tsvector`
//! with a GIN index) and dropped from the index when redacted. Results are the events the
//! searcher may see: in rooms they are in, or were in up to their leaving, and allowed by
//! history visibility. Encrypted messages have no body the server could index.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Map, Value as Json};

use crate::{
    ports::{Engine, Statement, Value},
    rooms::{
        read::{content_str, Direction, PageRequest},
        Pdu,
    },
    sync::filter::EventFilter,
    Error, Homeserver, Result,
};

/// Matches looked at per request, newest first: a word found in a million messages
/// costs what a thousand do. Results are ranked (or ordered) among these.
pub const MAX_CANDIDATES: i64 = 1_000;
/// Results per page when the filter names no limit, and at most.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;
/// Words of a search term used, and the longest word.
const MAX_WORDS: usize = 16;
const MAX_WORD: usize = 100;
/// Events of context on either side, at most.
const MAX_CONTEXT: usize = 20;

/// What one event puts in the index: its key (`content.body`, `content.name`,
/// `content.topic`) and text.
#[derive(Debug)]
pub(crate) struct SearchRow {
    engine: Engine,
    key: &'static str,
    text: String,
}

/// The index row of an event, if it has text to search.
pub(crate) fn search_row(engine: Engine, pdu: &Pdu) -> Option<SearchRow> {
    let (key, field) = match (pdu.kind.to_string().as_str(), pdu.state_key.as_deref()) {
        ("m.room.message", None) => ("content.body", "body"),
        ("m.room.name", Some("")) => ("content.name", "name"),
        ("m.room.topic", Some("")) => ("content.topic", "topic"),
        _ => return None,
    };
    let text = content_str(pdu, field)?;
    // Rows hold no NUL on either engine (`ports::check_storable`).
    (!text.trim().is_empty() && !text.contains('\0')).then_some(SearchRow { engine, key, text })
}

impl SearchRow {
    pub(crate) fn statement(&self, room: &str, pdu: &Pdu, pos: i64) -> Statement {
        let params = vec![
            Value::Int(pos),
            self.text.as_str().into(),
            pdu.event_id.as_str().into(),
            room.into(),
            self.key.into(),
        ];
        match self.engine {
            Engine::Sqlite => Statement::new(
                "INSERT INTO event_search (rowid, body, event_id, room_id, key) VALUES ($1, $2, $3, $4, $5)",
                params,
            ),
            Engine::Postgres => Statement::new(
                "INSERT INTO event_search (stream_pos, vector, event_id, room_id, key)
                 VALUES ($1, to_tsvector('simple', $2), $3, $4, $5)",
                params,
            ),
        }
    }
}

/// The statement that drops the event at `pos` from the index (it was redacted).
pub(crate) fn unindex_statement(engine: Engine, pos: i64) -> Statement {
    let sql = match engine {
        Engine::Sqlite => "DELETE FROM event_search WHERE rowid = $1",
        Engine::Postgres => "DELETE FROM event_search WHERE stream_pos = $1",
    };
    Statement::new(sql, vec![Value::Int(pos)])
}

/// The words of a search term, as the query each engine takes: FTS5 gets every word
/// quoted (its query syntax never reaches the user), PostgreSQL `websearch_to_tsquery`
/// the words as they are. All words must match.
fn query_of(engine: Engine, term: &str) -> (String, Vec<String>) {
    let words: Vec<String> = term
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|w| !w.is_empty() && !w.contains('\0'))
        .take(MAX_WORDS)
        .map(|w| w.chars().take(MAX_WORD).collect())
        .collect();
    let q = match engine {
        Engine::Sqlite => words
            .iter()
            .map(|w| format!("\"{}\"", w.replace('"', "")))
            .collect::<Vec<_>>()
            .join(" "),
        Engine::Postgres => words.join(" "),
    };
    (q, words)
}

/// What `/search` asks for (its `room_events` category).
pub struct SearchRequest {
    pub term: String,
    /// `keys`: none means all three.
    pub keys: Option<Vec<String>>,
    pub filter: EventFilter,
    pub rooms: Option<HashSet<OwnedRoomId>>,
    pub not_rooms: HashSet<OwnedRoomId>,
    pub order_recent: bool,
    /// `event_context`: events before and after each result, and whether senders'
    /// profiles come along.
    pub context: Option<(usize, usize, bool)>,
    pub include_state: bool,
    pub group_by_room: bool,
    pub group_by_sender: bool,
    pub next_batch: Option<String>,
}

/// One result with its context.
pub struct SearchHit {
    pub rank: f64,
    pub event: Arc<Pdu>,
    pub room_id: OwnedRoomId,
    pub context: Option<Json>,
}

/// The `room_events` results.
pub struct SearchResults {
    pub count: usize,
    pub hits: Vec<SearchHit>,
    pub highlights: Vec<String>,
    pub next_batch: Option<String>,
    pub state: BTreeMap<OwnedRoomId, Vec<Json>>,
    pub groups: Json,
}

impl Homeserver {
    /// `POST /search`, `room_events`.
    pub async fn search(&self, user: &UserId, req: SearchRequest) -> Result<SearchResults> {
        let engine = self.db.engine();
        let (query, words) = query_of(engine, &req.term);
        let offset = match req.next_batch.as_deref() {
            None => 0,
            Some(t) => t
                .strip_prefix('o')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Error::invalid_param("Invalid next_batch"))?,
        };
        let keys = req.keys.clone().unwrap_or_else(|| {
            ["content.body", "content.name", "content.topic"]
                .map(String::from)
                .to_vec()
        });
        if let Some(bad) = keys
            .iter()
            .find(|k| !["content.body", "content.name", "content.topic"].contains(&k.as_str()))
        {
            return Err(Error::invalid_param(format!("Unknown search key {bad}")));
        }
        let mut hits = Vec::new();
        if !words.is_empty() {
            // Newest matches first, in the rooms the user is in or was in (up to their
            // leaving); the rank scaled to an integer, as rows hold no floats. On SQLite,
            // `CROSS JOIN` keeps the full-text match the outer loop (the planner would
            // otherwise walk the index from the memberships side and scan every row).
            let sql = match engine {
                Engine::Sqlite => {
                    "SELECT event_search.rowid, event_search.event_id, event_search.room_id, event_search.key,
                       CAST(-bm25(event_search) * 1000000 AS INTEGER), m.membership
                     FROM event_search CROSS JOIN memberships m
                       ON m.room_id = event_search.room_id AND m.user_id = $2
                     WHERE event_search MATCH $1 AND (m.membership = 'join' OR event_search.rowid <= m.stream_pos)
                     ORDER BY event_search.rowid DESC LIMIT $3"
                }
                Engine::Postgres => {
                    "SELECT s.stream_pos, s.event_id, s.room_id, s.key,
                       CAST(ts_rank_cd(s.vector, q) * 1000000 AS BIGINT), m.membership
                     FROM event_search s JOIN memberships m ON m.room_id = s.room_id AND m.user_id = $2,
                       websearch_to_tsquery('simple', $1) q
                     WHERE s.vector @@ q AND (m.membership = 'join' OR s.stream_pos <= m.stream_pos)
                     ORDER BY s.stream_pos DESC LIMIT $3"
                }
            };
            let rows = self
                .db
                .query(
                    sql,
                    vec![
                        query.into(),
                        user.as_str().into(),
                        Value::Int(MAX_CANDIDATES),
                    ],
                )
                .await?;
            for r in &rows {
                let room = OwnedRoomId::try_from(r.text(2)?).map_err(Error::internal)?;
                if !keys.contains(&r.text(3)?)
                    || req
                        .rooms
                        .as_ref()
                        .is_some_and(|rooms| !rooms.contains(&room))
                    || req.not_rooms.contains(&room)
                {
                    continue;
                }
                let Ok(id) = ruma::EventId::parse(r.text(1)?) else {
                    continue;
                };
                let Some(pdu) = self.get_pdu(&id).await? else {
                    continue;
                };
                let membership = r.opt_text(5)?;
                if !req.filter.allows(&pdu)
                    || !self.can_see(user, &pdu, membership.as_deref()).await?
                {
                    continue;
                }
                hits.push(SearchHit {
                    rank: r.int(4)? as f64 / 1e6,
                    event: pdu,
                    room_id: room,
                    context: None,
                });
            }
        }
        // Newest first already; by rank on request (the spec's default).
        if !req.order_recent {
            hits.sort_by(|a, b| b.rank.total_cmp(&a.rank));
        }
        let count = hits.len();
        let groups = groups(&hits, req.group_by_room, req.group_by_sender);
        let limit = req
            .filter
            .limit
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let mut page: Vec<SearchHit> = hits.into_iter().skip(offset).take(limit).collect();
        let next_batch = (offset + page.len() < count).then(|| format!("o{}", offset + page.len()));
        if let Some((before, after, profiles)) = req.context {
            for hit in &mut page {
                hit.context = Some(
                    self.search_context(
                        user,
                        hit,
                        before.min(MAX_CONTEXT),
                        after.min(MAX_CONTEXT),
                        profiles,
                    )
                    .await?,
                );
            }
        }
        let mut state = BTreeMap::new();
        if req.include_state {
            for hit in &page {
                if !state.contains_key(&hit.room_id) {
                    let ids = self.visible_state(&hit.room_id, user).await?;
                    let ids: Vec<OwnedEventId> = ids.values().cloned().collect();
                    let events = self
                        .load_pdus(&ids)
                        .await?
                        .iter()
                        .map(|p| p.to_client_json(&hit.room_id))
                        .collect();
                    state.insert(hit.room_id.clone(), events);
                }
            }
        }
        Ok(SearchResults {
            count,
            hits: page,
            highlights: words,
            next_batch,
            state,
            groups,
        })
    }

    /// The events around a result (spec: `event_context`), as `/context` would give.
    async fn search_context(
        &self,
        user: &UserId,
        hit: &SearchHit,
        before: usize,
        after: usize,
        profiles: bool,
    ) -> Result<Json> {
        let pos = self
            .event_place(&hit.event.event_id)
            .await?
            .ok_or_else(|| Error::internal("a search result without a place"))?
            .pos;
        let all = |_: &Pdu| true;
        let side = |dir: Direction, n: usize| {
            let from = if dir == Direction::Backward {
                pos - 1
            } else {
                pos
            };
            let room = hit.room_id.clone();
            async move {
                if n == 0 {
                    return Ok::<_, Error>((Vec::new(), from));
                }
                let req = PageRequest {
                    from: Some(from),
                    to: None,
                    dir,
                    limit: n,
                };
                let page = self.messages(&room, user, req, &all).await?;
                Ok((page.events, page.end.unwrap_or(from)))
            }
        };
        let (before_events, start) = side(Direction::Backward, before).await?;
        let (after_events, end) = side(Direction::Forward, after).await?;
        let mut ctx = json!({
            "events_before": before_events.iter().map(|p| p.to_client_json(&hit.room_id)).collect::<Vec<_>>(),
            "events_after": after_events.iter().map(|p| p.to_client_json(&hit.room_id)).collect::<Vec<_>>(),
            "start": crate::sync::token::position_token(start),
            "end": crate::sync::token::position_token(end),
        });
        if profiles {
            let mut info = Map::new();
            let senders: HashSet<OwnedUserId> = before_events
                .iter()
                .chain(after_events.iter())
                .map(|p| p.sender.clone())
                .chain([hit.event.sender.clone()])
                .collect();
            for s in senders {
                if s.server_name() == self.server_name() {
                    if let Ok(p) = self.get_profile(&s).await {
                        let mut profile = Map::new();
                        for k in ["displayname", "avatar_url"] {
                            if let Some(v) = p.get(k) {
                                profile.insert(k.into(), v.clone());
                            }
                        }
                        info.insert(s.to_string(), Json::Object(profile));
                    }
                }
            }
            ctx["profile_info"] = Json::Object(info);
        }
        Ok(ctx)
    }
}

/// `groups`: the results' event IDs by room and by sender, each group ordered by its
/// first result.
fn groups(hits: &[SearchHit], by_room: bool, by_sender: bool) -> Json {
    let mut out = Map::new();
    let mut group = |name: &str, key: &dyn Fn(&SearchHit) -> String| {
        let mut order: Vec<String> = Vec::new();
        let mut results: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in hits {
            let k = key(h);
            if !results.contains_key(&k) {
                order.push(k.clone());
            }
            results
                .entry(k)
                .or_default()
                .push(h.event.event_id.to_string());
        }
        let map: Map<String, Json> = order
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ids = results.get(k).cloned().unwrap_or_default();
                (k.clone(), json!({ "order": i + 1, "results": ids }))
            })
            .collect();
        out.insert(name.into(), Json::Object(map));
    };
    if by_room {
        group("room_id", &|h| h.room_id.to_string());
    }
    if by_sender {
        group("sender", &|h| h.event.sender.to_string());
    }
    Json::Object(out)
}
