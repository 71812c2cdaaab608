//! An access-token extractor for handlers that do not go through ruma's request types.

use axum::extract::FromRequestParts;
use ruma::api::error::ErrorKind;
use tessera_core::{accounts::Session, Error};

use crate::{ruma_wrapper::access_token, ApiError, AppState};

pub struct Auth(pub Session);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or_else(|| {
            ApiError(Error::Matrix(
                ErrorKind::MissingToken,
                "Missing access token".into(),
            ))
        })?;
        Ok(Auth(state.hs.authenticate(&token).await?))
    }
}
