//! Cross-signing keys and signatures (spec: "Cross-signing").

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Map, Value as Json};

use super::keys::verify_signed;
use crate::{
    homeserver::{Audience, Stream},
    ports::Statement,
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most signed objects one `/keys/signatures/upload` may carry.
pub const MAX_SIGNED_OBJECTS: usize = 1000;

/// The single ed25519 key of a cross-signing key object: (key ID, unpadded base64).
fn the_key(key: &Json) -> Result<(String, String)> {
    let keys = key["keys"]
        .as_object()
        .ok_or_else(|| Error::invalid_param("cross-signing key without keys"))?;
    match keys.iter().next() {
        Some((id, v)) if keys.len() == 1 && id.starts_with("ed25519:") => Ok((
            id.clone(),
            v.as_str()
                .ok_or_else(|| Error::invalid_param("key is not a string"))?
                .to_owned(),
        )),
        _ => Err(Error::invalid_param(
            "a cross-signing key holds exactly one ed25519 key",
        )),
    }
}

impl Homeserver {
    pub async fn cross_signing_key(&self, user: &UserId, kind: &str) -> Result<Option<Json>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2",
            vec![user.as_str().into(), kind.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut key: Json = serde_json::from_str(&row.text(0)?)?;
        // Signatures on master keys are addressed by the bare public key.
        if let Ok((_, public)) = the_key(&key) {
            self.merge_signatures(user, &public, &mut key).await?;
        }
        Ok(Some(key))
    }

    /// Whether an upload needs user-interactive auth: only when it would change keys the
    /// server already has (spec: `/keys/device_signing/upload`).
    pub async fn signing_upload_needs_auth(
        &self,
        user: &UserId,
        new: &[(&str, Option<&Json>)],
    ) -> Result<bool> {
        let Some(existing_master) = self.cross_signing_key_raw(user, "master").await? else {
            return Ok(false);
        };
        for (kind, key) in new {
            let Some(key) = key else { continue };
            let existing = if *kind == "master" {
                Some(existing_master.clone())
            } else {
                self.cross_signing_key_raw(user, kind).await?
            };
            if existing.as_ref() != Some(*key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn cross_signing_key_raw(&self, user: &UserId, kind: &str) -> Result<Option<Json>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2",
            vec![user.as_str().into(), kind.into()],
        )
        .await?;
        row.map(|r| serde_json::from_str(&r.text(0)?).map_err(Into::into))
            .transpose()
    }

    /// Stores cross-signing keys; the self- and user-signing keys must be signed by the master key.
    pub async fn upload_signing_keys(
        &self,
        user: &UserId,
        master: Option<&Json>,
        self_signing: Option<&Json>,
        user_signing: Option<&Json>,
    ) -> Result<()> {
        let master_now = match master {
            Some(m) => Some(m.clone()),
            None => self.cross_signing_key_raw(user, "master").await?,
        };
        let mut rows = Vec::new();
        for (kind, key) in [
            ("master", master),
            ("self_signing", self_signing),
            ("user_signing", user_signing),
        ] {
            let Some(key) = key else { continue };
            if key["user_id"].as_str() != Some(user.as_str()) {
                return Err(Error::invalid_param("cross-signing key for another user"));
            }
            if !key["usage"]
                .as_array()
                .is_some_and(|u| u.iter().any(|x| x == kind))
            {
                return Err(Error::invalid_param(format!(
                    "{kind} key lacks usage {kind}"
                )));
            }
            the_key(key)?;
            if kind != "master" {
                let m = master_now
                    .as_ref()
                    .ok_or_else(|| Error::invalid_param("no master key to sign with"))?;
                let (mid, mkey) = the_key(m)?;
                verify_signed(key, user.as_str(), &mid, &mkey)?;
            }
            // Uploading the key already stored changes nothing and tells nobody.
            if self.cross_signing_key_raw(user, kind).await?.as_ref() == Some(key) {
                continue;
            }
            rows.push((kind, serde_json::to_string(key)?));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let u = user.to_string();
        let audience = [user.to_owned()];
        self.commit(&[Stream::DeviceLists], Audience::RoomMatesOf(&audience), |pos| {
            let mut b: Vec<Statement> = rows
                .into_iter()
                .map(|(kind, json)| {
                    Statement::new(
                        "INSERT INTO cross_signing_keys (user_id, key_type, json) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, key_type) DO UPDATE SET json = excluded.json",
                        vec![u.as_str().into(), kind.into(), json.into()],
                    )
                })
                .collect();
            b.extend(super::device_lists::device_list_change(&u, pos));
            b
        })
        .await?;
        Ok(())
    }

    /// `/keys/signatures/upload`: `signed` is user → key ID (device ID or public key) →
    /// the signed object. Returns per-key failures.
    pub async fn upload_signatures(
        &self,
        uploader: &UserId,
        signed: &BTreeMap<String, Map<String, Json>>,
    ) -> Result<Json> {
        if signed.values().map(Map::len).sum::<usize>() > MAX_SIGNED_OBJECTS {
            return Err(Error::invalid_param("too many signed objects"));
        }
        let mut failures = Map::new();
        let mut stored = Vec::new();
        let mut changed_users = Vec::new();
        // The uploader's keys that may sign, looked up once for the whole request.
        let signers = Signers {
            own: self.signers_for_own_keys(uploader).await?,
            others: match self.cross_signing_key_raw(uploader, "user_signing").await? {
                Some(usk) => vec![the_key(&usk)?],
                None => Vec::new(),
            },
        };
        for (user, objects) in signed {
            for (key_id, object) in objects {
                match self
                    .check_signature_upload(uploader, user, key_id, object, &signers)
                    .await
                {
                    Ok(mut sigs) => {
                        stored.append(&mut sigs);
                        changed_users.push(user.clone());
                    }
                    Err(Error::Matrix(kind, message)) => {
                        failures.entry(user.clone()).or_insert_with(|| json!({}))[key_id] =
                            json!({ "errcode": kind.errcode().to_string(), "error": message });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !stored.is_empty() {
            changed_users.sort();
            changed_users.dedup();
            let audience: Vec<ruma::OwnedUserId> = changed_users
                .iter()
                .filter_map(|u| UserId::parse(u.as_str()).ok())
                .collect();
            self.commit(&[Stream::DeviceLists], Audience::RoomMatesOf(&audience), |pos| {
                let mut b: Vec<Statement> = stored
                    .into_iter()
                    .map(|(tu, tk, su, sk, sig)| {
                        Statement::new(
                            "INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key, signature)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (target_user, target_key, signer_user, signer_key) DO UPDATE SET signature = excluded.signature",
                            vec![tu.into(), tk.into(), su.into(), sk.into(), sig.into()],
                        )
                    })
                    .collect();
                for u in changed_users {
                    b.extend(super::device_lists::device_list_change(&u, pos));
                }
                b
            })
            .await?;
        }
        Ok(json!({ "failures": failures }))
    }

    /// Verifies the uploader's new signatures on one object; returns the rows to store.
    async fn check_signature_upload(
        &self,
        uploader: &UserId,
        target_user: &str,
        key_id: &str,
        object: &Json,
        signers: &Signers,
    ) -> Result<Vec<(String, String, String, String, String)>> {
        let target = UserId::parse(target_user).map_err(|_| Error::invalid_param("bad user ID"))?;
        // The stored object must be the one signed (signatures and unsigned aside).
        let stored = if target == uploader {
            match self
                .device_keys_of(&target, &[key_id.to_owned()])
                .await?
                .remove(key_id)
            {
                Some(d) => d,
                None => self
                    .cross_signing_key_raw(&target, "master")
                    .await?
                    .filter(|m| the_key(m).is_ok_and(|(_, public)| public == key_id))
                    .ok_or_else(|| Error::not_found("unknown key"))?,
            }
        } else {
            self.cross_signing_key_raw(&target, "master")
                .await?
                .filter(|m| the_key(m).is_ok_and(|(_, public)| public == key_id))
                .ok_or_else(|| Error::not_found("unknown key"))?
        };
        let strip = |v: &Json| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("signatures");
                o.remove("unsigned");
            }
            v
        };
        if strip(&stored) != strip(object) {
            return Err(Error::invalid_param(
                "signed object does not match the stored key",
            ));
        }
        let candidates = if target == uploader {
            &signers.own
        } else {
            &signers.others
        };
        let sigs = object["signatures"][uploader.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut rows = Vec::new();
        for (signer_key, signature) in sigs {
            let Some((_, pubkey)) = candidates.iter().find(|(id, _)| *id == signer_key) else {
                continue;
            };
            verify_signed(object, uploader.as_str(), &signer_key, pubkey)?;
            let sig = signature
                .as_str()
                .ok_or_else(|| Error::invalid_param("signature is not a string"))?
                .to_owned();
            rows.push((
                target.to_string(),
                key_id.to_owned(),
                uploader.to_string(),
                signer_key,
                sig,
            ));
        }
        if rows.is_empty() {
            return Err(Error::invalid_param(
                "no valid signature from a key allowed to sign this",
            ));
        }
        Ok(rows)
    }
}

/// Which of the uploader's keys may sign what: the self-signing key for own devices, a
/// device key for the own master key (`own`); the user-signing key for others' master
/// keys (`others`). Each is (key ID, public key).
struct Signers {
    own: Vec<(String, String)>,
    others: Vec<(String, String)>,
}

impl Homeserver {
    async fn signers_for_own_keys(&self, uploader: &UserId) -> Result<Vec<(String, String)>> {
        let mut candidates = Vec::new();
        if let Some(ssk) = self.cross_signing_key_raw(uploader, "self_signing").await? {
            candidates.push(the_key(&ssk)?);
        }
        for d in self.device_keys_of(uploader, &[]).await?.values() {
            if let Some(keys) = d["keys"].as_object() {
                for (id, k) in keys {
                    if id.starts_with("ed25519:") {
                        candidates.push((id.clone(), k.as_str().unwrap_or_default().to_owned()));
                    }
                }
            }
        }
        Ok(candidates)
    }
}
