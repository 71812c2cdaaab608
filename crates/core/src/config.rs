//! The part of the configuration the Matrix logic needs.

use ruma::OwnedServerName;

#[derive(Clone, Debug)]
pub struct Config {
    pub server_name: OwnedServerName,
    /// `m.login.dummy` registration without a token.
    pub registration_open: bool,
    /// Registration needs `m.login.registration_token`.
    pub registration_token_required: bool,
    /// Guest accounts may be registered (spec: "Guest Access"); off by default.
    pub guest_access: bool,
    /// Lifetime of access tokens issued with a refresh token, in ms.
    pub access_token_lifetime_ms: u64,
    /// Longest `/sync` long-poll honoured, in ms.
    pub max_sync_timeout_ms: u64,
    /// Most events a sync timeline or `/messages` page returns.
    pub max_timeline_limit: usize,
    /// Base URL advertised by `/.well-known/matrix/client`.
    pub public_base_url: Option<String>,
    /// Hash new passwords at argon2's minimum cost. Benchmarks only: it makes stolen
    /// hashes cheap to crack.
    pub fast_password_hashing: bool,
    pub media: MediaConfig,
    /// `room_directory.publication_rules`: who may publish which room in the public room
    /// directory, first match decides; empty: every room admin may.
    pub publication_rules: Vec<crate::rooms::directory::PublicationRule>,
    /// `user_directory.search_all_users`: every local user is found, not only those who
    /// share a room with the searcher or are in a public room.
    pub user_directory_all_users: bool,
    /// `voip.*`: the TURN servers `/voip/turnServer` hands out.
    pub turn: crate::voip::TurnConfig,
    /// `/.well-known/matrix/support` (spec: "Support information"), when configured.
    pub support: Option<serde_json::Value>,
    /// Who sends server notices and how their room is named (`server_notices.rs`).
    pub server_notices: Option<crate::server_notices::ServerNoticesConfig>,
}

/// The content repository's limits (README, `media.*`).
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Largest upload, in bytes (advertised as `m.upload.size`).
    pub max_upload_bytes: u64,
    /// Bytes a user may have uploaded in all; `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// IDs reserved by `/create` and not yet uploaded, per user.
    pub max_pending_uploads: usize,
    /// How long a reserved ID waits for its upload, in ms (spec suggests 24 hours).
    pub pending_expiry_ms: u64,
    /// Largest file thumbnailed; larger ones answer 413.
    pub max_thumbnail_source_bytes: u64,
    /// The unauthenticated `/_matrix/media/v3` downloads serve only media uploaded before
    /// this time (ms since the epoch); `None`: none (spec: the freeze, v1.11).
    pub unauthenticated_before_ms: Option<u64>,
    pub url_preview: crate::media::preview::UrlPreviewConfig,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            quota_bytes: None,
            max_pending_uploads: 32,
            pending_expiry_ms: 24 * 3600 * 1000,
            max_thumbnail_source_bytes: 32 * 1024 * 1024,
            unauthenticated_before_ms: None,
            url_preview: Default::default(),
        }
    }
}

impl Config {
    pub fn new(server_name: OwnedServerName) -> Self {
        Self {
            server_name,
            registration_open: false,
            registration_token_required: true,
            guest_access: false,
            access_token_lifetime_ms: 24 * 3600 * 1000,
            max_sync_timeout_ms: 60_000,
            max_timeline_limit: 100,
            public_base_url: None,
            fast_password_hashing: false,
            media: MediaConfig::default(),
            publication_rules: Vec::new(),
            user_directory_all_users: false,
            turn: Default::default(),
            support: None,
            server_notices: None,
        }
    }
}
