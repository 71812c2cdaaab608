//! The rows one planned event writes (events, activity, relations, transaction ID,
//! extremities, current state, memberships), at its stream position.

use super::Step;
use crate::ports::{Statement, Value};

/// The rows of one planned event at stream position `pos`.
pub(super) fn step_statements(room: &str, step: &Step, pos: i64) -> Vec<Statement> {
    let pdu = &step.pdu;
    let event_id = pdu.event_id.as_str();
    let (txn_device, txn_id) = match &step.txn {
        Some([_, device, _, txn]) => (Some(device.as_str()), Some(txn.as_str())),
        None => (None, None),
    };
    let kind = pdu.kind.to_string();
    let bump = crate::rooms::BUMP_TYPES.contains(&kind.as_str());
    let mut b = vec![
        Statement::new(
            "INSERT INTO events (event_id, room_id, stream_pos, depth, sender, type, state_key, json, state_before, state_after,
                 txn_id, txn_device, origin_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            vec![
                event_id.into(),
                room.into(),
                Value::Int(pos),
                Value::Int(pdu.depth.min(i64::MAX as u64) as i64),
                pdu.sender.as_str().into(),
                kind.into(),
                pdu.state_key.clone().into(),
                step.json.as_str().into(),
                Value::Int(step.state_before),
                Value::Int(step.state_after),
                txn_id.into(),
                txn_device.into(),
                Value::Int(i64::from(pdu.origin_server_ts.get())),
            ],
        ),
        Statement::new(
            "INSERT INTO room_activity (room_id, last_pos, bump_pos) VALUES ($1, $2, $3)
             ON CONFLICT (room_id) DO UPDATE SET last_pos = excluded.last_pos,
               bump_pos = CASE WHEN excluded.bump_pos > 0 THEN excluded.bump_pos ELSE room_activity.bump_pos END",
            vec![room.into(), Value::Int(pos), Value::Int(if bump { pos } else { 0 })],
        ),
    ];
    b.extend(crate::rooms::relations::relation_statements(room, pdu, pos));
    if let Some(push) = &step.push {
        b.extend(push.statements(room, pdu, pos));
    }
    if let Some(search) = &step.search {
        b.push(search.statement(room, pdu, pos));
    }
    if let Some([user, device, scope, txn]) = &step.txn {
        b.push(Statement::new(
            "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)",
            vec![user.into(), device.into(), scope.into(), txn.into(), event_id.into()],
        ));
    }
    match &step.replaces {
        // A statement less per event: on PostgreSQL each is a round trip in the commit.
        // Guarded: were the row not there, the batch fails rather than lose the extremity.
        Some(prev) => b.push(
            Statement::new(
                "UPDATE forward_extremities SET event_id = $3 WHERE room_id = $1 AND event_id = $2",
                vec![room.into(), prev.as_str().into(), event_id.into()],
            )
            .expecting_change(),
        ),
        None => {
            for prev in &pdu.prev_events {
                b.push(Statement::new(
                    "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2",
                    vec![room.into(), prev.as_str().into()],
                ));
            }
            b.push(Statement::new(
                "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)",
                vec![room.into(), event_id.into()],
            ));
        }
    }
    for (kind, key, id, membership) in &step.state_changes {
        b.push(Statement::new(
            // The event is stored by now (this batch, or before it).
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
             VALUES ($1, $2, $3, $4, $5, (SELECT stream_pos FROM events WHERE event_id = $4))
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,
               membership = excluded.membership, stream_pos = excluded.stream_pos",
            vec![
                room.into(),
                kind.to_string().into(),
                key.into(),
                id.as_str().into(),
                membership.clone().into(),
            ],
        ));
    }
    for (kind, key) in &step.state_removals {
        b.push(Statement::new(
            "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
            vec![room.into(), kind.to_string().into(), key.into()],
        ));
    }
    if step.joined_delta != 0 {
        b.push(Statement::new(
            "UPDATE rooms SET joined_members = joined_members + $2 WHERE room_id = $1",
            vec![room.into(), Value::Int(step.joined_delta)],
        ));
    }
    if let Some((_, statements)) = &step.redaction {
        b.extend(statements.iter().cloned());
    }
    // `stream_pos` is when the membership last changed: a new name or avatar (join → join)
    // is no new join, for syncs and device lists alike.
    for (user, id, membership) in &step.member_changes {
        b.push(Statement::new(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten)
             VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
               event_id = excluded.event_id,
               stream_pos = CASE WHEN memberships.membership = excluded.membership
                 THEN memberships.stream_pos ELSE excluded.stream_pos END,
               forgotten = CASE WHEN memberships.membership = excluded.membership
                 THEN memberships.forgotten ELSE 0 END",
            vec![room.into(), user.into(), membership.into(), id.as_str().into(), Value::Int(pos)],
        ));
    }
    b
}
