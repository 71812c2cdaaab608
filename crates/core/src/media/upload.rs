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
        check_meta(&meta)?;
        let media_id = new_media_id();
        let (sha256, size) = self.store_body(uploader, body).await?;
        let insert = Statement::new(
            "INSERT INTO media (media_id, uploader, content_type, filename, size, sha256, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                media_id.as_str().into(),
                uploader.as_str().into(),
                meta.content_type.into(),
                meta.filename.into(),
                Value::Int(size as i64),
                sha256.as_str().into(),
                Value::Int(self.now()),
            ],
        );
        self.record_upload(&sha256, insert).await?;
        Ok(self.mxc(&media_id))
    }

    /// `POST /create`: reserves a media ID for a later upload by `uploader`; answers it
    /// and when it lapses. A user may hold only so many reservations at once (429).
    pub async fn create_media(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
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
        check_meta(&meta)?;
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
        let (sha256, size) = self.store_body(uploader, body).await?;
        // Guarded: of two uploads racing for one ID, the second is refused.
        let fill = Statement::new(
            "UPDATE media SET content_type = $2, filename = $3, size = $4, sha256 = $5, created_ts = $6, expires_ts = NULL
             WHERE media_id = $1 AND sha256 IS NULL",
            vec![
                media_id.into(),
                meta.content_type.into(),
                meta.filename.into(),
                Value::Int(size as i64),
                sha256.as_str().into(),
                Value::Int(self.now()),
            ],
        )
        .expecting_change();
        match self.record_upload(&sha256, fill).await {
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

    /// Streams `body` into a new blob, hashing and counting it; keeps it as its content.
    /// Over the size limit or the quota, it stops reading and keeps nothing.
    async fn store_body(&self, uploader: &UserId, mut body: ByteStream) -> Result<(String, u64)> {
        let limits = &self.config.media;
        let mut allowed = limits.max_upload_bytes;
        let mut over_quota = false;
        if let Some(quota) = limits.quota_bytes {
            let used = self
                .db
                .query(
                    "SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1",
                    vec![uploader.as_str().into()],
                )
                .await?;
            let used = used.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
            let left = quota.saturating_sub(used.max(0) as u64);
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
                // Dropped unkept, the writer leaves nothing behind.
                return Err(if over_quota {
                    Error::forbidden("This upload would exceed your media quota")
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
        let lock = self.media_lock(&sha256);
        let _held = lock.lock().await;
        writer
            .keep(&content_key(&sha256))
            .await
            .map_err(blob_error)?;
        Ok((sha256, size))
    }

    /// Writes the row of a content just kept; if that fails, the blob goes unless another
    /// row holds it (under the content's lock, so no upload of the same bytes is between).
    async fn record_upload(&self, sha256: &str, statement: Statement) -> Result<()> {
        let lock = self.media_lock(sha256);
        let _held = lock.lock().await;
        let Err(e) = self.db.batch(vec![statement]).await else {
            return Ok(());
        };
        let held = query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM media WHERE sha256 = $1",
            vec![sha256.into()],
        )
        .await;
        if matches!(held, Ok(None)) {
            if let Ok(blobs) = self.blobs() {
                let _ = blobs.delete(&content_key(sha256)).await;
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

fn check_meta(meta: &UploadMeta<'_>) -> Result<()> {
    if let Some(t) = meta.content_type {
        crate::input::text("Content-Type", t, 255)?;
    }
    if let Some(f) = meta.filename {
        crate::input::text("filename", f, 255)?;
    }
    Ok(())
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
