//! Connect unary calls served with axum, each handed to the same service code gRPC calls (the
//! tonic service traits), so validation, limits, status codes, the token check and metrics are
//! one implementation for both protocols.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::codec::{self, BODY_BYTES_MAX, Codec, Encoding};
use crate::shell::auth::{RequireToken, peer_ip};

/// A Connect error response.
pub fn error_response(status: &Status) -> Response {
    (
        codec::http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        codec::error_body(status),
    )
        .into_response()
}

fn unsupported_media_type(content_type: Option<&HeaderValue>) -> Response {
    let given = content_type.map_or("none".into(), |v| format!("{v:?}"));
    let status = Status::unimplemented(format!(
        "content-type {given} is not a Connect unary type: use application/proto or \
         application/json (gRPC clients send application/grpc)"
    ));
    let mut response = error_response(&status);
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        "accept-post",
        HeaderValue::from_static("application/proto, application/json"),
    );
    response
}

pub fn unknown_method(service: &str, method: &str) -> Response {
    let status = Status::unimplemented(format!("{service} has no method {method:?}"));
    let mut response = error_response(&status);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// One Connect unary call: checks the token, decodes the body, runs `call` under the client's
/// deadline and encodes its answer in the request's codec (gzipped when the client offers gzip
/// and the answer is worth it).
pub async fn unary<Req, Resp, F, Fut>(request: Request, token: &RequireToken, call: F) -> Response
where
    Req: Message + Default + DeserializeOwned,
    Resp: Message + Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let Some(codec) = Codec::of(request.headers()) else {
        return unsupported_media_type(request.headers().get(header::CONTENT_TYPE));
    };
    let gzip_ok = Encoding::accepts_gzip(request.headers());
    match answer(request, codec, token, call).await {
        Ok(message) => ok_response(codec, &codec.encode(&message), gzip_ok),
        Err(status) => error_response(&status),
    }
}

async fn answer<Req, Resp, F, Fut>(
    request: Request,
    codec: Codec,
    token: &RequireToken,
    call: F,
) -> Result<Resp, Status>
where
    Req: Message + Default + DeserializeOwned,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let (mut parts, body) = request.into_parts();
    token.check(&parts.headers, peer_ip(&parts.extensions))?;
    let deadline = codec::timeout(&parts.headers)?;
    let body = axum::body::to_bytes(body, BODY_BYTES_MAX)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(inner) if inner.is::<http_body_util::LengthLimitError>() => {
                Status::resource_exhausted(format!(
                    "the request body is larger than {BODY_BYTES_MAX} bytes"
                ))
            }
            _ => Status::invalid_argument(format!("reading the request body: {e}")),
        })?;
    let message: Req = codec::decode_request(codec, &parts.headers, body)?;
    parts.extensions.insert(Protocol::Connect);
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    let response = match deadline {
        Some(limit) => tokio::time::timeout(limit, call(request))
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no answer within {limit:?}")))??,
        None => call(request).await?,
    };
    Ok(response.into_inner())
}

fn ok_response(codec: Codec, body: &[u8], gzip_ok: bool) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, codec.content_type());
    let body = if gzip_ok && body.len() >= codec::COMPRESS_BYTES_MIN {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        codec::gzip(body)
    } else {
        body.to_vec()
    };
    builder.body(Body::from(body)).expect("a valid response")
}

/// A route's state: the service it calls and the token every call must carry.
pub struct Served<S> {
    pub service: Arc<S>,
    pub token: RequireToken,
}

// By hand: a derive would ask `S: Clone`, and only the `Arc` is cloned.
impl<S> Clone for Served<S> {
    fn clone(&self) -> Self {
        Served {
            service: self.service.clone(),
            token: self.token.clone(),
        }
    }
}

/// Which protocol a call came in on; the Connect server marks its requests, gRPC is the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Connect,
}

impl Protocol {
    pub fn of<T>(request: &tonic::Request<T>) -> Protocol {
        request
            .extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc)
    }

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Connect => "connect",
        }
    }
}
