//! Every routed request passes here once, before its handler: the address's budget, then
//! the access token (resolved once; handlers read the result through `Auth` and `Ruma`),
//! then the user's budgets.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ruma::api::error::ErrorKind;
use tessera_core::{accounts::Session, Error};

use crate::{rate_limit::Class, ApiError, AppState};

/// What the request's access token turned out to be.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// No token was sent.
    None,
    Session(Session),
    /// A token was sent and refused (`M_UNKNOWN_TOKEN`, maybe with `soft_logout`).
    Rejected(ErrorKind, String),
}

impl Credentials {
    /// The session of an endpoint that requires one.
    pub fn required(&self) -> Result<&Session, ApiError> {
        match self {
            Credentials::Session(s) => Ok(s),
            Credentials::Rejected(kind, msg) => {
                Err(ApiError(Error::Matrix(kind.clone(), msg.clone())))
            }
            Credentials::None => Err(ApiError(Error::Matrix(
                ErrorKind::MissingToken,
                "Missing access token".into(),
            ))),
        }
    }

    /// The session of an endpoint where one is optional; a refused token is still an error.
    pub fn optional(&self) -> Result<Option<&Session>, ApiError> {
        match self {
            Credentials::None => Ok(None),
            other => other.required().map(Some),
        }
    }
}

/// The client's address.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The rate-limit key: the address, or for IPv6 its /64 (one subscriber's network:
    /// an attacker holding one has 2^64 addresses).
    pub fn key(&self) -> String {
        match self.0 {
            None => String::new(),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
            Some(ip) => ip.to_string(),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(None)))
    }
}

pub(crate) fn access_token(req: &http::request::Parts) -> Option<String> {
    if let Some(h) = req.headers.get(http::header::AUTHORIZATION) {
        // A header that is not `Bearer …` is no token at all.
        return h
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
    }
    // Deprecated, still allowed by the spec.
    req.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the last
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries before it were
/// written by the client and prove nothing).
fn client_ip(parts: &http::request::Parts, trusted: &[ipnet::IpNet]) -> ClientIp {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let Some(mut client) = peer else {
        return ClientIp(None);
    };
    if !is_trusted(&client) {
        return ClientIp(Some(client));
    }
    let entries: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage: the nearest hop we can vouch for is all we know.
            Err(_) => break,
        }
    }
    ClientIp(Some(client))
}

pub async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match gate(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /logout` and `/logout/all`, the requests a locked account may still make.
fn is_logout(parts: &http::request::Parts) -> bool {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map_or(parts.uri.path(), |p| p.as_str());
    parts.method == http::Method::POST
        && (path.ends_with("/logout") || path.ends_with("/logout/all"))
}

/// Whether a guest may make this request (`guests.rs`).
fn guest_route(parts: &http::request::Parts) -> bool {
    parts
        .extensions
        .get::<MatchedPath>()
        .is_some_and(|p| crate::guests::allowed(&parts.method, p.as_str()))
}

async fn gate(s: &AppState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let limiter = &s.limiter;
    let ip = client_ip(&parts, &limiter.config().trusted_proxies);
    parts.extensions.insert(ip);
    let class = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|p| s.classes.get(p.as_str()))
        .copied()
        .filter(|_| parts.method != http::Method::GET);

    // The address first: a flood of bad tokens costs no database look-ups.
    let limited = limiter.config().enabled;
    if limited {
        limiter.check(Class::RequestsPerIp, &ip.key())?;
    }
    let credentials = match access_token(&parts) {
        None => Credentials::None,
        Some(token) => match s.hs.authenticate(&token).await {
            // Spec ("Account locking"): a locked account may only log out.
            Ok(session) if session.locked && !is_logout(&parts) => Credentials::Rejected(
                ErrorKind::UserLocked,
                tessera_core::accounts::moderation::LOCKED_MESSAGE.into(),
            ),
            Ok(session) if session.is_guest && !guest_route(&parts) => Credentials::Rejected(
                ErrorKind::GuestAccessForbidden,
                "Guest accounts may not use this endpoint".into(),
            ),
            Ok(session) => Credentials::Session(session),
            Err(Error::Matrix(kind @ ErrorKind::UnknownToken(_), msg)) => {
                Credentials::Rejected(kind, msg)
            }
            Err(e) => return Err(e.into()),
        },
    };
    let session = match &credentials {
        Credentials::Session(s) => Some(s),
        _ => None,
    };
    if limited && !limiter.exempt(session) {
        // Signed-in users have budgets of their own; others share their address's.
        let key = session.map_or_else(|| ip.key(), |s| s.user_id.to_string());
        limiter.check(Class::Requests, &key)?;
        match class {
            // Per address: these come before there is an account to name.
            Some(c @ (Class::Registration | Class::Login)) => limiter.check(c, &ip.key())?,
            Some(c) => limiter.check(c, &key)?,
            None => {}
        }
    }
    parts.extensions.insert(credentials);
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> http::request::Parts {
        let mut req = http::Request::builder().uri("/");
        for f in forwarded {
            req = req.header("x-forwarded-for", *f);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = ClientIp(Some("2001:db8:1:2:3:4:5:6".parse().unwrap()));
        let b = ClientIp(Some("2001:db8:1:2:ffff::1".parse().unwrap()));
        let c = ClientIp(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        let mapped = ClientIp(Some("::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(mapped.key(), "192.0.2.1");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |p: &http::request::Parts| client_ip(p, &trusted).0.unwrap().to_string();
        // From a stranger, the header is the stranger's claim.
        assert_eq!(ip(&parts("192.0.2.9:1", &["203.0.113.5"])), "192.0.2.9");
        // From the proxy: the last entry it did not add itself.
        assert_eq!(ip(&parts("10.0.0.1:1", &["203.0.113.5"])), "203.0.113.5");
        assert_eq!(
            ip(&parts("10.0.0.1:1", &["6.6.6.6, 203.0.113.5", "10.0.0.2"])),
            "203.0.113.5"
        );
        // Garbage ends the walk at the nearest hop vouched for.
        assert_eq!(
            ip(&parts("10.0.0.1:1", &["203.0.113.5, nonsense"])),
            "10.0.0.1"
        );
        assert_eq!(ip(&parts("10.0.0.1:1", &[])), "10.0.0.1");
    }
}
