//! `GET /sync` (spec: "Syncing").

use axum::{extract::State, http::header, response::IntoResponse};
use ruma::api::client::{filter::FilterDefinition, sync::sync_events};
use ruma::{api::error::ErrorKind, presence::PresenceState};
use tessera_core::{
    sync::{account_data::MAX_FILTER_BYTES, filter::SyncFilter, SyncRequest},
    Error,
};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    ruma_route!(r, sync_events::v3::Request, sync)
}

async fn sync(
    State(s): State<AppState>,
    req: Ruma<sync_events::v3::Request>,
) -> Result<impl IntoResponse, ApiError> {
    let session = req.user()?.clone();
    let user = session.user_id.clone();
    let b = req.body;
    let filter = match b.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterDefinition(def)) => {
            if serde_json::to_vec(&def).map_or(0, |j| j.len()) > MAX_FILTER_BYTES {
                return Err(ApiError(Error::Matrix(
                    ErrorKind::TooLarge,
                    "Filter too large".into(),
                )));
            }
            def
        }
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let json = s.hs.get_filter(&user, &id).await?;
            serde_json::from_value(json)
                .map_err(|e| Error::bad_json(format!("stored filter invalid: {e}")))?
        }
        Some(_) => return Err(ApiError(Error::bad_json("Unsupported filter"))),
    };
    let since = b.since.as_deref().map(str::parse).transpose()?;
    let body =
        s.hs.sync(
            &user,
            &session.device_id,
            SyncRequest {
                since,
                full_state: b.full_state,
                timeout_ms: b.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
                filter: SyncFilter::new(&filter)?,
                use_state_after: b.use_state_after,
                // Spec: syncing marks the user online unless it says otherwise.
                set_presence: match b.set_presence {
                    PresenceState::Offline => None,
                    PresenceState::Unavailable => Some("unavailable"),
                    _ => Some("online"),
                },
                to_device: true,
            },
        )
        .await?;
    // Already JSON text: handed to the connection as it is, not serialized again.
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}
