//! The one place where errors become Matrix error JSON with an HTTP status.

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::StatusCode;
use ruma::api::{
    client::uiaa::UiaaResponse,
    error::{
        DeserializationError, Error as RumaError, ErrorBody, ErrorKind, FromHttpRequestError,
        StandardErrorBody,
    },
    OutgoingResponseExt,
};
use tessera_core::Error;

#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

pub fn status_for(kind: &ErrorKind) -> StatusCode {
    use ErrorKind::*;
    match kind {
        Forbidden | GuestAccessForbidden | UserDeactivated | ThreepidDenied | InviteBlocked => {
            StatusCode::FORBIDDEN
        }
        UnknownToken(_) | MissingToken | Unauthorized => StatusCode::UNAUTHORIZED,
        NotFound | Unrecognized => StatusCode::NOT_FOUND,
        LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        WrongRoomKeysVersion(_) => StatusCode::FORBIDDEN,
        TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn matrix(kind: ErrorKind, message: String) -> Response {
    let status = status_for(&kind);
    ruma_error(status, kind, message)
}

fn ruma_error(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    let err = RumaError::new(
        status,
        ErrorBody::Standard(StandardErrorBody::new(kind, message)),
    );
    match err.try_into_http_response::<BytesMut>() {
        Ok(res) => res
            .map(|b| axum::body::Body::from(b.freeze()))
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            Error::Matrix(kind, message) => matrix(kind, message),
            Error::Uia(info) => {
                match UiaaResponse::AuthResponse(*info).try_into_http_response::<BytesMut>() {
                    Ok(res) => res
                        .map(|b| axum::body::Body::from(b.freeze()))
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
            Error::Db(e) => {
                tracing::error!("database error: {e}");
                ruma_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal server error".into(),
                )
            }
            Error::Internal(e) => {
                tracing::error!("internal error: {e}");
                ruma_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal server error".into(),
                )
            }
        }
    }
}

/// A request ruma could not parse.
pub fn from_request_error(e: FromHttpRequestError) -> ApiError {
    let (kind, msg) = match &e {
        FromHttpRequestError::MethodMismatch { .. } => (ErrorKind::Unrecognized, e.to_string()),
        FromHttpRequestError::Deserialization(DeserializationError::Json(_)) => {
            (ErrorKind::BadJson, e.to_string())
        }
        FromHttpRequestError::Deserialization(_) => (ErrorKind::InvalidParam, e.to_string()),
        _ => (ErrorKind::BadJson, e.to_string()),
    };
    ApiError(Error::Matrix(kind, msg))
}

pub async fn unrecognized() -> Response {
    matrix(ErrorKind::Unrecognized, "Unrecognized request".into())
}

pub async fn method_not_allowed() -> Response {
    ruma_error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Unrecognized,
        "Method not allowed".into(),
    )
}
