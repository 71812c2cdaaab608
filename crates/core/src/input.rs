//! Checks on the names and strings a client sends (event types, state keys, transaction
//! IDs…) before they reach the write path or SQL. Bad input is 400 `M_INVALID_PARAM`, the
//! same on every engine (PostgreSQL cannot store a NUL character; see
//! [`crate::ports::check_storable`], the last line of defence).

use crate::{Error, Result};

/// Spec ("Size limits"): `type` and `state_key` are at most 255 bytes.
pub const MAX_TYPE_BYTES: usize = 255;
pub const MAX_STATE_KEY_BYTES: usize = 255;
/// Spec (appendices, "Identifier grammar"): user IDs, room IDs, room aliases and event
/// IDs are at most 255 bytes.
pub const MAX_ID_BYTES: usize = 255;
/// Transaction IDs, device IDs, tags, filter IDs, key IDs and other opaque names: the
/// spec sets no limit; 255 bytes is the identifiers' limit and more than clients use.
pub const MAX_NAME_BYTES: usize = 255;

/// A name that is non-empty, at most `max` bytes and free of NUL characters.
pub fn name(what: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid_param(format!("{what} may not be empty")));
    }
    text(what, s, max)
}

/// A string (possibly empty) of at most `max` bytes without NUL characters.
pub fn text(what: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(Error::invalid_param(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    if s.contains('\0') {
        return Err(Error::invalid_param(format!(
            "{what} may not contain a NUL character"
        )));
    }
    Ok(())
}

pub fn event_type(s: &str) -> Result<()> {
    name("Event type", s, MAX_TYPE_BYTES)
}

/// State keys may be empty (most room state has the empty key).
pub fn state_key(s: &str) -> Result<()> {
    text("State key", s, MAX_STATE_KEY_BYTES)
}

pub fn txn_id(s: &str) -> Result<()> {
    name("Transaction ID", s, MAX_NAME_BYTES)
}

pub fn device_id(s: &str) -> Result<()> {
    name("Device ID", s, MAX_NAME_BYTES)
}

/// Device display names are shown to others (`/keys/query`); Synapse allows 100
/// characters, we allow 255 bytes.
pub fn display_name(s: &str) -> Result<()> {
    text("Display name", s, MAX_NAME_BYTES)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits() {
        assert!(super::event_type("m.room.message").is_ok());
        assert!(super::event_type("").is_err());
        assert!(super::event_type(&"a".repeat(256)).is_err());
        assert!(super::event_type("m.\0").is_err());
        assert!(super::state_key("").is_ok());
        assert!(
            super::state_key(&"é".repeat(128)).is_err(),
            "bytes, not chars"
        );
        assert!(super::txn_id("a\0").is_err());
    }
}
