//! The route table: the router, every path it serves (so tests can walk them all), and
//! the rate-limit budget each path's writes draw on.

use std::collections::HashMap;

use axum::{routing::MethodRouter, Router};

use crate::{rate_limit::Class, AppState};

#[derive(Default)]
pub struct Routes {
    pub(crate) router: Router<AppState>,
    pub(crate) paths: Vec<String>,
    /// Path template → the budget its non-GET requests spend, beyond `Requests`.
    pub(crate) classes: HashMap<String, Class>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path.to_owned());
        self
    }

    /// A route whose writes (any method but GET) also spend `class`.
    pub fn limited(
        mut self,
        path: &str,
        method_router: MethodRouter<AppState>,
        class: Class,
    ) -> Self {
        self.classes.insert(path.to_owned(), class);
        self.route(path, method_router)
    }
}

/// Registers a handler under every path ruma knows for the endpoint, optionally spending
/// a rate-limit class.
#[macro_export]
macro_rules! ruma_route {
    ($routes:expr, $req:ty, $handler:expr) => {{
        $crate::ruma_route!(@paths $routes, $req, $handler, None)
    }};
    ($routes:expr, $req:ty, $handler:expr, $class:expr) => {{
        $crate::ruma_route!(@paths $routes, $req, $handler, Some($class))
    }};
    (@paths $routes:expr, $req:ty, $handler:expr, $class:expr) => {{
        use ruma::api::{path_builder::PathBuilder as _, Metadata as _};
        let mut routes = $routes;
        let class: Option<$crate::rate_limit::Class> = $class;
        let filter = axum::routing::MethodFilter::try_from(<$req>::METHOD)
            .expect("ruma methods are standard");
        for path in <$req>::PATH_BUILDER.all_paths() {
            let method_router = axum::routing::on(filter, $handler);
            routes = match class {
                Some(c) => routes.limited(path, method_router, c),
                None => routes.route(path, method_router),
            };
        }
        routes
    }};
}
