//! A sliding sync request (MSC4186), parsed and bounded before any work: lists, room
//! subscriptions, their room configs, extensions. Both wire forms are read: the one
//! ruma and matrix-sdk send (`ranges`, `required_state` as `[type, state_key]` pairs,
//! `is_invite`) and the MSC's current one (`range`, `{include, exclude, lazy_members}`,
//! `is_invited`).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::{Error, Result};

/// MSC4186: at most 100 lists and 100 room subscriptions, else `M_INVALID_PARAM`.
pub const MAX_LISTS: usize = 100;
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Ranges per list, and `required_state` entries per config.
const MAX_RANGES: usize = 100;
const MAX_REQUIRED_STATE: usize = 100;
/// Entries of a filter's `spaces`, `tags`, `not_tags`, room types, and of an extension's
/// `lists` and `rooms`.
const MAX_FILTER_ENTRIES: usize = 100;
/// Opaque identifiers (list names, `conn_id`): the spec's grammar allows 255 characters.
const MAX_ID_LEN: usize = 255;

/// A parsed request; see [`Request::parse`].
#[derive(Debug, Default)]
pub struct Request {
    pub conn_id: String,
    pub txn_id: Option<String>,
    pub pos: Option<String>,
    pub timeout_ms: u64,
    pub lists: BTreeMap<String, List>,
    pub subscriptions: BTreeMap<OwnedRoomId, RoomConfig>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone)]
pub struct List {
    /// Inclusive ranges into the filtered list; `None`: the whole list.
    pub ranges: Option<Vec<(usize, usize)>>,
    pub config: RoomConfig,
    pub filters: Filters,
}

/// What to send of a room: its `timeline_limit` and `required_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomConfig {
    pub timeline_limit: usize,
    pub required_state: RequiredState,
}

/// Which state to send: `include` less `exclude`, as (type, state key) patterns where
/// `None` is a wildcard; lazy-loaded members apart (`$LAZY`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredState {
    pub include: BTreeSet<(Option<String>, Option<String>)>,
    pub exclude: BTreeSet<(Option<String>, Option<String>)>,
    pub lazy_members: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Create-event types, `None` for rooms without one.
    pub room_types: Option<Vec<Option<String>>>,
    pub not_room_types: Vec<Option<String>>,
    pub spaces: Option<Vec<OwnedRoomId>>,
    pub tags: Option<Vec<String>>,
    pub not_tags: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Extensions {
    pub to_device: Option<ToDevice>,
    pub e2ee: bool,
    pub account_data: Option<Scope>,
    pub receipts: Option<Scope>,
    pub typing: Option<Scope>,
}

#[derive(Debug, Default)]
pub struct ToDevice {
    pub since: Option<i64>,
    pub limit: Option<usize>,
}

