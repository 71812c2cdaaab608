//! Presence of local users (spec: "Presence"), on the global stream.

use ruma::UserId;
use serde_json::{json, Value as Json};

use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Longest status message kept.
pub const MAX_STATUS_MSG: usize = 1024;

impl Homeserver {
    pub async fn set_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
    ) -> Result<()> {
        if !matches!(state, "online" | "offline" | "unavailable") {
            return Err(Error::invalid_param(
                "presence must be online, offline or unavailable",
            ));
        }
        if let Some(m) = status_msg {
            crate::input::text("status_msg", m, MAX_STATUS_MSG)?;
        }
        let now = self.now();
        // Clients repeat their presence every few minutes: unchanged, it only refreshes
        // `last_active_ts`, without a stream position or a wake-up for everyone.
        let current = query_opt(
            self.db.as_ref(),
            "SELECT state, status_msg FROM presence WHERE user_id = $1",
            vec![user.as_str().into()],
        )
        .await?;
        if let Some(row) = current {
            if row.text(0)? == state && row.opt_text(1)?.as_deref() == status_msg {
                self.db
                    .execute(
                        "UPDATE presence SET last_active_ts = $2 WHERE user_id = $1",
                        vec![user.as_str().into(), Value::Int(now)],
                    )
                    .await?;
                self.presence_states.put(user.to_owned(), state.to_owned());
                return Ok(());
            }
        }
        // Forgotten until the new state is durable: a sync meanwhile reads the table.
        self.presence_states.remove(&user.to_owned());
        // Spec ("Presence"): those who share a room with the user see it.
        let audience = [user.to_owned()];
        let (who, what) = (user.to_owned(), state.to_owned());
        // In commit order, so two changes in one group leave the later one.
        let remember: crate::commit::AfterCommit = Box::new(move |hs, landed| {
            if let crate::commit::Landed::Committed(_) = landed {
                hs.presence_states.put(who, what);
            }
        });
        self.commit_then(
            &[Stream::Presence],
            Audience::RoomMatesOf(&audience),
            1,
            |pos| {
                vec![Statement::new(
                    "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
                       last_active_ts = excluded.last_active_ts, stream_pos = excluded.stream_pos",
                    vec![user.as_str().into(), state.into(), status_msg.into(), Value::Int(now), Value::Int(pos)],
                )]
            },
            Some(remember),
        )
        .await?;
        Ok(())
    }

    /// `/sync?set_presence=`: marks the user `online` or `unavailable` while they sync.
    /// Only a change of state is written (and reaches others); activity itself is kept in
    /// memory, for `last_active_ago`.
    pub async fn mark_active(&self, user: &UserId, state: &str) -> Result<()> {
        self.last_active.put(user.to_owned(), self.now());
        if self.presence_states.get(&user.to_owned()).as_deref() == Some(state) {
            return Ok(());
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT state, status_msg FROM presence WHERE user_id = $1",
            vec![user.as_str().into()],
        )
        .await?;
        match row {
            Some(r) if r.text(0)? == state => {
                self.presence_states.put(user.to_owned(), state.to_owned());
                Ok(())
            }
            Some(r) => {
                self.set_presence(user, state, r.opt_text(1)?.as_deref())
                    .await
            }
            None => self.set_presence(user, state, None).await,
        }
    }

    /// Presence content (spec: `m.presence`), `None` for a user who never set one.
    pub async fn get_presence(&self, user: &UserId) -> Result<Option<Json>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT state, status_msg, last_active_ts FROM presence WHERE user_id = $1",
            vec![user.as_str().into()],
        )
        .await?;
        row.map(|r| self.presence_content(user, &r, 0)).transpose()
    }

    /// `m.presence` content from a row of `state, status_msg, last_active_ts` at `at`.
    fn presence_content(&self, user: &UserId, r: &crate::ports::Row, at: usize) -> Result<Json> {
        let now = self.now();
        let active = self.last_active.get(&user.to_owned()).unwrap_or(0);
        let state = r.text(at)?;
        let mut c = json!({
            "last_active_ago": (now - r.int(at + 2)?.max(active)).max(0),
            "currently_active": state == "online",
            "presence": state,
        });
        if let Some(m) = r.opt_text(at + 1)? {
            c["status_msg"] = m.into();
        }
        Ok(c)
    }

    /// `GET /presence/{userId}/status`: a user's presence is theirs and their room-mates'
    /// to see (spec: "Presence"; Synapse answers others 403).
    pub async fn presence_for(&self, viewer: &UserId, user: &UserId) -> Result<Option<Json>> {
        if viewer != user
            && !self
                .users_sharing_rooms(viewer)
                .await?
                .contains(user.as_str())
        {
            return Err(Error::forbidden(
                "You are not allowed to see their presence",
            ));
        }
        self.get_presence(user).await
    }

    /// Presence events changed in `(since, upto]` of users sharing a room with `viewer`.
    pub async fn presence_since(
        &self,
        viewer: &UserId,
        since: Option<i64>,
        upto: i64,
    ) -> Result<Vec<Json>> {
        if !self.stream_moved(Stream::Presence, since) {
            return Ok(vec![]);
        }
        let rows = self
            .db
            .query(
                "SELECT DISTINCT p.user_id, p.state, p.status_msg, p.last_active_ts FROM presence p
                 JOIN memberships o ON o.user_id = p.user_id AND o.membership = 'join'
                 JOIN memberships v ON v.room_id = o.room_id AND v.user_id = $1 AND v.membership = 'join'
                 WHERE p.stream_pos > $2 AND p.stream_pos <= $3",
                vec![viewer.as_str().into(), Value::Int(since.unwrap_or(0)), Value::Int(upto)],
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let user = UserId::parse(r.text(0)?).map_err(Error::internal)?;
            let content = self.presence_content(&user, &r, 1)?;
            out.push(json!({ "type": "m.presence", "sender": user, "content": content }));
        }
        Ok(out)
    }
}
