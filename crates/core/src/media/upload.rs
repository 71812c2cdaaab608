//! Uploads (spec: `POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create`,
//! `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`). The body streams into a blob
//! while it is hashed and counted, so memory stays flat whatever the size; the size limit
//! and the quota are enforced as the bytes arrive. The row is written once the blob is
//! kept: a refused, cut or failed upload leaves neither.

use futures_util::StreamExt;
use ruma::{api::error::ErrorKind, OwnedMxcUri, UserId};
use sha2::{Digest, Sha256};

use super::{check_media_id, content_key, new_media_id, too_large, MediaInfo, MEDIA_COLUMNS};
use crate::{
    ports::{BlobError, Blobs, ByteStream, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// What an upload says of itself.
pub struct UploadMeta<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
}

impl Homeserver {
    pub(crate) fn blobs(&self) -> Result<&dyn Blobs> {
        self.blobs
            .as_deref()
            .ok_or_else(|| Error::internal("no media store"))
    }

    /// `POST /upload`: stores the body as new media of `uploader`.
    pub async fn upload_media(
        &self,
        uploader: &UserId,
        meta: UploadMeta<'_>,
        body: ByteStream,
    ) -> Result<OwnedMxcUri> {
        self.ensure_not_suspended(uploader)?;
        let meta = check_meta(meta)?;
        let media_id = new_media_id();
        let stored = self.store_body(uploader, body).await?;
        let (sha256, size) = (stored.sha256.clone(), stored.size);
        let insert = Statement::new(
            "INSERT INTO media (media_id, uploader, content_type, filename, size, sha256, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                media_id.as_str().into(),
                uploader.as_str().into(),
                meta.content_type.as_str().into(),
                meta.filename.into(),
                Value::Int(size as i64),
                sha256.as_str().into(),
                Value::Int(self.now()),
            ],
        );
        self.record_upload(uploader, stored, insert).await?;
        Ok(self.mxc(&media_id))
    }

    /// `POST /create`: reserves a media ID for a later upload by `uploader`; answers it
    /// and when it lapses. A user may hold only so many reservations at once (429).
    pub async fn create_media(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
        self.ensure_not_suspended(uploader)?;
        // Counted and reserved under the user's lock: concurrent requests cannot pass the
        // limit together.
        let lock = self.media_lock(&format!("user:{uploader}"));
        let _held = lock.lock().await;
        let now = self.now();
        let pending = self
            .db
            .query(
                "SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2",
                vec![uploader.as_str().into(), Value::Int(now)],
            )
            .await?;
        let pending = pending.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
        if pending as usize >= self.config.media.max_pending_uploads {
            let mut data = ruma::api::error::LimitExceededErrorData::new();
            data.retry_after = Some(ruma::api::error::RetryAfter::Delay(
                std::time::Duration::from_secs(60),
            ));
            return Err(Error::Matrix(
                ErrorKind::LimitExceeded(data),
                "Too many media IDs reserved and not uploaded".into(),
            ));
        }
        let media_id = new_media_id();
        let expires = now.saturating_add(self.config.media.pending_expiry_ms as i64);
        self.db
            .execute(
                "INSERT INTO media (media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4)",
                vec![
                    media_id.as_str().into(),
                    uploader.as_str().into(),
                    Value::Int(now),
                    Value::Int(expires),
                ],
            )
            .await?;
        Ok((self.mxc(&media_id), expires))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the upload to an ID reserved by `/create`.
    /// Spec: 404 for an ID not reserved here (or lapsed), 403 for another user's, 409 once
    /// it has content.
    pub async fn upload_reserved_media(
        &self,
        uploader: &UserId,
        server: &str,
        media_id: &str,
        meta: UploadMeta<'_>,
        body: ByteStream,
    ) -> Result<()> {
        self.ensure_not_suspended(uploader)?;
        let meta = check_meta(meta)?;
        check_media_id(media_id)?;
        let reserved = self.reserved_media(server, media_id).await?;
        if reserved.uploader != uploader {
            return Err(Error::forbidden(
                "This media ID was reserved by another user",
            ));
        }
        if reserved.sha256.is_some() {
            return Err(cannot_overwrite());
        }
        let stored = self.store_body(uploader, body).await?;
        let (sha256, size) = (stored.sha256.clone(), stored.size);
        // Guarded: of two uploads racing for one ID, the second is refused.
        let fill = Statement::new(
            "UPDATE media SET content_type = $2, filename = $3, size = $4, sha256 = $5, created_ts = $6, expires_ts = NULL
             WHERE media_id = $1 AND sha256 IS NULL",
            vec![
                media_id.into(),
                meta.content_type.as_str().into(),
                meta.filename.into(),
                Value::Int(size as i64),
                sha256.as_str().into(),
                Value::Int(self.now()),
            ],
        )
        .expecting_change();
        match self.record_upload(uploader, stored, fill).await {
            Err(Error::Db(crate::ports::DbError::Conflict)) => Err(cannot_overwrite()),
            other => other,
        }?;
        self.media_landed.notify(usize::MAX);
        Ok(())
    }

    /// A media ID reserved here and not lapsed.
    async fn reserved_media(&self, server: &str, media_id: &str) -> Result<MediaInfo> {
        let not_found = || Error::not_found("No media ID reserved with this name");
        if server != self.server_name().as_str() {
            return Err(not_found());
        }
        let row = query_opt(
            self.db.as_ref(),
            &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1"),
            vec![media_id.into()],
        )
        .await?
        .ok_or_else(not_found)?;
        let info = MediaInfo::from_row(&row)?;
        let lapsed = info.sha256.is_none() && info.expires_ts.is_some_and(|t| t <= self.now());
        if lapsed {
            return Err(not_found());
        }
        Ok(info)
    }

    /// Streams `body` into a new blob, hashing and counting it. Over the size limit or the
    /// quota, it stops reading and keeps nothing. A user streams a few uploads at a time.
    async fn store_body(&self, uploader: &UserId, mut body: ByteStream) -> Result<Stored> {
        let slot = UploadSlot::take(self, uploader)?;
        let limits = &self.config.media;
        let mut allowed = limits.max_upload_bytes;
        let mut over_quota = false;
        if let Some(quota) = limits.quota_bytes {
            let left = quota.saturating_sub(self.uploaded_bytes(uploader).await?);
            if left < allowed {
                allowed = left;
                over_quota = true;
            }
        }
        let blobs = self.blobs()?;
        let mut writer = blobs.create().await.map_err(blob_error)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::WithStatus {
                status: 400,
                kind: ErrorKind::Unknown,
                message: format!("The upload was cut short: {e}"),
            })?;
            size = size.saturating_add(chunk.len() as u64);
            if size > allowed {
                // Dropped unkept, the writer leaves nothing behind. The rest of a small
                // body is read (and dropped) so the client gets the answer, not a reset.
                drop(writer);
                let mut drained = 0u64;
                while drained < DRAIN_BYTES {
                    match body.next().await {
                        Some(Ok(c)) => drained += c.len() as u64,
                        _ => break,
                    }
                }
                return Err(if over_quota {
                    over_quota_error()
                } else {
                    too_large(format!(
                        "Cannot upload files larger than {} bytes",
                        limits.max_upload_bytes
                    ))
                });
            }
            hasher.update(&chunk);
            writer.write(chunk).await.map_err(blob_error)?;
        }
        let sha256: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Stored {
            writer,
            sha256,
            size,
            _slot: slot,
        })
    }

    async fn uploaded_bytes(&self, uploader: &UserId) -> Result<u64> {
        let used = self
            .db
            .query(
                "SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1",
                vec![uploader.as_str().into()],
            )
            .await?;
        Ok(used
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0)
            .max(0) as u64)
    }

    /// Keeps a streamed upload as its content and writes its row, in one hold of the
    /// content's lock: if the row fails, the blob goes unless another row holds it, and
    /// no upload of the same bytes can be between. The quota is checked again here,
    /// under the user's lock, so concurrent uploads cannot pass it together.
    async fn record_upload(
        &self,
        uploader: &UserId,
        stored: Stored,
        statement: Statement,
    ) -> Result<()> {
        let user_lock = self.media_lock(&format!("user:{uploader}"));
        let _user = user_lock.lock().await;
        if let Some(quota) = self.config.media.quota_bytes {
            if self
                .uploaded_bytes(uploader)
                .await?
                .saturating_add(stored.size)
                > quota
            {
                return Err(over_quota_error());
            }
        }
        let sha256 = stored.sha256.clone();
        let lock = self.media_lock(&sha256);
        let _held = lock.lock().await;
        stored
            .writer
            .keep(&content_key(&sha256))
            .await
            .map_err(blob_error)?;
        let Err(e) = self.db.batch(vec![statement]).await else {
            return Ok(());
        };
        let held = query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM media WHERE sha256 = $1",
            vec![sha256.as_str().into()],
        )
        .await;
        if matches!(held, Ok(None)) {
            if let Ok(blobs) = self.blobs() {
                let _ = blobs.delete(&content_key(&sha256)).await;
            }
        }
        Err(e.into())
    }

    /// The lock of one content (or thumbnail), so it is stored, recorded or generated once
    /// at a time.
    pub(crate) fn media_lock(&self, key: &str) -> std::sync::Arc<async_lock::Mutex<()>> {
        let mut locks = self.media_locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() >= 1024 {
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_owned()).or_default().clone()
    }

    pub(crate) fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name()))
    }
}

