//! Server-side key backups (spec: "Server-side key backups").

use axum::Router;

use crate::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r
}
