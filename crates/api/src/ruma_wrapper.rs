//! Turns HTTP requests into ruma's request types (with the session where the endpoint
//! needs one; see `authenticate`) and ruma responses back into HTTP.

use std::any::TypeId;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Path, Request},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use ruma::api::{
    auth_scheme::{AccessToken, AccessTokenOptional},
    client::session::login,
    error::ErrorKind,
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
};
use tessera_core::{accounts::Session, Error};

use crate::{
    authenticate::Credentials, error::from_request_error, extract::body_error, ApiError, AppState,
};

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

/// Request bodies ruma's deserializers panic on rather than refuse (ruma-client-api
/// 0.25: `LoginInfo` indexes a map for `type`), checked here first.
fn check_shape<T: 'static>(body: &[u8]) -> Result<(), ApiError> {
    if TypeId::of::<T>() == TypeId::of::<login::v3::Request>() {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| ApiError(Error::Matrix(ErrorKind::NotJson, "Body is not JSON".into())))?;
        if !value.get("type").is_some_and(|t| t.is_string()) {
            return Err(ApiError(Error::bad_json("`type` must be a string")));
        }
    }
    Ok(())
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
                Err(_) => {
                    return Err(ApiError(Error::invalid_param("Invalid path parameter")));
                }
            };
        let body: Bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| body_error(e.status()))?;

        let auth = TypeId::of::<T::Authentication>();
        let credentials = parts
            .extensions
            .get::<Credentials>()
            .cloned()
            .unwrap_or(Credentials::None);
        let session = if auth == TypeId::of::<AccessToken>() {
            Some(credentials.required()?.clone())
        } else if auth == TypeId::of::<AccessTokenOptional>() {
            credentials.optional()?.cloned()
        } else {
            None
        };

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
        if is_json_body {
            check_shape::<T>(body_ref)?;
        }
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
