//! Who may call what: every route of the API and the least role it needs, in one
//! table. The router records the routes it serves (`ApiRouter`), and a test checks
//! that each one has exactly one entry here, so a route cannot ship without a
//! declared policy. `authn::guard` enforces the table on every request.

use crate::auth::Role;
use axum::http::Method;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, credentials or not (`/health`, the login itself).
    Public,
    /// A session or a token whose role includes this one.
    Role(Role),
}

/// One route: method, path pattern as given to the router, and its access.
pub struct RoutePolicy {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: Method, path: &'static str, access: Access) -> RoutePolicy {
    RoutePolicy { method, path, access }
}

const VIEWER: Access = Access::Role(Role::Viewer);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);

/// The whole API. `HEAD` follows `GET`. Handlers may narrow further (a viewer
/// manages only their own tokens), never widen.
pub const POLICY: &[RoutePolicy] = &[
    route(Method::GET, "/health", Access::Public),
    // Signing in and out.
    route(Method::POST, "/api/v1/auth/login", Access::Public),
    route(Method::POST, "/api/v1/auth/logout", Access::Public),
    route(Method::GET, "/api/v1/auth/me", VIEWER),
    route(Method::PUT, "/api/v1/auth/password", VIEWER),
    // Reading is for every role.
    route(Method::GET, "/api/v1/pipelines", VIEWER),
    route(Method::GET, "/api/v1/pipelines/{name}", VIEWER),
    route(Method::GET, "/api/v1/runs", VIEWER),
    route(Method::GET, "/api/v1/runs/{id}", VIEWER),
    route(Method::GET, "/api/v1/runs/{id}/logs", VIEWER),
    route(Method::GET, "/api/v1/runs/{id}/logs/stream", VIEWER),
    route(Method::GET, "/api/v1/runners", VIEWER),
    // Operating: starting and stopping work.
    route(Method::POST, "/api/v1/pipelines/{name}/run", OPERATOR),
    route(Method::POST, "/api/v1/runs/{id}/cancel", OPERATOR),
    // Own tokens for everyone; others' tokens only for admins (checked in the handler).
    route(Method::GET, "/api/v1/tokens", VIEWER),
    route(Method::POST, "/api/v1/tokens", VIEWER),
    route(Method::DELETE, "/api/v1/tokens/{id}", VIEWER),
    // Administration.
    route(Method::GET, "/api/v1/users", ADMIN),
    route(Method::POST, "/api/v1/users", ADMIN),
    route(Method::GET, "/api/v1/users/{id}", ADMIN),
    route(Method::PUT, "/api/v1/users/{id}", ADMIN),
    route(Method::DELETE, "/api/v1/users/{id}", ADMIN),
    route(Method::GET, "/api/v1/audit", ADMIN),
    // Enrolling and revoking runners.
    route(Method::GET, "/api/v1/runners/registration-tokens", ADMIN),
    route(Method::POST, "/api/v1/runners/registration-tokens", ADMIN),
    route(Method::DELETE, "/api/v1/runners/registration-tokens/{id}", ADMIN),
    route(Method::DELETE, "/api/v1/runners/{id}", ADMIN),
];

/// What the table says about a request, given the route pattern the router matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The route and method are in the table.
    Declared(Access),
    /// A known path with another method: the router answers 405 (to signed-in callers).
    OtherMethod,
    /// No route matched: the router answers 404 (to signed-in callers).
    NoRoute,
    /// A route the router serves but the table does not name: refused (fail closed).
    Undeclared,
}

pub fn decide(method: &Method, matched_path: Option<&str>) -> Decision {
    let Some(path) = matched_path else { return Decision::NoRoute };
    let method = if method == Method::HEAD { &Method::GET } else { method };
    let mut path_known = false;
    for entry in POLICY.iter().filter(|e| e.path == path) {
        if entry.method == *method {
            return Decision::Declared(entry.access);
        }
        path_known = true;
    }
    if path_known { Decision::OtherMethod } else { Decision::Undeclared }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_the_table() {
        assert_eq!(decide(&Method::GET, Some("/health")), Decision::Declared(Access::Public));
        assert_eq!(decide(&Method::HEAD, Some("/api/v1/runs")), Decision::Declared(VIEWER));
        assert_eq!(decide(&Method::POST, Some("/api/v1/runs/{id}/cancel")), Decision::Declared(OPERATOR));
        assert_eq!(decide(&Method::DELETE, Some("/api/v1/runs/{id}")), Decision::OtherMethod);
        assert_eq!(decide(&Method::GET, Some("/api/v1/secret-admin-panel")), Decision::Undeclared);
        assert_eq!(decide(&Method::GET, None), Decision::NoRoute);
    }

    #[test]
    fn each_route_is_declared_once() {
        for (i, a) in POLICY.iter().enumerate() {
            let twins = POLICY[i + 1..].iter().filter(|b| a.method == b.method && a.path == b.path).count();
            assert_eq!(twins, 0, "{} {} is declared twice", a.method, a.path);
        }
    }
}