/// Bytes of a refused upload still read, so that the client sees the refusal.
const DRAIN_BYTES: u64 = 1024 * 1024;

/// Uploads one user may stream at once.
const UPLOADS_PER_USER: usize = 4;

/// An upload streamed into a blob, not yet kept.
struct Stored {
    writer: Box<dyn crate::ports::BlobWriter>,
    sha256: String,
    size: u64,
    _slot: UploadSlot,
}

/// One of a user's [`UPLOADS_PER_USER`] streaming slots, given back when dropped.
struct UploadSlot {
    map: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl UploadSlot {
    fn take(hs: &Homeserver, user: &UserId) -> Result<Self> {
        let mut map = hs.uploading.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(user.to_string()).or_default();
        if *n >= UPLOADS_PER_USER {
            let mut data = ruma::api::error::LimitExceededErrorData::new();
            data.retry_after = Some(ruma::api::error::RetryAfter::Delay(
                std::time::Duration::from_secs(1),
            ));
            return Err(Error::Matrix(
                ErrorKind::LimitExceeded(data),
                "Too many uploads at once".into(),
            ));
        }
        *n += 1;
        drop(map);
        Ok(Self {
            map: hs.uploading.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

/// What an upload says of itself, checked: the type parsed as one MIME type (anything
/// else is stored as `application/octet-stream`, so no list of types can smuggle one past
/// the inline rule).
pub(crate) struct CheckedMeta<'a> {
    pub(crate) content_type: String,
    pub(crate) filename: Option<&'a str>,
}

fn check_meta(meta: UploadMeta<'_>) -> Result<CheckedMeta<'_>> {
    if let Some(f) = meta.filename {
        crate::input::text("filename", f, 255)?;
    }
    let content_type = meta
        .content_type
        .filter(|t| t.len() <= 255 && !t.contains(','))
        .and_then(|t| t.parse::<mime::Mime>().ok())
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(CheckedMeta {
        content_type,
        filename: meta.filename,
    })
}

fn over_quota_error() -> Error {
    Error::forbidden("This upload would exceed your media quota")
}

fn cannot_overwrite() -> Error {
    Error::WithStatus {
        status: 409,
        kind: ErrorKind::CannotOverwriteMedia,
        message: "This media ID already has content".into(),
    }
}

pub(crate) fn blob_error(e: BlobError) -> Error {
    match e {
        BlobError::NotFound => Error::not_found("Media not found"),
        BlobError::Other(e) => Error::internal(format!("media store: {e}")),
    }
}
