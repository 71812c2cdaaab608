//! Rate limits (spec: "Rate limiting"): a token bucket per user, per IP address or per
//! account, with a budget of its own for each kind of action, kept by `governor`. A refusal
//! is `429 M_LIMIT_EXCEEDED` with `retry_after_ms` and a `Retry-After` header.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota};
use ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter};
use tessera_core::{accounts::Session, Error};

use crate::ApiError;

/// What a budget is spent on. `Requests` and `RequestsPerIp` cover every request; the
/// others come on top for the actions they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every request of a user (of an address, before login).
    Requests,
    /// Every request from one IP address, logged in or not.
    RequestsPerIp,
    /// Events sent: messages, state, redactions, new rooms, profile changes (which send
    /// a member event to every room).
    Messages,
    /// Joins and knocks.
    Joins,
    Invites,
    /// `/register` requests, per address.
    Registration,
    /// `/login` requests, per address.
    Login,
    /// Password checks against one account (`/login` and user-interactive auth).
    LoginAccount,
    /// To-device messages, counted per recipient device.
    ToDevice,
    /// Typing notifications, receipts, read markers, presence: each wakes the syncs of
    /// everyone who sees it.
    Ephemeral,
    /// Display name and avatar changes: each sends a member event to every joined room.
    Profile,
    /// Media uploads and reservations.
    Media,
}

const CLASSES: usize = 12;

impl Class {
    fn index(self) -> usize {
        self as usize
    }
}

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: u32,
}

impl Budget {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let rate = if self.per_second.is_finite() && self.per_second > 0.0 {
            self.per_second
        } else {
            1.0
        };
        // A day per token at the slowest: `Duration` cannot hold every float.
        let period = Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(Duration::from_secs(86_400))
            .clamp(Duration::from_nanos(1), Duration::from_secs(86_400));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst)
    }
}

/// Budgets and exemptions (README, `rate_limits.*`).
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub enabled: bool,
    /// Server admins are not limited.
    pub exempt_admins: bool,
    /// Users who are not limited (bots, bridges).
    pub exempt_users: HashSet<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or ranges).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub requests: Budget,
    pub requests_per_ip: Budget,
    pub messages: Budget,
    pub joins: Budget,
    pub invites: Budget,
    pub registration: Budget,
    pub login: Budget,
    pub login_account: Budget,
    pub to_device: Budget,
    pub ephemeral: Budget,
    pub profile: Budget,
    pub media: Budget,
}

impl Default for RateLimits {
    /// Enough for a person using Element (its start-up burst, scrolling back through
    /// history, a space's worth of joins), not for a flood.
    fn default() -> Self {
        Self {
            enabled: true,
            exempt_admins: false,
            exempt_users: HashSet::new(),
            trusted_proxies: Vec::new(),
            requests: Budget::new(20.0, 200),
            requests_per_ip: Budget::new(100.0, 1000),
            messages: Budget::new(2.0, 40),
            joins: Budget::new(0.2, 20),
            invites: Budget::new(0.2, 20),
            registration: Budget::new(0.1, 10),
            login: Budget::new(0.5, 20),
            login_account: Budget::new(0.05, 10),
            to_device: Budget::new(200.0, 2000),
            ephemeral: Budget::new(5.0, 50),
            profile: Budget::new(0.02, 10),
            media: Budget::new(1.0, 30),
        }
    }
}

impl RateLimits {
    fn budget(&self, class: Class) -> Budget {
        match class {
            Class::Requests => self.requests,
            Class::RequestsPerIp => self.requests_per_ip,
            Class::Messages => self.messages,
            Class::Joins => self.joins,
            Class::Invites => self.invites,
            Class::Registration => self.registration,
            Class::Login => self.login,
            Class::LoginAccount => self.login_account,
            Class::ToDevice => self.to_device,
            Class::Ephemeral => self.ephemeral,
            Class::Profile => self.profile,
            Class::Media => self.media,
        }
    }
}

/// Checks between two sweeps of idle buckets.
const SWEEP_EVERY: u64 = 1 << 14;

