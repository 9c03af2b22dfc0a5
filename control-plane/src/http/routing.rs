//! `ApiRouter`: axum's `Router` plus the list of (method, path) it serves, so the
//! policy test can compare what is served with what `policy::POLICY` declares
//! (axum keeps its routes to itself). Resource modules add routes only through it.

use super::ApiState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};

#[derive(Default)]
pub struct ApiRouter {
    router: Router<ApiState>,
    routes: Vec<(Method, &'static str)>,
}

impl ApiRouter {
    pub fn new() -> Self {
        ApiRouter::default()
    }

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<ApiState>) -> Self {
        self.routes.push((method, path));
        // axum merges the methods of separate `route` calls on one path.
        self.router = self.router.route(path, route);
        self
    }

    pub fn get<H: Handler<T, ApiState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::GET, path, get(handler))
    }

    pub fn post<H: Handler<T, ApiState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::POST, path, post(handler))
    }

    pub fn put<H: Handler<T, ApiState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::PUT, path, put(handler))
    }

    pub fn delete<H: Handler<T, ApiState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::DELETE, path, delete(handler))
    }

    pub fn merge(mut self, other: ApiRouter) -> Self {
        self.routes.extend(other.routes);
        self.router = self.router.merge(other.router);
        self
    }

    /// Every (method, path) added, in order.
    pub fn routes(&self) -> &[(Method, &'static str)] {
        &self.routes
    }

    pub fn into_router(self) -> Router<ApiState> {
        self.router
    }
}
