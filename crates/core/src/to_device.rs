//! Send-to-device messages (spec: "Send-to-Device messaging"): queued per device on the
//! global stream, delivered by `/sync` in order, deleted once the client acknowledges them
//! by syncing with a later `since`.

use std::collections::BTreeMap;

use ruma::{DeviceId, UserId};
use serde_json::{json, Value as Json};

use crate::{
    homeserver::{Audience, Stream},
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most messages one `/sync` delivers to a device.
pub const MAX_PER_SYNC: i64 = 100;
/// Most messages (user × device, `*` expanded) one request may carry. Every message is a
/// row written under the commit lock; matrix-sdk sends at most 250 per request.
pub const MAX_RECIPIENTS: usize = 1_000;

impl Homeserver {
    /// `PUT /sendToDevice/{eventType}/{txnId}`; `messages` is user → device (or `*`) → content.
    /// `charge` is told how many messages (`*` expanded) are about to be queued, and may
    /// refuse them; a retry of a sent transaction is not charged again.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        kind: &str,
        txn_id: &str,
        messages: &BTreeMap<String, BTreeMap<String, Json>>,
        charge: &(dyn Fn(usize) -> Result<()> + Send + Sync),
    ) -> Result<()> {
        crate::input::event_type(kind)?;
        crate::input::txn_id(txn_id)?;
        let scope = format!("sendToDevice/{kind}");
        if query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM event_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
            vec![sender.as_str().into(), sender_device.as_str().into(), scope.as_str().into(), txn_id.into()],
        )
        .await?
        .is_some()
        {
            return Ok(());
        }
        let too_many = || {
            Error::Matrix(
                ruma::api::error::ErrorKind::TooLarge,
                format!("At most {MAX_RECIPIENTS} messages per request"),
            )
        };
        // Refused before any work for it is done.
        if messages.values().map(BTreeMap::len).sum::<usize>() > MAX_RECIPIENTS {
            return Err(too_many());
        }
        let mut rows = Vec::new();
        for (user, devices) in messages {
            let user_id = UserId::parse(user.as_str())
                .map_err(|_| Error::invalid_param("Invalid user ID"))?;
            if user_id.server_name() != self.server_name() {
                // Remote delivery needs federation (EDU m.direct_to_device); not yet.
                continue;
            }
            for (device, content) in devices {
                if device != "*" {
                    crate::input::name("Device ID", device, crate::input::MAX_NAME_BYTES)?;
                }
                if !content.is_object() {
                    return Err(Error::bad_json("to-device content must be an object"));
                }
                let targets = if device == "*" {
                    self.list_devices(&user_id)
                        .await?
                        .into_iter()
                        .map(|d| d.device_id)
                        .collect()
                } else {
                    vec![device.clone()]
                };
                for d in targets {
                    rows.push((user_id.to_string(), d, serde_json::to_string(content)?));
                }
            }
        }
        if rows.len() > MAX_RECIPIENTS {
            return Err(too_many());
        }
        charge(rows.len())?;
        let mut queued_for: Vec<(String, String)> = rows
            .iter()
            .map(|(u, d, _)| (u.clone(), d.clone()))
            .collect();
        queued_for.sort();
        queued_for.dedup();
        let (sender, sender_device, kind, txn) = (
            sender.to_string(),
            sender_device.to_string(),
            kind.to_owned(),
            txn_id.to_owned(),
        );
        let mut recipients: Vec<ruma::OwnedUserId> = Vec::new();
        for (user, _, _) in &rows {
            if let Ok(u) = UserId::parse(user.as_str()) {
                if !recipients.contains(&u) {
                    recipients.push(u);
                }
            }
        }
        let txn_row = |sender: &str, device: String, scope: String, txn: String| {
            Statement::new(
                "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id) VALUES ($1, $2, $3, $4, '')",
                vec![sender.into(), device.into(), scope.into(), txn.into()],
            )
        };
        if rows.is_empty() {
            // Nothing to queue (remote or device-less recipients): no stream position, only
            // the transaction, so a retry is recognised. A position without rows is never
            // published (see `commit.rs`).
            return match self
                .db
                .batch(vec![txn_row(&sender, sender_device, scope, txn)])
                .await
            {
                Ok(()) | Err(DbError::UniqueViolation) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        // Run by the writer, in commit order: these devices have something queued.
        let pending: crate::commit::AfterCommit = Box::new(move |hs, landed| {
            if let crate::commit::Landed::Committed(pos) = landed {
                for key in queued_for {
                    hs.to_device_pending.put(key, pos);
                }
            }
        });
        let committed = self.commit_then(&[Stream::ToDevice], Audience::Users(&recipients), 1, |pos| {
            let mut b: Vec<Statement> = rows
                .into_iter()
                .enumerate()
                .map(|(seq, (user, device, content))| {
                    Statement::new(
                        "INSERT INTO to_device (user_id, device_id, stream_pos, seq, sender, type, content)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        vec![
                            user.into(),
                            device.into(),
                            Value::Int(pos),
                            Value::Int(seq as i64),
                            sender.as_str().into(),
                            kind.as_str().into(),
                            content.into(),
                        ],
                    )
                })
                .collect();
            b.push(txn_row(&sender, sender_device, scope, txn));
            b
        }, Some(pending))
        .await;
        match committed {
            Ok(_) => Ok(()),
            // A retry of this transaction committed first: it is the same request.
            Err(Error::Db(DbError::UniqueViolation)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes what the device acknowledged (positions ≤ `acked`).
    pub async fn ack_to_device(&self, user: &UserId, device: &DeviceId, acked: i64) -> Result<()> {
        // Most syncs acknowledge nothing new: a device known to have nothing queued (0 in
        // `to_device_pending`) costs no query; else look on a reader before the writer.
        let key = (user.to_string(), device.to_string());
        if self.to_device_pending.get(&key) == Some(0) {
            return Ok(());
        }
        let pending = query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3 LIMIT 1",
            vec![user.as_str().into(), device.as_str().into(), Value::Int(acked)],
        )
        .await?;
        if pending.is_none() {
            self.mark_to_device_clear(key, acked);
            return Ok(());
        }
        // The deleted rows may hold the highest position handed out: keep it in
        // `stream_floor`, so a restart never hands it out again.
        self.db
            .batch(vec![
                Statement::new(
                    "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
                    vec![
                        user.as_str().into(),
                        device.as_str().into(),
                        Value::Int(acked),
                    ],
                ),
                Statement::new(
                    "UPDATE stream_floor SET pos = $1 WHERE id = 1 AND pos < $1",
                    vec![Value::Int(acked)],
                ),
            ])
            .await?;
        self.mark_to_device_clear(key, acked);
        Ok(())
    }

    /// Nothing at or below `acked` is queued for the device any more: if nothing was
    /// queued above it either (as far as this process knows), the device has nothing.
    fn mark_to_device_clear(&self, key: (String, String), acked: i64) {
        match self.to_device_pending.get(&key) {
            Some(queued) if queued > acked => {}
            _ if acked >= self.stream_head(Stream::ToDevice) => self.to_device_pending.put(key, 0),
            _ => {}
        }
    }

    /// The position up to which a sync may go so that it delivers at most `MAX_PER_SYNC`
    /// to-device messages; a whole position is never split.
    pub async fn to_device_cap(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: i64,
        upto: i64,
    ) -> Result<i64> {
        if !self.stream_moved(Stream::ToDevice, Some(since)) {
            return Ok(upto);
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT stream_pos FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
             ORDER BY stream_pos, seq LIMIT 1 OFFSET $5",
            vec![user.as_str().into(), device.as_str().into(), Value::Int(since), Value::Int(upto), Value::Int(MAX_PER_SYNC)],
        )
        .await?;
        match row {
            // Stop before the first message that does not fit (but always make progress).
            Some(r) => Ok((r.int(0)? - 1).max(since + 1).min(upto)),
            None => Ok(upto),
        }
    }

    /// Messages for the device in `(since, upto]`, oldest first.
    pub async fn to_device_since(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Json>> {
        if !self.stream_moved(Stream::ToDevice, Some(since)) {
            return Ok(vec![]);
        }
        let rows = self
            .db
            .query(
                "SELECT sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2
                 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos, seq",
                vec![
                    user.as_str().into(),
                    device.as_str().into(),
                    Value::Int(since),
                    Value::Int(upto),
                ],
            )
            .await?;
        // Spec ("Ignoring Users"): nothing from ignored users.
        let ignored = self.ignored_users(user);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let sender = r.text(0)?;
            if !ignored.is_empty() && ignored.iter().any(|i| i.as_str() == sender) {
                continue;
            }
            out.push(json!({ "sender": sender, "type": r.text(1)?, "content": serde_json::from_str::<Json>(&r.text(2)?)? }));
        }
        Ok(out)
    }
}