/// Which rooms a per-room extension covers: the rooms of these lists (all when `None`)
/// and these rooms (the subscribed ones for `*`, all when `None`).
#[derive(Debug, Default, Clone)]
pub struct Scope {
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

// The wire forms.

#[derive(Deserialize)]
struct Wire {
    conn_id: Option<String>,
    txn_id: Option<String>,
    pos: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    lists: BTreeMap<String, WireList>,
    #[serde(default)]
    room_subscriptions: BTreeMap<String, WireConfig>,
    #[serde(default)]
    extensions: BTreeMap<String, Json>,
}

#[derive(Deserialize)]
struct WireList {
    ranges: Option<Vec<(u64, u64)>>,
    range: Option<(u64, u64)>,
    #[serde(flatten)]
    config: WireConfig,
    filters: Option<WireFilters>,
}

#[derive(Deserialize)]
struct WireConfig {
    #[serde(default)]
    timeline_limit: u64,
    #[serde(default)]
    required_state: Option<WireRequiredState>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireRequiredState {
    Pairs(Vec<(String, String)>),
    Object {
        #[serde(default)]
        include: Vec<WireElement>,
        #[serde(default)]
        exclude: Vec<WireElement>,
        #[serde(default)]
        lazy_members: bool,
    },
}

#[derive(Deserialize)]
struct WireElement {
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireFilters {
    is_dm: Option<bool>,
    is_encrypted: Option<bool>,
    is_invite: Option<bool>,
    is_invited: Option<bool>,
    room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    not_room_types: Vec<Option<String>>,
    spaces: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    #[serde(default)]
    not_tags: Vec<String>,
}

#[derive(Deserialize, Default)]
struct WireScope {
    enabled: Option<bool>,
    lists: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
    limit: Option<u64>,
    since: Option<String>,
}

fn too_many(what: &str) -> Error {
    Error::invalid_param(format!("Too many {what}"))
}

fn opaque_id(s: &str, what: &str) -> Result<()> {
    // Spec ("Opaque Identifiers"): [0-9a-zA-Z.=_-], 1 to 255 characters. Element X's
    // list names fit; be lenient on the alphabet but not on size or control characters.
    if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(Error::invalid_param(format!("Invalid {what}")));
    }
    Ok(())
}

impl Request {
    /// The body, with `pos` and `timeout` from the query string when given there (the
    /// form ruma sends), checked against the MSC's bounds.
    pub fn parse(
        body: &[u8],
        query_pos: Option<String>,
        query_timeout: Option<u64>,
        max_timeline: usize,
    ) -> Result<Request> {
        let w: Wire = if body.is_empty() {
            serde_json::from_slice(b"{}")?
        } else {
            serde_json::from_slice(body).map_err(|e| Error::bad_json(e.to_string()))?
        };
        if w.lists.len() > MAX_LISTS {
            return Err(too_many("lists"));
        }
        if w.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(too_many("room subscriptions"));
        }
        let conn_id = w.conn_id.unwrap_or_default();
        opaque_id(&conn_id, "conn_id")?;
        if let Some(t) = &w.txn_id {
            opaque_id(t, "txn_id")?;
        }
        let mut lists = BTreeMap::new();
        for (name, l) in w.lists {
            opaque_id(&name, "list name")?;
            let ranges = match (l.ranges, l.range) {
                (Some(r), _) => Some(r),
                (None, Some(r)) => Some(vec![r]),
                (None, None) => None,
            };
            let ranges = match ranges {
                Some(r) if r.len() > MAX_RANGES => return Err(too_many("ranges")),
                Some(r) => {
                    let mut out = Vec::with_capacity(r.len());
                    for (a, b) in r {
                        if a > b {
                            return Err(Error::invalid_param("A range ends before it starts"));
                        }
                        out.push((clamp(a), clamp(b)));
                    }
                    Some(out)
                }
                None => None,
            };
            lists.insert(
                name,
                List {
                    ranges,
                    config: l.config.parse(max_timeline)?,
                    filters: l.filters.unwrap_or_default().parse()?,
                },
            );
        }
        let mut subscriptions = BTreeMap::new();
        for (room, c) in w.room_subscriptions {
            // A subscription to something that is no room ID names no room we have.
            let Ok(room) = OwnedRoomId::try_from(room) else {
                continue;
            };
            subscriptions.insert(room, c.parse(max_timeline)?);
        }
        let mut extensions = Extensions::default();
        for (name, json) in w.extensions {
            let scope: WireScope = serde_json::from_value(json)
                .map_err(|e| Error::bad_json(format!("extension {name}: {e}")))?;
            if scope.enabled != Some(true) {
                continue;
            }
            let bounded = |v: &Option<Vec<String>>| match v {
                Some(v) if v.len() > MAX_FILTER_ENTRIES => Err(too_many("extension entries")),
                _ => Ok(()),
            };
            bounded(&scope.lists)?;
            bounded(&scope.rooms)?;
            let as_scope = || Scope {
                lists: scope.lists.clone(),
                rooms: scope.rooms.clone(),
            };
            match name.as_str() {
                "to_device" => {
                    let since = match scope.since.as_deref() {
                        None => None,
                        Some(s) => Some(
                            s.parse::<i64>()
                                .ok()
                                .filter(|p| *p >= 0)
                                .ok_or_else(|| Error::invalid_param("Invalid to_device since"))?,
                        ),
                    };
                    extensions.to_device = Some(ToDevice {
                        since,
                        limit: scope.limit.map(clamp),
                    });
                }
                "e2ee" => extensions.e2ee = true,
                "account_data" => extensions.account_data = Some(as_scope()),
                "receipts" => extensions.receipts = Some(as_scope()),
                "typing" => extensions.typing = Some(as_scope()),
                // Extensions this server does not know are left out of the response.
                _ => {}
            }
        }
        Ok(Request {
            conn_id,
            txn_id: w.txn_id,
            pos: w.pos.or(query_pos),
            timeout_ms: w.timeout.or(query_timeout).unwrap_or(0),
            lists,
            subscriptions,
            extensions,
        })
    }
}

fn clamp(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl WireConfig {
    fn parse(self, max_timeline: usize) -> Result<RoomConfig> {
        let mut rs = RequiredState::default();
        let wild = |s: Option<String>| s.filter(|s| s != "*");
        match self.required_state {
            None => {}
            Some(WireRequiredState::Pairs(pairs)) => {
                if pairs.len() > MAX_REQUIRED_STATE {
                    return Err(too_many("required_state entries"));
                }
                for (kind, key) in pairs {
                    if kind == "m.room.member" && key == "$LAZY" {
                        rs.lazy_members = true;
                        continue;
                    }
                    rs.include.insert((wild(Some(kind)), wild(Some(key))));
                }
            }
            Some(WireRequiredState::Object {
                include,
                exclude,
                lazy_members,
            }) => {
                if include.len() + exclude.len() > MAX_REQUIRED_STATE {
                    return Err(too_many("required_state entries"));
                }
                rs.lazy_members = lazy_members;
                for e in include {
                    rs.include.insert((wild(e.kind), wild(e.state_key)));
                }
                for e in exclude {
                    rs.exclude.insert((wild(e.kind), wild(e.state_key)));
                }
            }
        }
        for (kind, key) in rs.include.iter().chain(&rs.exclude) {
            for s in [kind, key].into_iter().flatten() {
                crate::input::text("required_state entry", s, crate::input::MAX_STATE_KEY_BYTES)?;
            }
        }
        Ok(RoomConfig {
            timeline_limit: clamp(self.timeline_limit).min(max_timeline),
            required_state: rs,
        })
    }
}

impl WireFilters {
    fn parse(self) -> Result<Filters> {
        let lens = [
            self.room_types.as_ref().map_or(0, Vec::len),
            self.not_room_types.len(),
            self.spaces.as_ref().map_or(0, Vec::len),
            self.tags.as_ref().map_or(0, Vec::len),
            self.not_tags.len(),
        ];
        if lens.iter().any(|l| *l > MAX_FILTER_ENTRIES) {
            return Err(too_many("filter entries"));
        }
        Ok(Filters {
            is_dm: self.is_dm,
            is_encrypted: self.is_encrypted,
            is_invite: self.is_invite.or(self.is_invited),
            room_types: self.room_types,
            not_room_types: self.not_room_types,
            spaces: self.spaces.map(|s| {
                s.into_iter()
                    .filter_map(|r| OwnedRoomId::try_from(r).ok())
                    .collect()
            }),
            tags: self.tags,
            not_tags: self.not_tags,
        })
    }
}

impl RoomConfig {
    /// The superset of two configs (MSC4186 "Combining room configs").
    pub fn combine(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        let rs = &mut self.required_state;
        let o = &other.required_state;
        // An exclusion holds only where both exclude.
        rs.exclude = rs.exclude.intersection(&o.exclude).cloned().collect();
        rs.include.extend(o.include.iter().cloned());
        rs.lazy_members |= o.lazy_members;
    }
}

impl RequiredState {
    /// Whether a state event of `kind` and `key` is asked for (members the lazy rule
    /// brings in are apart: see `room.rs`). `$ME` names the user.
    pub fn wants(&self, kind: &str, key: &str, me: &UserId) -> bool {
        let matches = |(t, k): &(Option<String>, Option<String>)| {
            t.as_deref().is_none_or(|t| t == kind)
                && k.as_deref()
                    .is_none_or(|k| k == key || (k == "$ME" && key == me.as_str()))
        };
        self.include.iter().any(matches) && !self.exclude.iter().any(matches)
    }

    /// Lazy loading is on, and no pattern asks for every member event already
    /// (MSC4186 "Combining room configs").
    pub fn lazy(&self) -> bool {
        self.lazy_members && !self.all_members()
    }

    /// Whether `self` asks for something `old` did not: the client must then be sent the
    /// state anew (MSC4186 "Changes to `required_state`").
    pub fn expands(&self, old: &RequiredState) -> bool {
        if self.lazy() && !old.lazy() && !old.all_members() {
            return true;
        }
        let covers = |(t, k): &(Option<String>, Option<String>)| {
            old.include
                .iter()
                .any(|(ot, ok)| (ot.is_none() || ot == t) && (ok.is_none() || ok == k))
        };
        self.include.iter().any(|e| !covers(e))
            || old.exclude.iter().any(|e| !self.exclude.contains(e))
    }

    /// Some pattern asks for every member event.
    fn all_members(&self) -> bool {
        self.include
            .iter()
            .any(|(t, k)| t.as_deref().is_none_or(|t| t == "m.room.member") && k.is_none())
    }

    /// A canonical text form, kept per room sent (`sliding_rooms.required_state`).
    pub fn to_text(&self) -> String {
        serde_json::json!({
            "i": self.include.iter().collect::<Vec<_>>(),
            "e": self.exclude.iter().collect::<Vec<_>>(),
            "l": self.lazy_members,
        })
        .to_string()
    }

    pub fn from_text(s: &str) -> RequiredState {
        #[derive(Deserialize)]
        struct T {
            i: Vec<(Option<String>, Option<String>)>,
            e: Vec<(Option<String>, Option<String>)>,
            l: bool,
        }
        match serde_json::from_str::<T>(s) {
            Ok(t) => RequiredState {
                include: t.i.into_iter().collect(),
                exclude: t.e.into_iter().collect(),
                lazy_members: t.l,
            },
            Err(_) => RequiredState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Request> {
        Request::parse(body.as_bytes(), None, None, 50)
    }

    #[test]
    fn both_wire_forms_are_read() {
        let r = parse(
            r#"{"lists":{"a":{"ranges":[[0,19]],"timeline_limit":1,
                "required_state":[["m.room.member","$LAZY"],["m.room.name",""],["m.room.member","$ME"]]}}}"#,
        )
        .unwrap();
        let a = &r.lists["a"];
        assert_eq!(a.ranges, Some(vec![(0, 19)]));
        assert!(a.config.required_state.lazy_members);
        let me = ruma::user_id!("@me:x");
        assert!(a.config.required_state.wants("m.room.name", "", me));
        assert!(a.config.required_state.wants("m.room.member", "@me:x", me));
        assert!(!a.config.required_state.wants("m.room.member", "@you:x", me));
        let r = parse(
            r#"{"lists":{"b":{"range":[0,5],"timeline_limit":100,
                "required_state":{"include":[{}],"exclude":[{"type":"m.room.create","state_key":""}]}}}}"#,
        )
        .unwrap();
        let b = &r.lists["b"];
        assert_eq!(b.config.timeline_limit, 50);
        assert!(b.config.required_state.wants("m.room.topic", "", me));
        assert!(!b.config.required_state.wants("m.room.create", "", me));
    }

    #[test]
    fn bounds_are_checked() {
        let lists: Vec<String> = (0..101)
            .map(|i| format!(r#""l{i}":{{"timeline_limit":1}}"#))
            .collect();
        let e = parse(&format!(r#"{{"lists":{{{}}}}}"#, lists.join(","))).unwrap_err();
        assert!(e.to_string().contains("Too many lists"), "{e}");
        assert!(parse(r#"{"lists":{"a":{"ranges":[[5,1]],"timeline_limit":1}}}"#).is_err());
        assert!(parse(r#"{"lists":[1]}"#).is_err());
        // Huge numbers are as good as unbounded, not an overflow.
        let r = parse(r#"{"lists":{"a":{"ranges":[[0,18446744073709551615]],"timeline_limit":18446744073709551615}}}"#).unwrap();
        assert_eq!(r.lists["a"].config.timeline_limit, 50);
    }

    #[test]
    fn combining_and_expanding() {
        let me = ruma::user_id!("@me:x");
        let small =
            parse(r#"{"lists":{"a":{"timeline_limit":1,"required_state":[["m.room.name",""]]}}}"#)
                .unwrap()
                .lists["a"]
                .config
                .clone();
        let big = parse(r#"{"lists":{"a":{"timeline_limit":20,"required_state":[["*","*"]]}}}"#)
            .unwrap()
            .lists["a"]
            .config
            .clone();
        let mut c = small.clone();
        c.combine(&big);
        assert_eq!(c.timeline_limit, 20);
        assert!(c.required_state.wants("m.room.topic", "", me));
        assert!(c.required_state.expands(&small.required_state));
        assert!(!small.required_state.expands(&c.required_state));
        assert_eq!(
            RequiredState::from_text(&c.required_state.to_text()),
            c.required_state
        );
    }
}
