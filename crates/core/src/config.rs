//! The part of the configuration the Matrix logic needs.

use ruma::OwnedServerName;

#[derive(Clone, Debug)]
pub struct Config {
    pub server_name: OwnedServerName,
    /// `m.login.dummy` registration without a token.
    pub registration_open: bool,
    /// Registration needs `m.login.registration_token`.
    pub registration_token_required: bool,
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
}

impl Config {
    pub fn new(server_name: OwnedServerName) -> Self {
        Self {
            server_name,
            registration_open: false,
            registration_token_required: true,
            access_token_lifetime_ms: 24 * 3600 * 1000,
            max_sync_timeout_ms: 60_000,
            max_timeline_limit: 100,
            public_base_url: None,
            fast_password_hashing: false,
        }
    }
}
