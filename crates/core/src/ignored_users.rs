//! Ignoring users (spec: "Ignoring Users"): a user's `m.ignored_user_list` account data
//! hides the non-state events, invites and to-device messages of the users it names from
//! them, and those events do not notify them. Both directions are kept in memory (who
//! a user ignores; who ignores a user), loaded at start-up and moved by the account data
//! write in commit order, so neither a sync nor an event's push evaluation reads the
//! database for them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use ruma::{OwnedUserId, UserId};
use serde_json::Value as Json;

use crate::{ports::Database, Homeserver, Result};

pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// The users one user ignores.
pub type Ignored = Arc<HashSet<OwnedUserId>>;

#[derive(Default)]
pub(crate) struct IgnoreIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_user: HashMap<OwnedUserId, Ignored>,
    /// For each ignored user, who ignores them.
    ignorers: HashMap<OwnedUserId, HashSet<OwnedUserId>>,
}

/// The user IDs an `m.ignored_user_list` content names (spec: `ignored_users`, an object
/// keyed by user ID); anything else in it is not a user and is passed over.
pub(crate) fn ignored_in(content: &Json) -> HashSet<OwnedUserId> {
    content
        .get("ignored_users")
        .and_then(Json::as_object)
        .map(|o| {
            o.keys()
                .filter_map(|k| UserId::parse(k.as_str()).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl IgnoreIndex {
    /// Every user's list, read once at start-up.
    pub(crate) async fn load(db: &dyn Database) -> Result<Self> {
        let index = Self::default();
        let rows = db
            .query(
                "SELECT user_id, content FROM account_data WHERE room_id = '' AND type = $1",
                vec![IGNORED_USER_LIST.into()],
            )
            .await?;
        for r in &rows {
            let (Ok(user), Ok(content)) = (
                UserId::parse(r.text(0)?),
                serde_json::from_str::<Json>(&r.text(1)?),
            ) else {
                continue;
            };
            index.set(&user, ignored_in(&content));
        }
        Ok(index)
    }

    /// `user` now ignores exactly `list` (themselves excepted: nobody ignores their own
    /// events).
    pub(crate) fn set(&self, user: &UserId, mut list: HashSet<OwnedUserId>) {
        list.remove(user);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_user.remove(user) {
            for o in old.iter() {
                if let Some(set) = inner.ignorers.get_mut(o) {
                    set.remove(user);
                    if set.is_empty() {
                        inner.ignorers.remove(o);
                    }
                }
            }
        }
        for i in &list {
            inner
                .ignorers
                .entry(i.clone())
                .or_default()
                .insert(user.to_owned());
        }
        if !list.is_empty() {
            inner.by_user.insert(user.to_owned(), Arc::new(list));
        }
    }

    pub(crate) fn ignored_by(&self, user: &UserId) -> Option<Ignored> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_user.get(user).cloned()
    }

    /// Who ignores `sender`, if anyone.
    pub(crate) fn ignorers_of(&self, sender: &UserId) -> Vec<OwnedUserId> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .ignorers
            .get(sender)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Homeserver {
    /// The users `user` ignores (empty for most).
    pub fn ignored_users(&self, user: &UserId) -> Ignored {
        self.ignores.ignored_by(user).unwrap_or_default()
    }

    /// Whether the invite `event_id` to `user` comes from someone they ignore.
    pub(crate) async fn invite_ignored(
        &self,
        user: &UserId,
        event_id: &ruma::EventId,
    ) -> Result<bool> {
        let ignored = self.ignored_users(user);
        if ignored.is_empty() {
            return Ok(false);
        }
        Ok(self
            .get_pdu(event_id)
            .await?
            .is_some_and(|p| ignored.contains(&p.sender)))
    }
}

/// Whether a viewer ignoring `ignored` must not be shown `pdu`: a non-state event of a
/// user they ignore (spec: state events are still sent).
pub(crate) fn hidden(ignored: &Ignored, pdu: &crate::rooms::Pdu) -> bool {
    pdu.state_key.is_none() && !ignored.is_empty() && ignored.contains(&pdu.sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_each_new_list() {
        let index = IgnoreIndex::default();
        let (a, b, c) = (
            ruma::owned_user_id!("@a:x"),
            ruma::owned_user_id!("@b:x"),
            ruma::owned_user_id!("@c:x"),
        );
        let content = serde_json::json!({ "ignored_users": { "@b:x": {}, "@c:x": {}, "@a:x": {}, "not a user": {} } });
        index.set(&a, ignored_in(&content));
        assert_eq!(
            index.ignored_by(&a).map(|s| s.len()),
            Some(2),
            "self and non-users dropped"
        );
        assert_eq!(index.ignorers_of(&b), std::slice::from_ref(&a));
        index.set(
            &a,
            ignored_in(&serde_json::json!({ "ignored_users": { "@c:x": {} } })),
        );
        assert!(index.ignorers_of(&b).is_empty());
        assert_eq!(index.ignorers_of(&c), std::slice::from_ref(&a));
        index.set(&a, ignored_in(&serde_json::json!({ "ignored_users": [] })));
        assert!(index.ignored_by(&a).is_none());
        assert!(index.ignorers_of(&c).is_empty());
    }
}
