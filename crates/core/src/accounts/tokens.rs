//! Random tokens; only their SHA-256 is stored.

use rand::{distributions::Alphanumeric, Rng};
use sha2::{Digest, Sha256};

pub fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// An opaque access or refresh token, prefixed so leaks are recognisable.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}_{}", random_string(40))
}

pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
