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
use tessera_core::{ports::DbError, Error};

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
        Forbidden | GuestAccessForbidden | UserDeactivated | ThreepidDenied | InviteBlocked
        | UserSuspended => StatusCode::FORBIDDEN,
        UnknownToken(_) | MissingToken | Unauthorized | UserLocked => StatusCode::UNAUTHORIZED,
        NotFound | Unrecognized => StatusCode::NOT_FOUND,
        LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        WrongRoomKeysVersion(_) => StatusCode::FORBIDDEN,
        TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        CannotOverwriteMedia => StatusCode::CONFLICT,
        NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
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
            Error::WithStatus {
                status,
                kind,
                message,
            } => ruma_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                kind,
                message,
            ),
            // Input no engine can store, refused before it ran (see `check_storable`).
            Error::Db(DbError::InvalidInput(message)) => matrix(ErrorKind::InvalidParam, message),
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

/// The answer to a handler that panicked (caught by `CatchPanicLayer`): logged, and a
/// plain 500 `M_UNKNOWN`, so the client is never left with a dropped connection.
pub fn panicked(panic: Box<dyn std::any::Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(panic = %what, "a request handler panicked");
    ruma_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unknown,
        "Internal server error".into(),
    )
}

/// Gives every error a Matrix JSON body: refusals made outside the handlers (body limits,
/// axum's own rejections) come as plain text otherwise.
pub async fn matrix_body(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::TooLarge,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => ErrorKind::Unrecognized,
        StatusCode::UNAUTHORIZED => ErrorKind::MissingToken,
        StatusCode::FORBIDDEN => ErrorKind::Forbidden,
        // A media download's range outside the file: no request body was at fault.
        StatusCode::RANGE_NOT_SATISFIABLE => ErrorKind::Unknown,
        StatusCode::TOO_MANY_REQUESTS => {
            ErrorKind::LimitExceeded(ruma::api::error::LimitExceededErrorData::new())
        }
        s if s.is_client_error() => ErrorKind::BadJson,
        _ => ErrorKind::Unknown,
    };
    let message = status.canonical_reason().unwrap_or("Error").to_owned();
    let mut out = ruma_error(status, kind, message);
    for (name, value) in res.headers() {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}
