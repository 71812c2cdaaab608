//! axum's extractors with their refusals as Matrix errors: a path that does not decode is
//! 400 `M_INVALID_PARAM`, a bad query string too, a body over the limit 413 `M_TOO_LARGE`
//! (read no further than the limit), a body that is not JSON 400 `M_NOT_JSON`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::{request::Parts, StatusCode};
use ruma::api::error::ErrorKind;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tessera_core::Error;

use crate::ApiError;

/// Path parameters, percent-decoded.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError(Error::invalid_param(format!(
                "Invalid path parameter: {}",
                e.body_text()
            )))),
        }
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError(Error::invalid_param(format!(
                "Invalid query parameter: {}",
                e.body_text()
            )))),
        }
    }
}

/// The raw request body, at most the configured size.
pub struct Body(pub Bytes);

impl<S> FromRequest<S> for Body
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| body_error(e.status()))
    }
}

/// A body that could not be read: too large, or cut off.
pub fn body_error(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(Error::Matrix(
            ErrorKind::TooLarge,
            "Request body too large".into(),
        ))
    } else {
        ApiError(Error::bad_json("Could not read the request body"))
    }
}

impl Body {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.0)
            .map_err(|_| ApiError(Error::Matrix(ErrorKind::NotJson, "Body is not JSON".into())))
    }

    /// The body as a JSON object.
    pub fn object(&self) -> Result<serde_json::Map<String, Value>, ApiError> {
        match self.json()? {
            Value::Object(o) => Ok(o),
            _ => Err(ApiError(Error::bad_json("Body must be a JSON object"))),
        }
    }

    /// A JSON object, or `{}` for an empty body (endpoints whose fields are all optional).
    pub fn object_or_empty(&self) -> Result<serde_json::Map<String, Value>, ApiError> {
        if self.0.is_empty() {
            return Ok(Default::default());
        }
        self.object()
    }
}

/// A count a ruma request carries (`limit`, `max_depth`), as a `usize`; one too large
/// for it is as good as unbounded (the core clamps every count).
pub fn count(v: Option<ruma::UInt>) -> Option<usize> {
    v.map(|v| usize::try_from(u64::from(v)).unwrap_or(usize::MAX))
}
