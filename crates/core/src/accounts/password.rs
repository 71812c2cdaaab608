//! argon2id password hashing (design brief: OWASP's first choice).

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

use crate::{Error, Result};

/// Longest password accepted, so hashing cost stays bounded.
pub const MAX_PASSWORD_LEN: usize = 512;

/// argon2id with m = 12 MiB, t = 3, p = 1: one of OWASP's equivalent recommended settings,
/// chosen over the 19 MiB one to keep a small server's memory low. `fast` is argon2's
/// minimum cost, for benchmarks that register thousands of users (`bench` config); the
/// parameters are in each hash, so verifying works either way.
fn hasher(fast: bool) -> Argon2<'static> {
    let params = if fast {
        argon2::Params::new(argon2::Params::MIN_M_COST, 1, 1, None)
    } else {
        argon2::Params::new(12 * 1024, 3, 1, None)
    };
    match params {
        Ok(params) => Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params),
        Err(_) => Argon2::default(),
    }
}

pub fn hash(password: &str, fast: bool) -> Result<String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid_param("password too long"));
    }
    let salt = SaltString::generate(&mut OsRng);
    hasher(fast)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    // The hash's own parameters decide the cost.
    PasswordHash::new(stored)
        .map(|h| {
            hasher(false)
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl crate::Homeserver {
    /// [`hash`] through the offload port, off the request threads.
    pub(crate) async fn hash_password(&self, password: &str) -> Result<String> {
        if password.len() > MAX_PASSWORD_LEN {
            return Err(Error::invalid_param("password too long"));
        }
        let password = password.to_owned();
        let fast = self.config.fast_password_hashing;
        self.offload(move || hash(&password, fast)).await?
    }

    /// [`verify`] through the offload port, off the request threads.
    pub(crate) async fn verify_password(&self, password: &str, stored: &str) -> Result<bool> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(false);
        }
        let (password, stored) = (password.to_owned(), stored.to_owned());
        self.offload(move || verify(&password, &stored)).await
    }
}
