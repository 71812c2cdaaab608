//! Account data, global and per room (spec: "Client Config"), on the global stream.

use ruma::{RoomId, UserId};
use serde_json::{json, Value as Json};

use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Spec leaves the size open; we bound one entry.
pub const MAX_ACCOUNT_DATA_BYTES: usize = 64 * 1024;

impl Homeserver {
    pub async fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: &Json,
    ) -> Result<()> {
        crate::input::event_type(kind)?;
        if !content.is_object() {
            return Err(Error::bad_json("content must be an object"));
        }
        let text = serde_json::to_string(content)?;
        if text.len() > MAX_ACCOUNT_DATA_BYTES {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::TooLarge,
                "Account data too large".into(),
            ));
        }
        let room = room.map(|r| r.as_str().to_owned()).unwrap_or_default();
        let audience = [user.to_owned()];
        // The ignore index moves with the write, in commit order, before it is published.
        let after: Option<crate::commit::AfterCommit> =
            (room.is_empty() && kind == crate::ignored_users::IGNORED_USER_LIST).then(|| {
                let (owner, list) = (user.to_owned(), crate::ignored_users::ignored_in(content));
                Box::new(move |hs: &Homeserver, landed: crate::commit::Landed| {
                    if !matches!(landed, crate::commit::Landed::Refused(_)) {
                        hs.ignores.set(&owner, list);
                    }
                }) as crate::commit::AfterCommit
            });
        self.commit_then(
            &[Stream::AccountData],
            Audience::Users(&audience),
            1,
            |pos| {
                vec![Statement::new(
                    "INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
                    vec![user.as_str().into(), room.into(), kind.into(), text.into(), Value::Int(pos)],
                )]
            },
            after,
        )
        .await?;
        Ok(())
    }

    pub async fn get_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<Json> {
        crate::input::event_type(kind)?;
        let room = room.map(|r| r.as_str().to_owned()).unwrap_or_default();
        let row = query_opt(
            self.db.as_ref(),
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
            vec![user.as_str().into(), room.into(), kind.into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
        Ok(serde_json::from_str(&row.text(0)?)?)
    }

    /// Events `{type, content}` changed in `(since, upto]`; all when `since` is `None`.
    pub async fn account_data_since(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        since: Option<i64>,
        upto: i64,
    ) -> Result<Vec<Json>> {
        if !self.stream_moved(Stream::AccountData, since) {
            return Ok(vec![]);
        }
        let room = room.map(|r| r.as_str().to_owned()).unwrap_or_default();
        let rows = self
            .db
            .query(
                "SELECT type, content FROM account_data WHERE user_id = $1 AND room_id = $2 AND stream_pos > $3 AND stream_pos <= $4
                 ORDER BY stream_pos",
                vec![user.as_str().into(), room.into(), Value::Int(since.unwrap_or(0)), Value::Int(upto)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(json!({ "type": r.text(0)?, "content": serde_json::from_str::<Json>(&r.text(1)?)? })))
            .collect()
    }
}

/// Longest filter accepted, stored or given inline.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;

impl Homeserver {
    pub async fn create_filter(&self, user: &UserId, filter: &Json) -> Result<String> {
        let text = serde_json::to_string(filter)?;
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::TooLarge,
                "Filter too large".into(),
            ));
        }
        let id = crate::accounts::tokens::random_string(12);
        self.db
            .execute(
                "INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)",
                vec![user.as_str().into(), id.as_str().into(), text.into()],
            )
            .await?;
        Ok(id)
    }

    pub async fn get_filter(&self, user: &UserId, id: &str) -> Result<Json> {
        crate::input::name("Filter ID", id, crate::input::MAX_NAME_BYTES)?;
        let row = query_opt(
            self.db.as_ref(),
            "SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2",
            vec![user.as_str().into(), id.into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
        Ok(serde_json::from_str(&row.text(0)?)?)
    }
}
