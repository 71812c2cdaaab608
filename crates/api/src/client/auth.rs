//! The session extractor for handlers that do not go through ruma's request types; the
//! token itself was resolved by `authenticate`.

use axum::extract::FromRequestParts;
use tessera_core::accounts::Session;

use crate::{authenticate::Credentials, ApiError, AppState};

pub struct Auth(pub Session);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &AppState,
    ) -> Result<Self, ApiError> {
        let credentials = parts.extensions.get::<Credentials>();
        let none = Credentials::None;
        Ok(Auth(credentials.unwrap_or(&none).required()?.clone()))
    }
}
