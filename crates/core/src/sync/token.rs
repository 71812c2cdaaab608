//! Sync tokens: `s{pos}_{typing}`.

use std::{fmt, str::FromStr};

use crate::Error;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Every token names a place between events: everything at or below its position is
/// before it. Sync tokens are `s{pos}_{typing}`, pagination tokens (`prev_batch`, and the
/// `start` and `end` of `/messages` and `/context`) `t{pos}`; either may be used where the
/// other is taken (spec: `from` may be a sync `next_batch` or a `prev_batch`).
pub fn position_token(pos: i64) -> String {
    format!("t{}", pos.max(0))
}

/// The position a token names. Bare numbers were the pagination tokens before positions
/// were places between events: they meant "before `n`" going back and "after `n`" going
/// forward, which `backward` tells apart.
pub fn parse_position(s: &str, backward: bool) -> Result<i64, Error> {
    let bad = || Error::invalid_param("Invalid pagination token");
    if let Ok(t) = s.parse::<SyncToken>() {
        return Ok(t.pos);
    }
    // A sliding sync `pos` serves as a `/sync` `next_batch` (MSC4186).
    if let Some(pos) = super::sliding::pos_position(s) {
        return Ok(pos);
    }
    let pos: i64 = match s.strip_prefix('t') {
        Some(n) => n.parse().map_err(|_| bad())?,
        None => {
            let n: i64 = s.parse().map_err(|_| bad())?;
            if backward {
                n.saturating_sub(1)
            } else {
                n
            }
        }
    };
    if pos < 0 {
        return Err(bad());
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_places_between_events() {
        assert_eq!(parse_position("t5", true).unwrap(), 5);
        assert_eq!(parse_position("t5", false).unwrap(), 5);
        assert_eq!(parse_position("s7_3", true).unwrap(), 7);
        // Tokens from before: "before 5" back, "after 5" forward.
        assert_eq!(parse_position("5", true).unwrap(), 4);
        assert_eq!(parse_position("5", false).unwrap(), 5);
        assert!(parse_position("x9", true).is_err());
        assert!(parse_position("t-1", true).is_err());
        assert_eq!(position_token(12), "t12");
        assert_eq!(parse_position("p7.3.42.1", true).unwrap(), 42);
    }
}
