//! Which media a download may read (spec: `GET /_matrix/client/v1/media/download`, and
//! the deprecated unauthenticated `/_matrix/media/v3/download`, frozen since v1.11), and
//! reading it.

use std::time::Duration;

use ruma::api::error::ErrorKind;

use super::{check_media_id, upload::blob_error, MediaInfo, MEDIA_COLUMNS};
use crate::{ports::ByteStream, storage::query_opt, Error, Homeserver, Result};

/// Longest a download waits for a reserved ID's upload (spec: `timeout_ms`, default 20 s,
/// "SHOULD impose a maximum").
const MAX_WAIT_MS: u64 = 60_000;

/// How a download is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/client/v1/media/*`, with an access token.
    Authenticated,
    /// `/_matrix/media/v3/*`: only media uploaded before the freeze.
    Unauthenticated,
}

impl Homeserver {
    /// The media `mxc://{server}/{media_id}` names, ready to serve. A reserved ID not yet
    /// uploaded is waited for up to `timeout_ms`, then answered 504 `M_NOT_YET_UPLOADED`.
    pub async fn media_to_serve(
        &self,
        server: &str,
        media_id: &str,
        timeout_ms: Option<u64>,
        access: Access,
    ) -> Result<MediaInfo> {
        check_media_id(media_id)?;
        if server != self.server_name().as_str() {
            return Err(Error::not_found(
                "This media is on another server, and this server does not fetch media over federation",
            ));
        }
        let wait = timeout_ms.unwrap_or(20_000).min(MAX_WAIT_MS);
        let deadline = self.now().saturating_add(wait as i64);
        loop {
            // Listening before looking: an upload that lands in between is not missed.
            let landed = self.media_landed.listen();
            let info = self.media_info(media_id).await?;
            let not_found = || Error::not_found("Media not found");
            let info = info.ok_or_else(not_found)?;
            if info.quarantined {
                return Err(not_found());
            }
            if info.sha256.is_some() {
                if access == Access::Unauthenticated {
                    let before = self.config.media.unauthenticated_before_ms;
                    if before.is_none_or(|t| info.created_ts >= t as i64) {
                        // Spec ("Client behaviour", the freeze): such media is only served
                        // through the authenticated endpoints.
                        return Err(not_found());
                    }
                }
                return Ok(info);
            }
            let now = self.now();
            // Nothing uploaded now is on the frozen endpoints: no need to wait for it.
            if access == Access::Unauthenticated || info.expires_ts.is_some_and(|t| t <= now) {
                return Err(not_found());
            }
            if now >= deadline {
                return Err(Error::WithStatus {
                    status: 504,
                    kind: ErrorKind::NotYetUploaded,
                    message: "The media has not been uploaded yet".into(),
                });
            }
            let left = Duration::from_millis((deadline - now) as u64);
            futures_util::future::select(landed, Box::pin(self.sleep(left))).await;
        }
    }

    pub async fn media_info(&self, media_id: &str) -> Result<Option<MediaInfo>> {
        query_opt(
            self.db.as_ref(),
            &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1"),
            vec![media_id.into()],
        )
        .await?
        .map(|r| MediaInfo::from_row(&r))
        .transpose()
    }

    /// The bytes of served media, whole or the byte range `range` (within its size).
    pub async fn read_media(
        &self,
        info: &MediaInfo,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream> {
        let sha = info
            .sha256
            .as_deref()
            .ok_or_else(|| Error::not_found("Media not uploaded"))?;
        self.blobs()?
            .read(&super::content_key(sha), range)
            .await
            .map_err(blob_error)
    }

    /// Waits `d` through the wake-up port (the core has no timer of its own).
    pub(crate) async fn sleep(&self, d: Duration) {
        let deadline = self
            .now()
            .saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            let ticket = self.wakeups.ticket();
            self.wakeups
                .wait(ticket, Duration::from_millis((deadline - now) as u64))
                .await;
        }
    }
}
