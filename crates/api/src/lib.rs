//! Tessera's HTTP surface: an axum [`Router`] over the core's [`Homeserver`].

mod admin;
pub mod authenticate;
pub mod client;
pub mod error;
pub mod extract;
mod guests;
pub mod rate_limit;
mod routing;
mod ruma_wrapper;
mod well_known;

use std::{collections::HashMap, sync::Arc};

use axum::{extract::DefaultBodyLimit, middleware, Router};
use tessera_core::Homeserver;

pub use error::ApiError;
pub use rate_limit::{Budget, RateLimits};
pub use routing::Routes;
pub use ruma_wrapper::{Ruma, RumaResponse};

/// HTTP-level limits and switches.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub rate_limits: RateLimits,
    /// Largest request body accepted (media uploads, streamed, have their own limit).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_limits: RateLimits::default(),
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub hs: Arc<Homeserver>,
    pub limiter: Arc<rate_limit::RateLimiter>,
    /// Route template → the rate-limit class its writes spend.
    pub(crate) classes: Arc<HashMap<String, rate_limit::Class>>,
}

fn routes() -> Routes {
    admin::routes(well_known::routes(client::routes(Routes::new())))
}

/// Every path template the router serves (for tests that walk them all).
pub fn served_paths() -> Vec<String> {
    routes().paths
}

pub fn router(hs: Arc<Homeserver>, cfg: ApiConfig) -> Router {
    let Routes {
        router, classes, ..
    } = routes();
    let state = AppState {
        hs,
        limiter: Arc::new(rate_limit::RateLimiter::new(&cfg.rate_limits)),
        classes: Arc::new(classes),
    };
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate::authenticate,
        ))
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        // Last lines of defence: a panic is a logged 500 `M_UNKNOWN`, and any error
        // answered without a Matrix body (by a layer or an extractor) gets one.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked as fn(Box<dyn std::any::Any + Send>) -> _,
        ))
        .layer(middleware::map_response(error::matrix_body))
        .layer(tower_http::cors::CorsLayer::very_permissive())
        .with_state(state)
}
