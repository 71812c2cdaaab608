//! Redactions (spec: client-server API "Redactions"; the algorithm per room version).

use ruma::{
    canonical_json::{redact, RedactedBecause},
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, UserId,
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
            self.ensure_not_suspended(sender)?;
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
        let id = self.send_event(room_id, sender, event, Some(txn)).await?;
        // A redacted `m.room.guest_access` has no `can_join` left (spec: "Guest Access").
        if pdu.kind == TimelineEventType::RoomGuestAccess && pdu.state_key.as_deref() == Some("") {
            if let Err(e) = self.remove_guests(room_id).await {
                tracing::warn!(%room_id, "removing guests failed: {e}");
            }
        }
        Ok(id)
    }

    /// For an accepted redaction, the statement that replaces its target with the redacted
    /// form, when the redaction applies: same sender, or a sender with the `redact` level in
    /// the state before it. The original content is not kept.
    pub(crate) async fn apply_redaction(
        &self,
        pdu: &Pdu,
        before: &StateIds,
        rules: &RoomVersionRules,
    ) -> Result<Option<(Vec<OwnedEventId>, Vec<Statement>)>> {
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
        let mut rewritten = vec![target_id.clone()];
        let mut statements = vec![
            Statement::new(
                "UPDATE events SET json = $2 WHERE event_id = $1",
                vec![
                    target_id.as_str().into(),
                    serde_json::to_string(&redacted)?.into(),
                ],
            ),
            super::relations::unrelate_statement(target_id),
        ];
        if let Some(place) = self.event_place(target_id).await? {
            statements.push(crate::search::unindex_statement(
                self.db.engine(),
                place.pos,
            ));
        }
        // The state events that replaced a redacted one carry its content in
        // `unsigned.prev_content`: that goes too (spec: "Redactions").
        if let Some(key) = &target.state_key {
            for (id, json) in self.replacements_of(&room_id, &target, key).await? {
                rewritten.push(id.clone());
                statements.push(Statement::new(
                    "UPDATE events SET json = $2 WHERE event_id = $1",
                    vec![id.as_str().into(), json.into()],
                ));
            }
        }
        Ok(Some((rewritten, statements)))
    }

    /// The state events that name `target` in `unsigned.replaces_state`, each with its
    /// JSON rewritten without `prev_content`. The next state events of the same key are
    /// looked at, a bounded number (a fork can give a key several successors).
    async fn replacements_of(
        &self,
        room_id: &RoomId,
        target: &Pdu,
        key: &str,
    ) -> Result<Vec<(OwnedEventId, String)>> {
        const LOOK_AT: i64 = 16;
        let Some(place) = self.event_place(&target.event_id).await? else {
            return Ok(Vec::new());
        };
        let rows = self
            .db
            .query(
                "SELECT event_id, json FROM events WHERE room_id = $1 AND type = $2 AND state_key = $3
                 AND stream_pos > $4 ORDER BY stream_pos LIMIT $5",
                vec![
                    room_id.as_str().into(),
                    target.kind.to_string().into(),
                    key.into(),
                    crate::ports::Value::Int(place.pos),
                    crate::ports::Value::Int(LOOK_AT),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let mut json: CanonicalJsonObject = serde_json::from_str(&r.text(1)?)?;
            let Some(CanonicalJsonValue::Object(unsigned)) = json.get_mut("unsigned") else {
                continue;
            };
            let replaces = matches!(unsigned.get("replaces_state"),
                Some(CanonicalJsonValue::String(s)) if *s == target.event_id.as_str());
            if replaces && unsigned.remove("prev_content").is_some() {
                let id = OwnedEventId::try_from(r.text(0)?).map_err(Error::internal)?;
                out.push((id, serde_json::to_string(&json)?));
            }
        }
        Ok(out)
    }
}
