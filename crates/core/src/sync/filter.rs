//! Applying filters (spec: "Filtering"): `types`/`not_types` with `*` wildcards, senders,
//! rooms, `url` filters.

use ruma::{
    api::client::filter::{FilterDefinition, LazyLoadOptions, RoomEventFilter, UrlFilter},
    RoomId,
};
use serde_json::Value as Json;

use crate::rooms::Pdu;

/// Spec: a `*` matches any sequence of characters.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == kind,
        Some((head, tail)) => {
            kind.len() >= head.len() && kind.starts_with(head) && {
                let rest = &kind[head.len()..];
                (0..=rest.len()).any(|i| rest.is_char_boundary(i) && type_matches(tail, &rest[i..]))
            }
        }
    }
}

fn types_allowed(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    !not_types.iter().any(|p| type_matches(p, kind))
        && types.is_none_or(|t| t.iter().any(|p| type_matches(p, kind)))
}

pub fn room_allowed(filter: &FilterDefinition, room: &RoomId) -> bool {
    let f = &filter.room;
    !f.not_rooms.iter().any(|r| r == room)
        && f.rooms
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| r == room))
}

pub fn event_allowed(f: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    if !types_allowed(f.types.as_deref(), &f.not_types, &kind) {
        return false;
    }
    if f.not_senders.contains(&pdu.sender)
        || f.senders.as_ref().is_some_and(|s| !s.contains(&pdu.sender))
    {
        return false;
    }
    if let Some(url) = &f.url_filter {
        let has_url = serde_json::from_str::<Json>(pdu.content.get())
            .ok()
            .is_some_and(|c| c.get("url").is_some());
        if has_url != (*url == UrlFilter::EventsWithUrl) {
            return false;
        }
    }
    true
}

pub fn lazy_members(f: &RoomEventFilter) -> bool {
    matches!(f.lazy_load_options, LazyLoadOptions::Enabled { .. })
}

pub fn account_data_allowed(filter: &FilterDefinition, event: &Json) -> bool {
    let kind = event
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    types_allowed(
        filter.account_data.types.as_deref(),
        &filter.account_data.not_types,
        kind,
    )
}

#[cfg(test)]
mod tests {
    use super::type_matches;

    #[test]
    fn wildcards() {
        assert!(type_matches("m.*", "m.room.message"));
        assert!(type_matches("*", "x"));
        assert!(type_matches("m.room.*.x", "m.room.a.x"));
        assert!(!type_matches("m.room.*.x", "m.room.a.y"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
    }
}
