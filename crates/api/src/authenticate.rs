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
    pub fn key(&self) -> String {
        self.0.map(|ip| ip.to_string()).unwrap_or_default()
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

fn client_ip(parts: &http::request::Parts, trust_forwarded_for: bool) -> ClientIp {
    if trust_forwarded_for {
        // The last entry is the one the proxy added; anything before it the client wrote.
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return ClientIp(forwarded);
        }
    }
    ClientIp(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

pub async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match gate(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn gate(s: &AppState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let limiter = &s.limiter;
    let ip = client_ip(&parts, limiter.config().trust_forwarded_for);
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
