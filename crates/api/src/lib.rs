//! Tessera's HTTP surface: an axum [`Router`] over the core's [`Homeserver`].

pub mod client;
pub mod error;
mod rate_limit;
mod ruma_wrapper;
mod well_known;

use std::sync::Arc;

use axum::{extract::DefaultBodyLimit, Router};
use tessera_core::Homeserver;

pub use error::ApiError;
pub use ruma_wrapper::{Ruma, RumaResponse};

/// HTTP-level limits and switches.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub rate_limits_enabled: bool,
    /// Sustained requests per second per user (or per IP before login).
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: u32,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_limits_enabled: true,
            rate_limit_per_second: 10.0,
            rate_limit_burst: 50,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub hs: Arc<Homeserver>,
    pub limiter: Arc<rate_limit::RateLimiter>,
}

pub fn router(hs: Arc<Homeserver>, cfg: ApiConfig) -> Router {
    let state = AppState {
        hs,
        limiter: Arc::new(rate_limit::RateLimiter::new(&cfg)),
    };
    client::routes()
        .merge(well_known::routes())
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(tower_http::cors::CorsLayer::very_permissive())
        .with_state(state)
}
