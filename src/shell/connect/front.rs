//! One port, both protocols: a tower layer in front of tonic's routes. gRPC and Connect use the
//! same paths, so the content type decides: `application/grpc*` goes to tonic, everything else
//! (Connect unary calls, the dashboard, the JSON API, /metrics) to an axum router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use http::{Request, Response, header};
use tower::{Layer, Service, ServiceExt};

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Wraps tonic's routes in a [`Front`].
#[derive(Clone)]
pub struct FrontLayer {
    http: Router,
}

impl FrontLayer {
    pub fn new(http: Router) -> FrontLayer {
        FrontLayer { http }
    }
}

impl<G> Layer<G> for FrontLayer {
    type Service = Front<G>;

    fn layer(&self, grpc: G) -> Front<G> {
        Front {
            grpc,
            http: self.http.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Front<G> {
    grpc: G,
    http: Router,
}

type Body = tonic::body::Body;

impl<G> Service<Request<Body>> for Front<G>
where
    G: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    G::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is asked of the chosen service in `call` (oneshot): which one is not known yet.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if is_grpc(&request) {
            Box::pin(self.grpc.clone().oneshot(request))
        } else {
            let http = self.http.clone();
            Box::pin(async move {
                let response = http.oneshot(request.map(axum::body::Body::new)).await?;
                Ok(response.map(Body::new))
            })
        }
    }
}
