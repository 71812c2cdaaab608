//! Reporting content (spec: "Reporting content"): events, rooms and users, stored for the
//! server's admins.

use ruma::{EventId, RoomId, UserId};

use crate::{ports::Value, Error, Homeserver, Result};

/// Longest reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// What is reported.
pub enum ReportTarget<'a> {
    Event(&'a RoomId, &'a EventId),
    Room(&'a RoomId),
    User(&'a UserId),
}

impl Homeserver {
    /// Stores a report. An event must be one the reporter may see in a room they are
    /// joined to (spec: 404 otherwise, also for a redacted event); a room or user must
    /// be known here (404).
    pub async fn report(
        &self,
        reporter: &UserId,
        target: ReportTarget<'_>,
        reason: Option<&str>,
    ) -> Result<()> {
        if reason.is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(Error::invalid_param("The reason is too long"));
        }
        let (room, event, user) = match target {
            ReportTarget::Event(room, event) => {
                let missing = || Error::not_found("Event not found");
                if self.membership(room, reporter).await?.as_deref() != Some("join") {
                    return Err(missing());
                }
                let pdu = self
                    .event_for_user(room, reporter, event)
                    .await
                    .map_err(|_| missing())?;
                let redacted = matches!(pdu.json.get("unsigned"),
                    Some(ruma::CanonicalJsonValue::Object(u)) if u.contains_key("redacted_because"));
                if redacted {
                    return Err(missing());
                }
                (Some(room.as_str()), Some(event.as_str()), None)
            }
            ReportTarget::Room(room) => {
                if !self.room_exists(room).await? {
                    return Err(Error::not_found("Room not found"));
                }
                (Some(room.as_str()), None, None)
            }
            ReportTarget::User(user) => {
                if user.server_name() != self.server_name() || !self.user_exists(user).await? {
                    return Err(Error::not_found("User not found"));
                }
                (None, None, Some(user.as_str()))
            }
        };
        self.db
            .execute(
                "INSERT INTO reports (report_id, reporter, room_id, event_id, user_id, reason, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    crate::accounts::tokens::random_string(24).into(),
                    reporter.as_str().into(),
                    room.into(),
                    event.into(),
                    user.into(),
                    reason.into(),
                    Value::Int(self.now()),
                ],
            )
            .await?;
        Ok(())
    }
}
