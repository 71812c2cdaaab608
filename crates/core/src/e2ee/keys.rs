//! `/keys/upload` and `/keys/query` (spec: "Key management API").

use std::{collections::BTreeMap, sync::Arc};

/// A device's one-time-key counts by algorithm and its unused fallback key types.
pub(crate) type KeyCounts = (BTreeMap<String, u64>, Vec<String>);

/// [`KeyCounts`] per device, as `/sync` reports them.
pub(crate) type KeyCountCache =
    crate::cache::BoundedCache<(ruma::OwnedUserId, ruma::OwnedDeviceId), Arc<KeyCounts>>;

use ruma::{
    canonical_json::to_canonical_value,
    serde::Base64,
    signatures::{verify_json, PublicKeyMap},
    CanonicalJsonValue, DeviceId, UserId,
};
use serde_json::{json, Map, Value as Json};

use crate::{
    homeserver::{Audience, Stream},
    ports::Statement,
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most one-time keys one upload may carry.
pub const MAX_ONE_TIME_KEYS_PER_UPLOAD: usize = 1000;
/// Most one-time keys stored for one device (clients keep about 50 on the server).
pub const MAX_ONE_TIME_KEYS_PER_DEVICE: u64 = 10_000;
/// Most fallback keys one upload may carry (one per algorithm).
pub const MAX_FALLBACK_KEYS_PER_UPLOAD: usize = 10;
/// Most users one `/keys/query` may ask about.
pub const MAX_QUERY_USERS: usize = 1000;

/// Checks that `object` carries a valid signature by `signer`'s ed25519 key `key_id`.
pub fn verify_signed(object: &Json, signer: &str, key_id: &str, key_b64: &str) -> Result<()> {
    let key = Base64::parse(key_b64).map_err(|_| Error::invalid_param("bad key encoding"))?;
    let mut map = PublicKeyMap::new();
    map.insert(
        signer.to_owned(),
        BTreeMap::from([(key_id.to_owned(), key)]),
    );
    let mut obj = match to_canonical_value(object) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        _ => return Err(Error::invalid_param("key is not a JSON object")),
    };
    // Only the named signer's signature is checked here.
    if let Some(CanonicalJsonValue::Object(sigs)) = obj.get_mut("signatures") {
        sigs.retain(|entity, _| entity == signer);
        if let Some(CanonicalJsonValue::Object(keys)) = sigs.get_mut(signer) {
            keys.retain(|id, _| id == key_id);
        }
    }
    verify_json(&map, &obj).map_err(|e| Error::invalid_param(format!("invalid signature: {e}")))
}

