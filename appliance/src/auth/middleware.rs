//! The scope-checking layer every admin router is wrapped in, and the open JWKS route.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::{Layer, Service};

use super::verify::{Authenticator, Rejection};
use super::{LocalIssuer, scope};
use crate::http::Problem;

/// Requires a bearer token with a scope for `area` on every request of the wrapped router:
/// GET/HEAD need `<area>:read` or `<area>:write`, other methods `<area>:write`; `admin` grants all.
/// The verified [`super::Principal`] is put into the request extensions.
///
/// `router.layer(auth::require(authn.clone(), "boot"))`
pub fn require(authn: Authenticator, area: &'static str) -> RequireLayer {
    RequireLayer { authn, area }
}

/// `GET /.well-known/jwks.json`: the local issuer's public key (open; RFC 8414 clients and
/// other rackboots fetch it to trust our tokens).
pub fn jwks_router(issuer: &LocalIssuer) -> Router {
    let body = issuer.jwks().to_string();
    Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/jwk-set+json"),
                        (header::CACHE_CONTROL, "public, max-age=300"),
                    ],
                    body,
                )
            }
        }),
    )
}

/// The [`Layer`] [`require`] returns.
#[derive(Debug, Clone)]
pub struct RequireLayer {
    authn: Authenticator,
    area: &'static str,
}

impl<S> Layer<S> for RequireLayer {
    type Service = RequireService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            authn: self.authn.clone(),
            area: self.area,
        }
    }
}

/// The [`Service`] [`RequireLayer`] wraps routes in.
#[derive(Debug, Clone)]
pub struct RequireService<S> {
    inner: S,
    authn: Authenticator,
    area: &'static str,
}

impl<S> Service<Request> for RequireService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone is not ready; swap so the ready one serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authn = self.authn.clone();
        let area = self.area;
        Box::pin(async move {
            let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
            let first = values.next().map(HeaderValue::as_bytes);
            let verified = if values.next().is_some() {
                Err(Rejection::BadHeader)
            } else {
                authn.verify_header(first).await
            };
            let principal = match verified {
                Ok(p) => p,
                Err(why) => {
                    // Never log the token itself; the reason and the route are enough.
                    tracing::info!(reason = %why, method = %req.method(), path = %req.uri().path(), "request refused: bad or missing token");
                    return Ok(unauthorized(&why).into_response());
                }
            };
            if !scope::allows(&principal.scopes, area, req.method()) {
                let need = scope::needed(area, req.method());
                tracing::info!(sub = %principal.subject, need = %need, path = %req.uri().path(), "request refused: missing scope");
                let mut p = Problem::forbidden(format!(
                    "the token for {:?} lacks scope {need} (or {area}:write, or admin)",
                    principal.subject
                ));
                // RFC 6750 §3.1
                p.www_authenticate = Some(format!(
                    "Bearer realm=\"rackboot\", error=\"insufficient_scope\", scope=\"{need}\""
                ));
                return Ok(p.into_response());
            }
            req.extensions_mut().insert(principal);
            inner.call(req).await
        })
    }
}

fn unauthorized(why: &Rejection) -> Problem {
    let mut p = Problem::unauthorized(why.to_string());
    // RFC 6750 §3: no error code when no credentials were sent at all.
    if *why != Rejection::Missing {
        p.www_authenticate = Some("Bearer realm=\"rackboot\", error=\"invalid_token\"".to_owned());
    }
    p
}
