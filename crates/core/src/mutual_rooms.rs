//! Mutual rooms (spec v1.19: "Mutual Rooms", `GET /mutual_rooms`): the rooms both users
//! have joined, in pages ordered by room ID. A page's token is the last room ID it gave,
//! so it never expires and a room joined meanwhile appears if it sorts later.

use base64::Engine as _;
use ruma::{api::error::ErrorKind, UserId};

use crate::{ports::Value, Error, Homeserver, Result};

/// Rooms per page.
const PAGE: i64 = 100;
/// Rooms counted at most for `count`.
const MAX_COUNTED: i64 = 10_000;

/// A page of mutual rooms.
pub struct MutualRooms {
    pub joined: Vec<String>,
    pub count: u64,
    pub next_batch: Option<String>,
}

fn token(room: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(room)
}

fn parse_token(t: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|r| {
            r.starts_with('!') && r.len() <= crate::input::MAX_ID_BYTES && !r.contains('\0')
        })
        .ok_or_else(|| Error::invalid_param("Invalid from token"))
}

impl Homeserver {
    pub async fn mutual_rooms(
        &self,
        me: &UserId,
        other: Option<&str>,
        from: Option<&str>,
    ) -> Result<MutualRooms> {
        let Some(other) = other else {
            return Err(Error::Matrix(
                ErrorKind::MissingParam,
                "user_id is required".into(),
            ));
        };
        let other = UserId::parse(other)
            .ok()
            .filter(|u| u.validate_strict().is_ok())
            .ok_or_else(|| Error::invalid_param("The user ID provided was invalid"))?;
        if other == me {
            return Err(Error::invalid_param("user_id is your own user ID"));
        }
        let after = from.map(parse_token).transpose()?.unwrap_or_default();
        let rows = self
            .db
            .query(
                "SELECT a.room_id FROM memberships a
                 JOIN memberships b ON b.room_id = a.room_id AND b.user_id = $2 AND b.membership = 'join'
                 WHERE a.user_id = $1 AND a.membership = 'join' AND a.room_id > $3
                 ORDER BY a.room_id LIMIT $4",
                vec![me.as_str().into(), other.as_str().into(), after.into(), Value::Int(PAGE + 1)],
            )
            .await?;
        let mut joined = rows
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<_>, _>>()?;
        let next_batch = if joined.len() as i64 > PAGE {
            joined.truncate(PAGE as usize);
            joined.last().map(|r| token(r))
        } else {
            None
        };
        let count = self
            .db
            .query(
                "SELECT COUNT(*) FROM (SELECT 1 FROM memberships a
                 JOIN memberships b ON b.room_id = a.room_id AND b.user_id = $2 AND b.membership = 'join'
                 WHERE a.user_id = $1 AND a.membership = 'join' LIMIT $3) t",
                vec![me.as_str().into(), other.as_str().into(), Value::Int(MAX_COUNTED)],
            )
            .await?
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        Ok(MutualRooms {
            joined,
            count: count.max(0) as u64,
            next_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_a_room_and_nothing_else() {
        let t = token("!room:example.org");
        assert_eq!(parse_token(&t).ok().as_deref(), Some("!room:example.org"));
        for bad in [
            "",
            "!!!",
            &token("not a room"),
            &token(&format!("!{}", "x".repeat(300))),
        ] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
