//! Device-list tracking (spec: "Tracking the device list for a user"): who must refetch
//! whose keys (`changed`) and whom a user no longer shares a room with (`left`).

use std::collections::BTreeSet;

use ruma::UserId;

use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    Homeserver, Result,
};

/// Statements recording that `user`'s devices or keys changed at `pos`. Only each user's
/// latest change is kept (a sync asks whether there is one after its `since`), so the
/// table has at most a row per user, however often keys change.
pub(crate) fn device_list_change(user: &str, pos: i64) -> [Statement; 2] {
    [
        Statement::new(
            "DELETE FROM device_list_changes WHERE user_id = $1 AND stream_pos < $2",
            vec![user.into(), Value::Int(pos)],
        ),
        Statement::new(
            "INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![user.into(), Value::Int(pos)],
        ),
    ]
}

/// Sizes the candidate lists of `users_sharing_rooms_among` are padded to.
const CANDIDATE_SIZES: [usize; 4] = [4, 16, 64, 256];

impl Homeserver {
    /// Records that `user`'s devices or keys changed.
    pub async fn mark_device_list_changed(&self, user: &UserId) -> Result<()> {
        let u = user.to_string();
        let audience = [user.to_owned()];
        self.commit(
            &[Stream::DeviceLists],
            Audience::RoomMatesOf(&audience),
            |pos| device_list_change(&u, pos).into(),
        )
        .await?;
        Ok(())
    }

    /// Local and remote users sharing a joined room with `viewer`.
    pub(crate) async fn users_sharing_rooms(&self, viewer: &UserId) -> Result<BTreeSet<String>> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT o.user_id FROM memberships o
                 JOIN memberships v ON v.room_id = o.room_id AND v.user_id = $1 AND v.membership = 'join'
                 WHERE o.membership = 'join'",
                vec![viewer.as_str().into()],
            )
            .await?;
        rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
    }

    /// Of `candidates`, those sharing a joined room with `viewer` (at most 256 asked at
    /// once; more are asked in turn).
    pub(crate) async fn users_sharing_rooms_among(
        &self,
        viewer: &UserId,
        candidates: &[String],
    ) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for chunk in candidates.chunks(CANDIDATE_SIZES[CANDIDATE_SIZES.len() - 1]) {
            let Some(last) = chunk.last() else { continue };
            let size = CANDIDATE_SIZES
                .iter()
                .copied()
                .find(|n| *n >= chunk.len())
                .unwrap_or(chunk.len());
            let mut params: Vec<Value> = vec![viewer.as_str().into()];
            params.extend(chunk.iter().map(|c| Value::from(c.as_str())));
            // Padded (repeating the last) so few distinct statements are prepared.
            while params.len() < size + 1 {
                params.push(last.as_str().into());
            }
            let list: Vec<String> = (2..=size + 1).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT DISTINCT o.user_id FROM memberships v
                 JOIN memberships o ON o.room_id = v.room_id AND o.membership = 'join'
                   AND o.user_id IN ({})
                 WHERE v.user_id = $1 AND v.membership = 'join'",
                list.join(", ")
            );
            for r in self.db.query(&sql, params).await? {
                out.insert(r.text(0)?);
            }
        }
        Ok(out)
    }

    /// `(changed, left)` for a sync or `/keys/changes` from `since` to `upto`.
    pub async fn device_list_updates(
        &self,
        viewer: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<(Vec<String>, Vec<String>)> {
        // Only device-list and membership changes can add to either list.
        if !self.stream_moved(Stream::DeviceLists, Some(since))
            && !self.stream_moved(Stream::Memberships, Some(since))
        {
            return Ok((vec![], vec![]));
        }
        let sharing = self.users_sharing_rooms(viewer).await?;
        let mut changed = BTreeSet::new();
        for r in self
            .db
            .query(
                "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2",
                vec![Value::Int(since), Value::Int(upto)],
            )
            .await?
        {
            let u = r.text(0)?;
            if u == viewer.as_str() || sharing.contains(&u) {
                changed.insert(u);
            }
        }
        // Membership changes in rooms the viewer has been in during the window.
        let rows = self
            .db
            .query(
                "SELECT o.user_id, o.membership, v.membership, v.stream_pos, o.room_id FROM memberships o
                 JOIN memberships v ON v.room_id = o.room_id AND v.user_id = $1
                 WHERE (o.stream_pos > $2 AND o.stream_pos <= $3) OR (v.stream_pos > $2 AND v.stream_pos <= $3)",
                vec![viewer.as_str().into(), Value::Int(since), Value::Int(upto)],
            )
            .await?;
        let mut left = BTreeSet::new();
        for r in rows {
            let (other, other_m, viewer_m, viewer_pos) =
                (r.text(0)?, r.text(1)?, r.text(2)?, r.int(3)?);
            if other == viewer.as_str() {
                continue;
            }
            let viewer_joined_now = viewer_pos > since && viewer_m == "join";
            if other_m == "join" && (viewer_joined_now || viewer_m == "join") {
                // A new room-mate (or all mates of a room just joined): fetch their keys.
                if sharing.contains(&other) {
                    changed.insert(other);
                }
            } else if !sharing.contains(&other) {
                left.insert(other);
            }
        }
        left.retain(|u| !changed.contains(u));
        Ok((changed.into_iter().collect(), left.into_iter().collect()))
    }
}
