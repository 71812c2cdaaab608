//! Redactions (spec: client-server API "Redactions"; the algorithm per room version).

use ruma::{
    canonical_json::{redact, RedactedBecause},
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    EventId, OwnedEventId, RoomId, UserId,
};
use serde_json::json;

use super::{send::NewEvent, state::StateIds, write::Txn, Pdu};
use crate::{ports::Statement, Error, Homeserver, Result};

impl Homeserver {
    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`: one's own events, or others' with the
    /// `redact` power level.
    pub async fn redact_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &EventId,
        reason: Option<String>,
        txn: Txn<'_>,
    ) -> Result<OwnedEventId> {
        let pdu = self.event_for_user(room_id, sender, target).await?;
        let version = self.room_version(room_id).await?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        if pdu.sender != sender {
            let state = self.current_state_ids(room_id).await?;
            if !self
                .power_levels(&state, &rules)
                .await?
                .user_can_redact_event_of_other(sender)
            {
                return Err(Error::forbidden("You may not redact other users' events"));
            }
        }
        let mut content = json!({});
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        if rules.redaction.content_field_redacts {
            content["redacts"] = target.as_str().into();
        }
        let event = NewEvent {
            kind: TimelineEventType::RoomRedaction,
            content,
            state_key: None,
            redacts: Some(target.to_owned()),
            origin_server_ts: None,
        };
        self.send_event(room_id, sender, event, Some(txn)).await
    }

    /// For an accepted redaction, the statement that replaces its target with the redacted
    /// form, when the redaction applies: same sender, or a sender with the `redact` level in
    /// the state before it. The original content is not kept.
    pub(crate) async fn apply_redaction(
        &self,
        pdu: &Pdu,
        before: &StateIds,
        rules: &RoomVersionRules,
    ) -> Result<Option<Statement>> {
        if pdu.kind != TimelineEventType::RoomRedaction {
            return Ok(None);
        }
        let Some(target_id) = &pdu.redacts else {
            return Ok(None);
        };
        let Some(target) = self.get_pdu(target_id).await? else {
            return Ok(None);
        };
        if target.room_id != pdu.room_id {
            return Ok(None);
        }
        let allowed = target.sender == pdu.sender
            || self
                .power_levels(before, rules)
                .await?
                .user_can_redact_event_of_other(&pdu.sender);
        if !allowed {
            return Ok(None);
        }
        // Clients read `unsigned.redacted_because` as a client-format event.
        let room_id = target
            .room_id
            .clone()
            .ok_or_else(|| Error::internal("event without room"))?;
        let because = match ruma::canonical_json::to_canonical_value(pdu.to_client_json(&room_id)) {
            Ok(ruma::CanonicalJsonValue::Object(o)) => RedactedBecause::from_json(o),
            _ => return Err(Error::internal("redaction is not an object")),
        };
        let redacted = redact(target.json.clone(), &rules.redaction, Some(because))
            .map_err(Error::internal)?;
        Ok(Some(Statement::new(
            "UPDATE events SET json = $2 WHERE event_id = $1",
            vec![
                target_id.as_str().into(),
                serde_json::to_string(&redacted)?.into(),
            ],
        )))
    }
}
