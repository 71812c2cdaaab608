//! Applying filters (spec: "Filtering"): `types`/`not_types` with `*` wildcards, senders,
//! rooms, `url` filters. A filter is compiled once per request; matching a type is linear
//! in its length whatever the pattern (the `regex` crate's guarantee), so no pattern can
//! make a request slow.

use std::collections::HashSet;

use regex::{RegexSet, RegexSetBuilder};
use ruma::{
    api::client::filter::{Filter, FilterDefinition, LazyLoadOptions, RoomEventFilter, UrlFilter},
    OwnedRoomId, OwnedUserId, RoomId,
};
use serde_json::Value as Json;

use crate::{input::MAX_TYPE_BYTES, rooms::Pdu, Error, Result};

/// Most patterns in one `types` or `not_types` list.
pub const MAX_PATTERNS: usize = 100;
/// Memory one compiled pattern list may take.
const COMPILED_BYTES: usize = 1 << 20;

/// The `types` or `not_types` patterns of a filter, compiled. Spec: a `*` matches any
/// sequence of characters; everything else matches itself.
#[derive(Clone, Debug, Default)]
pub struct TypePatterns(Option<RegexSet>);

impl TypePatterns {
    pub fn new(patterns: &[String]) -> Result<Self> {
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::invalid_param(format!(
                "A filter list may hold at most {MAX_PATTERNS} event types"
            )));
        }
        let regexes: Vec<String> = patterns
            .iter()
            .map(|p| collapse_stars(p))
            // Longer than this, a pattern needs more literal characters than any event
            // type has (at most 255 bytes): it matches nothing.
            .filter(|p| p.len() <= 2 * MAX_TYPE_BYTES + 1)
            .map(|p| {
                let parts: Vec<String> = p.split('*').map(regex::escape).collect();
                format!("^{}$", parts.join(".*"))
            })
            .collect();
        if regexes.is_empty() {
            return Ok(Self(None));
        }
        RegexSetBuilder::new(regexes)
            .dot_matches_new_line(true)
            .size_limit(COMPILED_BYTES)
            .build()
            .map(|set| Self(Some(set)))
            .map_err(|_| Error::invalid_param("Filter event types are too complex"))
    }

    pub fn matches(&self, kind: &str) -> bool {
        self.0.as_ref().is_some_and(|set| set.is_match(kind))
    }
}

fn collapse_stars(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

/// A compiled event filter (spec: `RoomEventFilter`, or `EventFilter` for presence and
/// account data).
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    types: Option<TypePatterns>,
    not_types: TypePatterns,
    senders: Option<HashSet<OwnedUserId>>,
    not_senders: HashSet<OwnedUserId>,
    url: Option<UrlFilter>,
    pub limit: Option<usize>,
    pub lazy_members: bool,
    /// `unread_thread_notifications`: thread counts apart from the main timeline's.
    pub unread_threads: bool,
    /// No condition on events at all (every event passes).
    everything: bool,
    /// The viewer's ignored users, whose non-state events never pass.
    ignored: Option<crate::ignored_users::Ignored>,
}

impl EventFilter {
    pub fn new(f: &RoomEventFilter) -> Result<Self> {
        let mut out = Self::of(
            f.types.as_deref(),
            &f.not_types,
            f.senders.as_deref(),
            &f.not_senders,
        )?;
        out.url = f.url_filter;
        out.everything &= f.url_filter.is_none();
        out.limit = f
            .limit
            .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX));
        out.lazy_members = matches!(f.lazy_load_options, LazyLoadOptions::Enabled { .. });
        out.unread_threads = f.unread_thread_notifications;
        Ok(out)
    }

    /// For the presence and account-data sections.
    pub fn from_filter(f: &Filter) -> Result<Self> {
        let mut out = Self::of(
            f.types.as_deref(),
            &f.not_types,
            f.senders.as_deref(),
            &f.not_senders,
        )?;
        out.limit = f
            .limit
            .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX));
        Ok(out)
    }

    fn of(
        types: Option<&[String]>,
        not_types: &[String],
        senders: Option<&[OwnedUserId]>,
        not_senders: &[OwnedUserId],
    ) -> Result<Self> {
        Ok(Self {
            types: types.map(TypePatterns::new).transpose()?,
            not_types: TypePatterns::new(not_types)?,
            senders: senders.map(|s| s.iter().cloned().collect()),
            not_senders: not_senders.iter().cloned().collect(),
            url: None,
            limit: None,
            lazy_members: false,
            unread_threads: false,
            everything: types.is_none()
                && not_types.is_empty()
                && senders.is_none()
                && not_senders.is_empty(),
            ignored: None,
        })
    }

    /// Whether every event passes.
    pub fn is_everything(&self) -> bool {
        self.everything && self.ignored.is_none()
    }

    pub fn allows_type(&self, kind: &str) -> bool {
        !self.not_types.matches(kind) && self.types.as_ref().is_none_or(|t| t.matches(kind))
    }

    pub fn allows_sender(&self, sender: &ruma::UserId) -> bool {
        !self.not_senders.contains(sender)
            && self.senders.as_ref().is_none_or(|s| s.contains(sender))
    }

    /// Hides the non-state events of these users too (spec: "Ignoring Users").
    pub fn ignoring(&mut self, ignored: crate::ignored_users::Ignored) {
        self.ignored = (!ignored.is_empty()).then_some(ignored);
    }

    pub fn allows(&self, pdu: &Pdu) -> bool {
        if let Some(ignored) = &self.ignored {
            if crate::ignored_users::hidden(ignored, pdu) {
                return false;
            }
        }
        if self.everything {
            return true;
        }
        if !self.allows_type(&pdu.kind.to_string()) || !self.allows_sender(&pdu.sender) {
            return false;
        }
        if let Some(url) = &self.url {
            let has_url = serde_json::from_str::<Json>(pdu.content.get())
                .ok()
                .is_some_and(|c| c.get("url").is_some());
            if has_url != (*url == UrlFilter::EventsWithUrl) {
                return false;
            }
        }
        true
    }

    /// For account data and ephemeral events (`{type, content}` without a sender).
    pub fn allows_json(&self, event: &Json) -> bool {
        let kind = event
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        self.allows_type(kind)
    }
}