pub struct RateLimiter {
    config: RateLimits,
    buckets: Vec<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
    /// Keys whose failure budget ran out, and until when (see [`RateLimiter::failed`]).
    locked: Mutex<HashMap<(Class, String), Instant>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimits) -> Self {
        let all = [
            Class::Requests,
            Class::RequestsPerIp,
            Class::Messages,
            Class::Joins,
            Class::Invites,
            Class::Registration,
            Class::Login,
            Class::LoginAccount,
            Class::ToDevice,
            Class::Ephemeral,
            Class::Profile,
            Class::Media,
        ];
        debug_assert_eq!(all.len(), CLASSES);
        debug_assert!(all.iter().enumerate().all(|(i, c)| c.index() == i));
        Self {
            buckets: all
                .iter()
                .map(|c| DefaultKeyedRateLimiter::keyed(config.budget(*c).quota()))
                .collect(),
            config: config.clone(),
            checks: AtomicU64::new(0),
            locked: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RateLimits {
        &self.config
    }

    /// Whether this user's requests skip the limits.
    pub fn exempt(&self, session: Option<&Session>) -> bool {
        !self.config.enabled
            || session.is_some_and(|s| {
                (self.config.exempt_admins && s.is_admin)
                    || self.config.exempt_users.contains(s.user_id.as_str())
            })
    }

    /// Takes one token from `key`'s `class` budget.
    pub fn check(&self, class: Class, key: &str) -> Result<(), ApiError> {
        self.check_n(class, key, 1)
    }

    /// Takes `n` tokens at once; more than the budget's burst is refused outright.
    pub fn check_n(&self, class: Class, key: &str, n: u32) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        self.sweep();
        let Some(bucket) = self.buckets.get(class.index()) else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let key = key.to_owned();
        match bucket.check_key_n(&key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(bucket.clock().now());
                Err(limited(wait))
            }
            Err(_) => Err(ApiError(Error::Matrix(
                ErrorKind::TooLarge,
                format!(
                    "More than {} at once is never allowed",
                    self.config.budget(class).burst
                ),
            ))),
        }
    }

    /// Takes up to `n` tokens: at most the whole burst, so one request that does the work
    /// of many (a room created with invites) costs a full budget but is never refused
    /// outright.
    pub fn check_up_to(&self, class: Class, key: &str, n: u32) -> Result<(), ApiError> {
        self.check_n(class, key, n.min(self.config.budget(class).burst.max(1)))
    }

    /// For budgets spent only by failures (`LoginAccount`): refuses while `key`'s budget
    /// is exhausted, without spending anything, so a correct password is never what
    /// empties it.
    pub fn check_failures(&self, class: Class, key: &str) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        let k = (class, key.to_owned());
        match locked.get(&k) {
            Some(until) if *until > Instant::now() => Err(limited(*until - Instant::now())),
            Some(_) => {
                locked.remove(&k);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Spends a token of `key`'s failure budget; once it is empty, `check_failures`
    /// refuses until a token is back.
    pub fn failed(&self, class: Class, key: &str) {
        if !self.config.enabled {
            return;
        }
        if let Err(ApiError(Error::Matrix(ErrorKind::LimitExceeded(data), _))) =
            self.check(class, key)
        {
            if let Some(RetryAfter::Delay(wait)) = data.retry_after {
                let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
                locked.insert((class, key.to_owned()), Instant::now() + wait);
            }
        }
    }

    /// Now and then, drops buckets that are full again (as if never used) and locks that
    /// ended, so memory follows the clients active in the last few minutes.
    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for bucket in &self.buckets {
                bucket.retain_recent();
                bucket.shrink_to_fit();
            }
            let now = Instant::now();
            let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
            locked.retain(|_, until| *until > now);
        }
    }
}

/// `429 M_LIMIT_EXCEEDED`, retry after `wait` (at least a millisecond).
pub fn limited(wait: Duration) -> ApiError {
    let wait = wait.max(Duration::from_millis(1));
    ApiError(Error::Matrix(
        ErrorKind::LimitExceeded({
            let mut data = LimitExceededErrorData::new();
            data.retry_after = Some(RetryAfter::Delay(wait));
            data
        }),
        "Too many requests".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_key() {
        let limits = RateLimits {
            messages: Budget::new(0.5, 3),
            ..Default::default()
        };
        let l = RateLimiter::new(&limits);
        for _ in 0..3 {
            assert!(l.check(Class::Messages, "@a:x").is_ok());
        }
        let Err(ApiError(Error::Matrix(ErrorKind::LimitExceeded(data), _))) =
            l.check(Class::Messages, "@a:x")
        else {
            panic!("fourth message allowed");
        };
        let Some(RetryAfter::Delay(wait)) = data.retry_after else {
            panic!("no delay");
        };
        assert!(wait <= Duration::from_secs(2) && wait > Duration::from_millis(1000));
        // Other keys and other budgets are unaffected.
        assert!(l.check(Class::Messages, "@b:x").is_ok());
        assert!(l.check(Class::Requests, "@a:x").is_ok());
        // More than the burst at once never fits.
        assert!(matches!(
            l.check_n(Class::Messages, "@c:x", 4),
            Err(ApiError(Error::Matrix(ErrorKind::TooLarge, _)))
        ));
    }
}
