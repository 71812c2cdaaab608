//! Lists (MSC4186 "Lists"): the user's rooms by recent activity, filtered, and the
//! rooms in each list's ranges.

use std::collections::{BTreeMap, HashSet};

use ruma::OwnedRoomId;

use super::{
    connection::Generation,
    index::{Attrs, Entry, RoomIndex},
    request::{Filters, List},
};
use crate::{Homeserver, Result};

/// The rooms a connection's lists are made of, most recent first: joined, invited and
/// knocked rooms; rooms the user was kicked or banned from; rooms they left themselves
/// only when this connection sent them before (MSC4186: they know they left).
pub(super) fn server_list<'a>(
    index: &'a RoomIndex,
    base: &Generation,
) -> Vec<(&'a OwnedRoomId, &'a Entry)> {
    let mut rooms: Vec<(&OwnedRoomId, &Entry)> = index
        .rooms
        .iter()
        .filter(|(id, e)| match e.m.membership.as_str() {
            "join" | "invite" | "knock" => true,
            "leave" | "ban" if !e.by_self => true,
            "leave" | "ban" => base.rooms.contains_key(*id),
            _ => false,
        })
        .collect();
    rooms.sort_unstable_by(|a, b| b.1.order.cmp(&a.1.order).then_with(|| a.0.cmp(b.0)));
    rooms
}

impl Homeserver {
    /// The rooms a `spaces` filter admits: the children of the named spaces the user is
    /// joined to; subspaces are not walked (MSC4186).
    pub(super) async fn filter_spaces(
        &self,
        index: &RoomIndex,
        spaces: &[OwnedRoomId],
    ) -> Result<HashSet<OwnedRoomId>> {
        let mut out = HashSet::new();
        for space in spaces {
            if index
                .rooms
                .get(space)
                .is_some_and(|e| e.m.membership == "join")
            {
                out.extend(self.space_child_ids(space).await?);
            }
        }
        Ok(out)
    }
}

/// Whether a room passes a list's filters.
pub(super) fn passes(
    f: &Filters,
    id: &OwnedRoomId,
    e: &Entry,
    index: &RoomIndex,
    children: Option<&HashSet<OwnedRoomId>>,
) -> bool {
    if let Some(dm) = f.is_dm {
        if index.direct.contains(id) != dm {
            return false;
        }
    }
    if let Some(invite) = f.is_invite {
        if (e.m.membership == "invite") != invite {
            return false;
        }
    }
    if let Some(children) = children {
        if !children.contains(id) {
            return false;
        }
    }
    let none = Attrs::default();
    let attrs = e.attrs.as_ref().unwrap_or(&none);
    if let Some(enc) = f.is_encrypted {
        if attrs.encrypted != enc {
            return false;
        }
    }
    // `not_room_types` wins over `room_types`.
    if f.not_room_types.contains(&attrs.room_type) {
        return false;
    }
    if let Some(types) = &f.room_types {
        if !types.contains(&attrs.room_type) {
            return false;
        }
    }
    // `not_tags` wins over `tags`.
    if f.not_tags.iter().any(|t| attrs.tags.contains(t)) {
        return false;
    }
    if let Some(tags) = &f.tags {
        if !tags.iter().any(|t| attrs.tags.contains(t)) {
            return false;
        }
    }
    true
}

/// Whether any list filters on what `load_attrs` reads.
pub(super) fn needs_attrs(lists: &BTreeMap<String, List>) -> bool {
    lists.values().any(|l| {
        let f = &l.filters;
        f.is_encrypted.is_some()
            || f.room_types.is_some()
            || !f.not_room_types.is_empty()
            || f.tags.is_some()
            || !f.not_tags.is_empty()
    })
}

/// The rooms of `list` in its ranges, and the list's count.
pub(super) fn window<'a>(
    list: &List,
    ordered: &[(&'a OwnedRoomId, &'a Entry)],
    index: &RoomIndex,
    children: Option<&HashSet<OwnedRoomId>>,
) -> (Vec<&'a OwnedRoomId>, usize) {
    let filtered: Vec<&OwnedRoomId> = ordered
        .iter()
        .filter(|(id, e)| passes(&list.filters, id, e, index, children))
        .map(|(id, _)| *id)
        .collect();
    let count = filtered.len();
    let picked = match &list.ranges {
        None => filtered,
        Some(ranges) => {
            // Overlapping ranges name a room once.
            let mut seen = vec![false; filtered.len()];
            let mut out = Vec::new();
            for (a, b) in ranges {
                let upto = b.saturating_add(1).min(filtered.len());
                for i in (*a).min(upto)..upto {
                    if let (Some(id), Some(s)) = (filtered.get(i), seen.get_mut(i)) {
                        if !*s {
                            *s = true;
                            out.push(*id);
                        }
                    }
                }
            }
            out
        }
    };
    (picked, count)
}