/// A `/sync` filter, compiled (spec: `Filter`).
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    rooms: Option<HashSet<OwnedRoomId>>,
    not_rooms: HashSet<OwnedRoomId>,
    pub include_leave: bool,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub room_account_data: EventFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
}

impl SyncFilter {
    pub fn new(f: &FilterDefinition) -> Result<Self> {
        let room = &f.room;
        Ok(Self {
            rooms: room.rooms.as_ref().map(|r| r.iter().cloned().collect()),
            not_rooms: room.not_rooms.iter().cloned().collect(),
            include_leave: room.include_leave,
            timeline: EventFilter::new(&room.timeline)?,
            state: EventFilter::new(&room.state)?,
            ephemeral: EventFilter::new(&room.ephemeral)?,
            room_account_data: EventFilter::new(&room.account_data)?,
            account_data: EventFilter::from_filter(&f.account_data)?,
            presence: EventFilter::from_filter(&f.presence)?,
        })
    }

    pub fn room_allowed(&self, room: &RoomId) -> bool {
        !self.not_rooms.contains(room) && self.rooms.as_ref().is_none_or(|r| r.contains(room))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::TypePatterns;

    fn matches(pattern: &str, kind: &str) -> bool {
        TypePatterns::new(&[pattern.to_owned()])
            .expect("compiles")
            .matches(kind)
    }

    /// The obvious quadratic matcher, by dynamic programming over characters.
    fn reference(pattern: &str, kind: &str) -> bool {
        let (p, k): (Vec<char>, Vec<char>) = (pattern.chars().collect(), kind.chars().collect());
        // m[j]: the pattern's first i characters match the kind's first j.
        let mut m = vec![false; k.len() + 1];
        m[0] = true;
        for &pc in &p {
            let mut next = vec![false; k.len() + 1];
            if pc == '*' {
                let mut any = false;
                for j in 0..=k.len() {
                    any |= m[j];
                    next[j] = any;
                }
            } else {
                for j in 1..=k.len() {
                    next[j] = m[j - 1] && k[j - 1] == pc;
                }
            }
            m = next;
        }
        m[k.len()]
    }

    #[test]
    fn wildcards() {
        assert!(matches("m.*", "m.room.message"));
        assert!(matches("*", "x"));
        assert!(matches("*", ""));
        assert!(matches("m.room.*.x", "m.room.a.x"));
        assert!(!matches("m.room.*.x", "m.room.a.y"));
        assert!(!matches("m.room.message", "m.room.messages"));
        // Only `*` is special: `?`, `.` and brackets match themselves.
        assert!(!matches("m.room?message", "m.room.message"));
        assert!(matches("m.room?message", "m.room?message"));
        assert!(!matches("m.room.[a-z]", "m.room.a"));
        assert!(matches("a*", "a\nb"));
    }

    #[test]
    fn the_pattern_that_hung_the_server_is_fast() {
        let kind = "a".repeat(255);
        let pattern = format!("{}b", "*a".repeat(60));
        assert!(!matches(&pattern, &kind));
        let many_stars = format!("{}b", "*".repeat(10_000));
        assert!(!matches(&many_stars, &kind));
        assert!(matches(&many_stars, "ab"));
    }

    #[test]
    fn too_many_patterns_are_refused() {
        let list: Vec<String> = (0..=super::MAX_PATTERNS).map(|i| format!("t{i}")).collect();
        assert!(TypePatterns::new(&list).is_err());
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(
            pattern in "[ab*?.é]{0,12}",
            kind in "[ab?.é\n]{0,16}",
        ) {
            prop_assert_eq!(matches(&pattern, &kind), reference(&pattern, &kind));
        }
    }
}
