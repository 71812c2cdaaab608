//! The content repository (spec: client-server API, "Content repository"): media stored
//! once per content in the [`Blobs`](crate::ports::Blobs) port, described by `media` rows.
//!
//! - `upload.rs`: `/upload`, `/create` and the upload to a reserved ID, streamed.
//! - `download.rs`: which media a request may read, and reading it.
//! - `thumbnail.rs`: thumbnails, generated once per content and size.
//! - `preview.rs`: URL previews, fetched without reaching private networks.

pub mod download;
pub mod preview;
pub mod thumbnail;
pub mod upload;

use ruma::{api::error::ErrorKind, OwnedUserId};

use crate::{ports::Row, Error, Result};

/// The blob of a content.
pub(crate) fn content_key(sha256: &str) -> String {
    format!("content/{sha256}")
}

/// A media ID we hand out: 24 characters of `[A-Za-z0-9]` (spec: media IDs are
/// `[A-Za-z0-9_-]`).
fn new_media_id() -> String {
    crate::accounts::tokens::random_string(24)
}

/// Spec ("Security considerations"): a media ID is `[A-Za-z0-9_-]`, checked before it
/// names anything stored.
pub fn check_media_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_param("Invalid media ID"))
    }
}

/// What a `media` row says.
#[derive(Clone, Debug)]
pub struct MediaInfo {
    pub media_id: String,
    pub uploader: OwnedUserId,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// `None` while a reserved ID waits for its upload.
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub quarantined: bool,
}

pub(crate) const MEDIA_COLUMNS: &str =
    "media_id, uploader, content_type, filename, size, sha256, created_ts, expires_ts, quarantined";

impl MediaInfo {
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            media_id: r.text(0)?,
            uploader: OwnedUserId::try_from(r.text(1)?).map_err(Error::internal)?,
            content_type: r.opt_text(2)?,
            filename: r.opt_text(3)?,
            size: r.opt_int(4)?.map(|s| s.max(0) as u64),
            sha256: r.opt_text(5)?,
            created_ts: r.int(6)?,
            expires_ts: r.opt_int(7)?,
            quarantined: r.int(8)? != 0,
        })
    }
}

/// Spec ("Serving inline content"): the only types served `inline`; anything else is an
/// `attachment`, so a browser never renders uploaded HTML or SVG as a page.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Whether a content type may be served `inline` (its essence, parameters aside).
pub fn serves_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

fn too_large(msg: impl Into<String>) -> Error {
    Error::Matrix(ErrorKind::TooLarge, msg.into())
}

impl crate::Homeserver {
    /// Quarantines (or releases) local media: quarantined media answers 404 and is never
    /// thumbnailed. For the admin API. Returns whether the media exists.
    pub async fn set_media_quarantined(&self, media_id: &str, quarantined: bool) -> Result<bool> {
        check_media_id(media_id)?;
        let changed = self
            .db
            .execute(
                "UPDATE media SET quarantined = $2 WHERE media_id = $1",
                vec![
                    media_id.into(),
                    crate::ports::Value::Int(quarantined.into()),
                ],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Deletes local media: its row, then its file and thumbnails unless another media ID
    /// holds the same content. For the admin API. Returns whether it existed.
    pub async fn delete_media(&self, media_id: &str) -> Result<bool> {
        check_media_id(media_id)?;
        let Some(info) = self.media_info(media_id).await? else {
            return Ok(false);
        };
        let Some(sha) = info.sha256 else {
            self.db
                .execute(
                    "DELETE FROM media WHERE media_id = $1",
                    vec![media_id.into()],
                )
                .await?;
            return Ok(true);
        };
        // Under the content's lock: no upload of the same bytes keeps it meanwhile.
        let lock = self.media_lock(&sha);
        let _held = lock.lock().await;
        self.db
            .execute(
                "DELETE FROM media WHERE media_id = $1",
                vec![media_id.into()],
            )
            .await?;
        let shared = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM media WHERE sha256 = $1",
            vec![sha.as_str().into()],
        )
        .await?;
        if shared.is_none() {
            let blobs = self.blobs()?;
            let thumbs = self
                .db
                .query(
                    "SELECT width, height, method, content_type FROM media_thumbnails WHERE sha256 = $1",
                    vec![sha.as_str().into()],
                )
                .await?;
            for t in &thumbs {
                if t.text(3)?.len() > 1 {
                    let key = format!(
                        "thumbnails/{sha}/{}x{}-{}",
                        t.int(0)?,
                        t.int(1)?,
                        t.text(2)?
                    );
                    blobs.delete(&key).await.map_err(upload::blob_error)?;
                }
            }
            self.db
                .execute(
                    "DELETE FROM media_thumbnails WHERE sha256 = $1",
                    vec![sha.as_str().into()],
                )
                .await?;
            blobs
                .delete(&content_key(&sha))
                .await
                .map_err(upload::blob_error)?;
        }
        Ok(true)
    }
}
