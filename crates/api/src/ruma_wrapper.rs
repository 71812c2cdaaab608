//! Turns HTTP requests into ruma's request types (checking the access token where the
//! endpoint needs one, and the rate limit) and ruma responses back into HTTP.

use std::{any::TypeId, net::SocketAddr};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, FromRequest, Path, Request},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use ruma::api::{
    auth_scheme::{AccessToken, AccessTokenOptional},
    error::{ErrorKind, LimitExceededErrorData, RetryAfter},
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
};
use tessera_core::{accounts::Session, Error};

use crate::{error::from_request_error, ApiError, AppState};

/// A parsed request and, for authenticated endpoints, who sent it.
pub struct Ruma<T> {
    pub body: T,
    pub session: Option<Session>,
}

impl<T> Ruma<T> {
    /// The session of an endpoint that requires one.
    pub fn user(&self) -> Result<&Session, ApiError> {
        self.session.as_ref().ok_or_else(|| {
            ApiError(Error::Matrix(
                ErrorKind::MissingToken,
                "Missing access token".into(),
            ))
        })
    }
}

pub(crate) fn access_token(req: &http::request::Parts) -> Option<String> {
    if let Some(h) = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    // Deprecated, still allowed by the spec.
    req.uri.query().and_then(|q| url_param(q, "access_token"))
}

fn url_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn limited(wait: std::time::Duration) -> ApiError {
    ApiError(Error::Matrix(
        ErrorKind::LimitExceeded({
            let mut data = LimitExceededErrorData::new();
            data.retry_after = Some(RetryAfter::Delay(wait));
            data
        }),
        "Too many requests".into(),
    ))
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> =
            match <Path<Vec<(String, String)>> as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await {
                Ok(Path(args)) => args.into_iter().map(|(_, v)| v).collect(),
                Err(_) => vec![],
            };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let body: Bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| {
                ApiError(Error::Matrix(
                    ErrorKind::TooLarge,
                    "Request body too large".into(),
                ))
            })?;

        let auth = TypeId::of::<T::Authentication>();
        let needs_token = auth == TypeId::of::<AccessToken>();
        let optional = auth == TypeId::of::<AccessTokenOptional>();
        let session = match access_token(&parts) {
            Some(token) if needs_token || optional => Some(state.hs.authenticate(&token).await?),
            None if needs_token => {
                return Err(ApiError(Error::Matrix(
                    ErrorKind::MissingToken,
                    "Missing access token".into(),
                )));
            }
            _ => None,
        };
        if T::RATE_LIMITED {
            let key = session
                .as_ref()
                .map(|s| s.user_id.to_string())
                .unwrap_or(ip);
            state.limiter.check(&key).map_err(limited)?;
        }

        // Distinguish a body that is not JSON at all (M_NOT_JSON) from one of the wrong shape.
        let is_json_body = matches!(parts.method, http::Method::POST | http::Method::PUT);
        if is_json_body
            && !body.is_empty()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
        {
            return Err(ApiError(Error::Matrix(
                ErrorKind::NotJson,
                "Body is not JSON".into(),
            )));
        }
        let body_ref: &[u8] = if is_json_body && body.is_empty() {
            b"{}"
        } else {
            &body
        };
        let http_req = http::Request::from_parts(parts, body_ref);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let parsed = T::try_from_http_request(http_req, &args).map_err(from_request_error)?;
        Ok(Ruma {
            body: parsed,
            session,
        })
    }
}

/// Wraps a ruma response for axum.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|b| Body::from(b.freeze())).into_response(),
            Err(e) => ApiError(Error::internal(e)).into_response(),
        }
    }
}

/// Registers a handler under every path ruma knows for the endpoint.
#[macro_export]
macro_rules! ruma_route {
    ($router:expr, $req:ty, $handler:expr) => {{
        use ruma::api::{path_builder::PathBuilder as _, Metadata as _};
        let mut router = $router;
        let filter = axum::routing::MethodFilter::try_from(<$req>::METHOD)
            .expect("ruma methods are standard");
        for path in <$req>::PATH_BUILDER.all_paths() {
            router = router.route(path, axum::routing::on(filter, $handler));
        }
        router
    }};
}
