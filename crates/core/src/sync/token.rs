//! Sync tokens: `s{pos}_{typing}`.

use std::{fmt, str::FromStr};

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub pos: i64,
    pub typing: u64,
}

impl SyncToken {
    /// A token from the future (another node, a restored backup) is treated as now.
    pub fn clamp_to(self, now: SyncToken) -> SyncToken {
        SyncToken {
            pos: self.pos.min(now.pos),
            typing: self.typing.min(now.typing),
        }
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.pos, self.typing)
    }
}

impl FromStr for SyncToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid_param("Invalid sync token");
        let (pos, typing) = s
            .strip_prefix('s')
            .and_then(|r| r.split_once('_'))
            .ok_or_else(bad)?;
        Ok(SyncToken {
            pos: pos.parse().map_err(|_| bad())?,
            typing: typing.parse().map_err(|_| bad())?,
        })
    }
}

/// A `/messages` token: a stream position; sync tokens are accepted too (spec: `from` may
/// be a sync `next_batch` or a `prev_batch`).
pub fn parse_position(s: &str) -> Result<i64, Error> {
    if let Ok(t) = s.parse::<SyncToken>() {
        return Ok(t.pos);
    }
    s.strip_prefix('t')
        .unwrap_or(s)
        .parse()
        .map_err(|_| Error::invalid_param("Invalid pagination token"))
}
