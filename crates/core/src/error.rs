//! Typed errors. Each carries its Matrix `errcode`; the HTTP status is chosen in one place,
//! `tessera_api::error`.

use ruma::api::{client::uiaa::UiaaInfo, error::ErrorKind};

use crate::ports::DbError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{1}")]
    Matrix(ErrorKind, String),
    /// An error the spec answers with another HTTP status than its kind's usual one
    /// (`409 M_UNKNOWN` for an alias that exists).
    #[error("{message}")]
    WithStatus {
        status: u16,
        kind: ErrorKind,
        message: String,
    },
    /// User-interactive auth must continue (spec: User-Interactive Authentication API).
    #[error("user-interactive authentication required")]
    Uia(Box<UiaaInfo>),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Matrix(ErrorKind::Forbidden, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::Matrix(ErrorKind::NotFound, msg.into())
    }
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::Matrix(ErrorKind::BadJson, msg.into())
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::Matrix(ErrorKind::InvalidParam, msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::Internal(msg.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}
