//! The user directory (spec: "User directory", `POST /user_directory/search`): the users
//! who share a room with the searcher or are in a public room, or with
//! `user_directory.search_all_users` every local user too. Names come from the member
//! events (remote users) and the profiles (local users).

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value as Json};

use crate::{ports::Value, Homeserver, Result};

/// Results per search when the client names no limit (spec's default), and at most.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Users looked at per search, however many rooms the searcher shares.
const MAX_CANDIDATES: i64 = 20_000;
/// Words of a term used.
const MAX_WORDS: usize = 8;

/// A user the directory may show, and how.
struct Candidate {
    name: Option<String>,
    avatar: Option<String>,
    /// Shares a room with the searcher (ranked first).
    shares: bool,
}

/// Every word of the term starts a word of the user's ID or name (case-insensitive), as
/// users expect of a directory ("al" finds Alice, "smi" finds John Smith).
fn matches(words: &[String], user: &str, name: Option<&str>) -> bool {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let mut haystack = split(user);
    if let Some(n) = name {
        haystack.extend(split(n));
    }
    let whole_id = user.to_lowercase();
    words.iter().all(|w| {
        haystack.iter().any(|h| h.starts_with(w.as_str())) || whole_id.starts_with(w.as_str())
    })
}

impl Homeserver {
    /// `POST /user_directory/search`: (results as JSON, limited).
    pub async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: Option<usize>,
    ) -> Result<(Vec<Json>, bool)> {
        let words: Vec<String> = term
            .split_whitespace()
            .take(MAX_WORDS)
            .map(str::to_lowercase)
            .collect();
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        if words.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut found: BTreeMap<OwnedUserId, Candidate> = BTreeMap::new();
        // Members of the searcher's rooms, then of public rooms: their names in the room.
        let rows = self
            .db
            .query(
                "SELECT c.state_key, e.json, 1 FROM memberships m
                 JOIN current_state c ON c.room_id = m.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
                 JOIN events e ON e.event_id = c.event_id
                 WHERE m.user_id = $1 AND m.membership = 'join'
                 UNION ALL
                 SELECT c.state_key, e.json, 0 FROM rooms r
                 JOIN current_state c ON c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
                 JOIN events e ON e.event_id = c.event_id
                 WHERE r.is_public = 1
                 LIMIT $2",
                vec![searcher.as_str().into(), Value::Int(MAX_CANDIDATES)],
            )
            .await?;
        for r in &rows {
            let Ok(user) = UserId::parse(r.text(0)?) else {
                continue;
            };
            let shares = r.int(2)? == 1;
            let member: Json = serde_json::from_str(&r.text(1)?).unwrap_or_default();
            let c = &member["content"];
            let entry = found.entry(user).or_insert(Candidate {
                name: c["displayname"].as_str().map(str::to_owned),
                avatar: c["avatar_url"].as_str().map(str::to_owned),
                shares,
            });
            entry.shares |= shares;
        }
        if self.config.user_directory_all_users {
            let rows = self
                .db
                .query(
                    "SELECT user_id, profile FROM users WHERE deactivated = 0 ORDER BY user_id LIMIT $1",
                    vec![Value::Int(MAX_CANDIDATES)],
                )
                .await?;
            for r in &rows {
                let Ok(user) = UserId::parse(r.text(0)?) else {
                    continue;
                };
                let profile: Json = serde_json::from_str(&r.text(1)?).unwrap_or_default();
                found.entry(user).or_insert(Candidate {
                    name: profile["displayname"].as_str().map(str::to_owned),
                    avatar: profile["avatar_url"].as_str().map(str::to_owned),
                    shares: false,
                });
            }
        }
        let mut hits: Vec<(OwnedUserId, Candidate)> = found
            .into_iter()
            // Not the searcher themselves: a directory is for finding others.
            .filter(|(u, c)| u != searcher && matches(&words, u.as_str(), c.name.as_deref()))
            .collect();
        // Room-mates first, then users with a name, then by ID.
        hits.sort_by(|(a, ca), (b, cb)| {
            (!ca.shares, ca.name.is_none(), a).cmp(&(!cb.shares, cb.name.is_none(), b))
        });
        let limited = hits.len() > limit;
        let results = hits
            .into_iter()
            .take(limit)
            .map(|(u, c)| {
                let mut j = json!({ "user_id": u });
                if let Some(n) = c.name {
                    j["display_name"] = n.into();
                }
                if let Some(a) = c.avatar {
                    j["avatar_url"] = a.into();
                }
                j
            })
            .collect();
        Ok((results, limited))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn words_start_words_of_the_id_or_name() {
        let w = |s: &str| {
            s.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        };
        assert!(matches(&w("al"), "@alice:example.org", None));
        assert!(matches(
            &w("smi"),
            "@jsmith:example.org",
            Some("John Smith")
        ));
        assert!(matches(
            &w("john smi"),
            "@js:example.org",
            Some("John Smith")
        ));
        assert!(matches(&w("@ali"), "@alice:example.org", None));
        assert!(!matches(&w("lice"), "@alice:example.org", Some("Alice")));
        assert!(!matches(
            &w("john x"),
            "@js:example.org",
            Some("John Smith")
        ));
    }
}