impl Homeserver {
    /// Stores keys for the device; returns the one-time key counts.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<&Json>,
        one_time_keys: &Map<String, Json>,
        fallback_keys: &Map<String, Json>,
    ) -> Result<BTreeMap<String, u64>> {
        if one_time_keys.len() > MAX_ONE_TIME_KEYS_PER_UPLOAD {
            return Err(Error::invalid_param("too many one-time keys"));
        }
        if fallback_keys.len() > MAX_FALLBACK_KEYS_PER_UPLOAD {
            return Err(Error::invalid_param("too many fallback keys"));
        }
        for id in one_time_keys.keys().chain(fallback_keys.keys()) {
            crate::input::name("Key ID", id, crate::input::MAX_NAME_BYTES)?;
        }
        if !one_time_keys.is_empty() {
            let stored: u64 = self.one_time_key_counts(user, device).await?.values().sum();
            if stored + one_time_keys.len() as u64 > MAX_ONE_TIME_KEYS_PER_DEVICE {
                return Err(Error::invalid_param(format!(
                    "a device may hold at most {MAX_ONE_TIME_KEYS_PER_DEVICE} one-time keys"
                )));
            }
        }
        if let Some(keys) = device_keys {
            self.store_device_keys(user, device, keys).await?;
        }
        let mut batch = Vec::new();
        for (id, key) in one_time_keys {
            let (algorithm, _) = id
                .split_once(':')
                .ok_or_else(|| Error::invalid_param("one-time key ID must be algorithm:id"))?;
            let text = serde_json::to_string(key)?;
            // Reusing a key ID with other content is refused (spec: /keys/upload).
            if let Some(row) = query_opt(
                self.db.as_ref(),
                "SELECT json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                vec![user.as_str().into(), device.as_str().into(), algorithm.into(), id.as_str().into()],
            )
            .await?
            {
                if serde_json::from_str::<Json>(&row.text(0)?)? != *key {
                    return Err(Error::invalid_param(format!("one-time key {id} already exists with other content")));
                }
                continue;
            }
            batch.push(Statement::new(
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, json) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                vec![user.as_str().into(), device.as_str().into(), algorithm.into(), id.as_str().into(), text.into()],
            ));
        }
        for (id, key) in fallback_keys {
            let (algorithm, _) = id
                .split_once(':')
                .ok_or_else(|| Error::invalid_param("fallback key ID must be algorithm:id"))?;
            // A new fallback key replaces the old one and is unused; the same one keeps its state.
            batch.push(Statement::new(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used) VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, json = excluded.json,
                   used = CASE WHEN fallback_keys.key_id = excluded.key_id THEN fallback_keys.used ELSE 0 END",
                vec![
                    user.as_str().into(),
                    device.as_str().into(),
                    algorithm.into(),
                    id.as_str().into(),
                    serde_json::to_string(key)?.into(),
                ],
            ));
        }
        let stored = self.db.batch(batch).await;
        self.forget_key_counts(user, device);
        stored?;
        self.one_time_key_counts(user, device).await
    }

    async fn store_device_keys(&self, user: &UserId, device: &DeviceId, keys: &Json) -> Result<()> {
        if keys["user_id"].as_str() != Some(user.as_str())
            || keys["device_id"].as_str() != Some(device.as_str())
        {
            return Err(Error::invalid_param(
                "device_keys must name this user and device",
            ));
        }
        let key_id = format!("ed25519:{device}");
        let ed = keys["keys"][&key_id]
            .as_str()
            .ok_or_else(|| Error::invalid_param("device_keys lack the ed25519 key"))?;
        verify_signed(keys, user.as_str(), &key_id, ed)?;
        if let Some(row) = query_opt(
            self.db.as_ref(),
            "SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2",
            vec![user.as_str().into(), device.as_str().into()],
        )
        .await?
        {
            let old: Json = serde_json::from_str(&row.text(0)?)?;
            // Device keys are immutable once set (spec); re-uploading the same is fine.
            if old["keys"] != keys["keys"] || old["algorithms"] != keys["algorithms"] {
                return Err(Error::invalid_param("device keys cannot be changed"));
            }
            return Ok(());
        }
        let mut stored = keys.clone();
        if let Some(o) = stored.as_object_mut() {
            o.remove("unsigned");
        }
        let text = serde_json::to_string(&stored)?;
        let (u, d) = (user.to_string(), device.to_string());
        let audience = [user.to_owned()];
        self.commit(&[Stream::DeviceLists], Audience::RoomMatesOf(&audience), |pos| {
            let mut b = vec![Statement::new(
                "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                vec![u.as_str().into(), d.into(), text.into()],
            )];
            b.extend(super::device_lists::device_list_change(&u, pos));
            b
        })
        .await?;
        Ok(())
    }

    pub async fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let rows = self
            .db
            .query(
                "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
                vec![user.as_str().into(), device.as_str().into()],
            )
            .await?;
        let mut counts = BTreeMap::new();
        for r in rows {
            counts.insert(r.text(0)?, r.int(1)?.max(0) as u64);
        }
        // Clients rely on seeing the count even when it reaches zero.
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// Both of what a sync reports of the device's keys, in one query: its one-time key
    /// counts and its unused fallback key types.
    pub async fn sync_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        // Every sync of every device reports them, and they change only when the device
        // uploads keys or someone claims one: kept, and dropped on those changes.
        let key = (user.to_owned(), device.to_owned());
        if let Some(counts) = self.key_counts.get(&key) {
            return Ok((*counts).clone());
        }
        let epoch = self
            .key_counts_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        let rows = self
            .db
            .query(
                "SELECT 'o', algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
                 UNION ALL
                 SELECT 'f', algorithm, 0 FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0",
                vec![user.as_str().into(), device.as_str().into()],
            )
            .await?;
        let mut counts = BTreeMap::new();
        let mut fallback = Vec::new();
        for r in rows {
            if r.text(0)? == "o" {
                counts.insert(r.text(1)?, r.int(2)?.max(0) as u64);
            } else {
                fallback.push(r.text(1)?);
            }
        }
        // Clients rely on seeing the count even when it reaches zero.
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        fallback.sort();
        // Not kept if the keys changed while they were read.
        if self
            .key_counts_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            == epoch
        {
            self.key_counts
                .put(key, Arc::new((counts.clone(), fallback.clone())));
        }
        Ok((counts, fallback))
    }

    /// A device's keys changed (committed): its counts are read again.
    pub(crate) fn forget_key_counts(&self, user: &UserId, device: &DeviceId) {
        self.key_counts_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.key_counts
            .remove(&(user.to_owned(), device.to_owned()));
    }

    pub async fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<String>> {
        let rows = self
            .db
            .query(
                "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
                vec![user.as_str().into(), device.as_str().into()],
            )
            .await?;
        rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
    }

    /// The stored device keys of a user (all devices, or those named), with uploaded signatures.
    pub async fn device_keys_of(
        &self,
        user: &UserId,
        devices: &[String],
    ) -> Result<Map<String, Json>> {
        let rows = self
            .db
            .query(
                "SELECT device_id, json FROM device_keys WHERE user_id = $1 ORDER BY device_id",
                vec![user.as_str().into()],
            )
            .await?;
        let names: BTreeMap<String, Option<String>> = self
            .list_devices(user)
            .await?
            .into_iter()
            .map(|d| (d.device_id, d.display_name))
            .collect();
        let mut out = Map::new();
        for r in rows {
            let device = r.text(0)?;
            if !devices.is_empty() && !devices.contains(&device) {
                continue;
            }
            // Keys of deleted devices are gone with them; skip any stragglers.
            let Some(name) = names.get(&device) else {
                continue;
            };
            let mut keys: Json = serde_json::from_str(&r.text(1)?)?;
            self.merge_signatures(user, &device, &mut keys).await?;
            if let Some(n) = name {
                keys["unsigned"] = json!({ "device_display_name": n });
            }
            out.insert(device, keys);
        }
        Ok(out)
    }

    /// Adds signatures from `/keys/signatures/upload` to a key object.
    pub(crate) async fn merge_signatures(
        &self,
        user: &UserId,
        target: &str,
        keys: &mut Json,
    ) -> Result<()> {
        let rows = self
            .db
            .query(
                "SELECT signer_user, signer_key, signature FROM key_signatures WHERE target_user = $1 AND target_key = $2",
                vec![user.as_str().into(), target.into()],
            )
            .await?;
        for r in rows {
            if !keys["signatures"].is_object() {
                keys["signatures"] = json!({});
            }
            let signer = r.text(0)?;
            if !keys["signatures"][&signer].is_object() {
                keys["signatures"][&signer] = json!({});
            }
            keys["signatures"][&signer][r.text(1)?] = r.text(2)?.into();
        }
        Ok(())
    }

    /// `/keys/query`: device keys and the cross-signing keys the requester may see.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        users: &BTreeMap<String, Vec<String>>,
    ) -> Result<Json> {
        if users.len() > MAX_QUERY_USERS {
            return Err(Error::invalid_param("too many users"));
        }
        let mut device_keys = Map::new();
        let mut master = Map::new();
        let mut self_signing = Map::new();
        let mut user_signing = Map::new();
        let mut failures = Map::new();
        for (user, devices) in users {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.server_name() {
                // Remote users need federation.
                failures.insert(
                    user_id.server_name().to_string(),
                    json!({ "errcode": "M_UNAVAILABLE" }),
                );
                continue;
            }
            device_keys.insert(
                user.clone(),
                Json::Object(self.device_keys_of(&user_id, devices).await?),
            );
            for (kind, out) in [("master", &mut master), ("self_signing", &mut self_signing)] {
                if let Some(k) = self.cross_signing_key(&user_id, kind).await? {
                    out.insert(user.clone(), k);
                }
            }
            // The user-signing key is only for its owner (spec).
            if user_id == requester {
                if let Some(k) = self.cross_signing_key(&user_id, "user_signing").await? {
                    user_signing.insert(user.clone(), k);
                }
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": failures,
        }))
    }

    /// Removes a device's keys (its one-time and fallback keys too) in `batch`.
    pub(crate) fn delete_device_keys_statements(user: &UserId, device: &str) -> Vec<Statement> {
        [
            "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
        ]
        .into_iter()
        .map(|sql| Statement::new(sql, vec![user.as_str().into(), device.into()]))
        .collect()
    }
}
