//! A Connect unary client over HTTP/1.1 (what Iris's controller, a uvicorn app, speaks): POST
//! with `application/proto` (or JSON), `connect-protocol-version: 1` and `connect-timeout-ms`.
//!
//! Connections are dialled through a [`Dialer`] (real TCP, or the simulator's network) and kept
//! in a small idle pool. A connection whose call is abandoned (deadline, dropped future) is
//! closed at once rather than left to a half-open socket, and an idle one is not reused after
//! [`IDLE_MAX`], shorter than uvicorn's 5 s keep-alive, so a call rarely races the server's close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::Status;

use super::codec::{self, BODY_BYTES_MAX, Codec, Encoding};

/// An idle connection older than this is closed instead of reused.
pub const IDLE_MAX: Duration = Duration::from_secs(4);
/// Idle connections kept per client.
const IDLE_CONNECTIONS_MAX: usize = 4;

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>;
/// Opens a byte stream to `host:port`.
pub type Dialer = Arc<dyn Fn(String) -> DialFuture + Send + Sync>;

/// Plain TCP with Nagle's algorithm off (small requests must not wait).
pub fn tcp_dialer() -> Dialer {
    Arc::new(|authority: String| {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(authority).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    })
}

/// A connection: its sender and the task driving it, aborted when the connection is dropped.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Clone)]
pub struct ConnectClient {
    authority: String,
    dial: Dialer,
    authorization: Option<HeaderValue>,
    codec: Codec,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl ConnectClient {
    /// A client of the server at `authority` (`host:port`); nothing is dialled until a call.
    pub fn new(authority: &str, dial: Dialer, token: Option<&str>) -> ConnectClient {
        ConnectClient {
            authority: authority.to_string(),
            dial,
            authorization: token.and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok()),
            codec: Codec::Proto,
            idle: Arc::default(),
        }
    }

    /// Speaks `codec` (protobuf by default; JSON for tools and benchmarks).
    pub fn with_codec(mut self, codec: Codec) -> ConnectClient {
        self.codec = codec;
        self
    }

    /// Calls `path` (`/package.Service/Method`) and waits at most `timeout` for the answer.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, Status>
    where
        Req: Message + Serialize,
        Resp: Message + Default + DeserializeOwned,
    {
        let body = Bytes::from(self.codec.encode(request));
        let call = self.call(path, body, timeout);
        let (status, encoding, body) = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no answer within {timeout:?}")))??;
        let body = encoding.decompress(body, BODY_BYTES_MAX)?;
        if status != StatusCode::OK {
            return Err(codec::parse_error(status, &body));
        }
        self.codec
            .decode(&body)
            .map_err(|e| Status::internal(format!("the answer: {}", e.message())))
    }

    /// Sends once on a pooled connection; a reused connection the server had closed gets one
    /// retry on a fresh one (the controller's calls are idempotent).
    async fn call(
        &self,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Encoding, Bytes), Status> {
        if let Some(conn) = self.checkout() {
            match self.exchange(conn, path, body.clone(), timeout).await {
                Err(Sent::NotAnswered(e)) => {
                    tracing::debug!(error = %e, "pooled connection closed; redialling")
                }
                other => return other.map_err(Sent::into_status),
            }
        }
        let conn = self.connect().await?;
        self.exchange(conn, path, body, timeout)
            .await
            .map_err(Sent::into_status)
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < IDLE_MAX && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, Status> {
        let unavailable =
            |e: &dyn std::fmt::Display| Status::unavailable(format!("{}: {e}", self.authority));
        let stream = (self.dial)(self.authority.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(&e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        })
        .abort_handle();
        Ok(Conn { sender, driver })
    }

    async fn exchange(
        &self,
        mut conn: Conn,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Encoding, Bytes), Sent> {
        let request = self.request(path, body, timeout);
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(Sent::NotAnswered)?;
        let status = response.status();
        let encoding = Encoding::of(response.headers()).map_err(Sent::Failed)?;
        let body = Limited::new(response.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| Sent::Failed(Status::unavailable(format!("reading the answer: {e}"))))?
            .to_bytes();
        self.checkin(conn);
        Ok((status, encoding, body))
    }

    fn request(&self, path: &str, body: Bytes, timeout: Duration) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::builder()
            .method(Method::POST)
            // Origin form: the low-level connection writes the URI as given.
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, self.codec.content_type())
            .header(codec::PROTOCOL_VERSION_HEADER, "1")
            .header(codec::TIMEOUT_HEADER, timeout.as_millis().to_string())
            .body(Full::new(body))
            .expect("a valid request");
        if let Some(auth) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        request
    }
}

/// How an exchange failed: before any answer (worth a retry on a fresh connection), or after.
enum Sent {
    NotAnswered(hyper::Error),
    Failed(Status),
}

impl Sent {
    fn into_status(self) -> Status {
        match self {
            Sent::NotAnswered(e) => Status::unavailable(format!("sending: {e}")),
            Sent::Failed(status) => status,
        }
    }
}
