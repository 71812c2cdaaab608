//! `/keys/claim`: each one-time key is handed out exactly once, then the fallback key
//! (spec: "Key management API").

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Map, Value as Json};

use crate::{Error, Homeserver, Result};

/// Most devices one claim may ask for.
pub const MAX_CLAIMS: usize = 1000;
/// Claim attempts per device before giving up on one-time keys under contention.
const MAX_ATTEMPTS: usize = 64;
/// Candidates read per attempt; concurrent claimers spread over them.
const CANDIDATES: i64 = 16;

impl Homeserver {
    /// `requests`: user → device → algorithm. Returns user → device → {key_id: key}.
    pub async fn claim_keys(
        &self,
        requests: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Json> {
        if requests.values().map(BTreeMap::len).sum::<usize>() > MAX_CLAIMS {
            return Err(Error::invalid_param("too many keys claimed"));
        }
        let mut out = Map::new();
        let mut failures = Map::new();
        for (user, devices) in requests {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.server_name() {
                failures.insert(
                    user_id.server_name().to_string(),
                    json!({ "errcode": "M_UNAVAILABLE" }),
                );
                continue;
            }
            let mut per_device = Map::new();
            for (device, algorithm) in devices {
                if let Some((id, key)) = self.claim_one(&user_id, device, algorithm).await? {
                    per_device.insert(device.clone(), json!({ id: key }));
                }
            }
            if !per_device.is_empty() {
                out.insert(user.clone(), Json::Object(per_device));
            }
        }
        Ok(json!({ "one_time_keys": out, "failures": failures }))
    }

    async fn claim_one(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<(String, Json)>> {
        let salt = rand::random::<u64>() as usize;
        for attempt in 0..MAX_ATTEMPTS {
            let rows = self
                .db
                .query(
                    "SELECT key_id, json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                     ORDER BY key_id LIMIT $4",
                    vec![user.as_str().into(), device.into(), algorithm.into(), CANDIDATES.into()],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            let row = &rows[(salt + attempt) % rows.len()];
            let key_id = row.text(0)?;
            // Whoever deletes the row owns the key: a one-row compare-and-swap on both engines.
            let taken = self
                .db
                .execute(
                    "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                    vec![user.as_str().into(), device.into(), algorithm.into(), key_id.as_str().into()],
                )
                .await?;
            if taken == 1 {
                self.forget_key_counts(user, device.into());
                return Ok(Some((key_id, serde_json::from_str(&row.text(1)?)?)));
            }
        }
        // No one-time key left: the fallback key, which may be handed out repeatedly.
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT key_id, json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            vec![user.as_str().into(), device.into(), algorithm.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let marked = self
            .db
            .execute(
                "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                vec![user.as_str().into(), device.into(), algorithm.into()],
            )
            .await;
        self.forget_key_counts(user, device.into());
        marked?;
        Ok(Some((row.text(0)?, serde_json::from_str(&row.text(1)?)?)))
    }
}
