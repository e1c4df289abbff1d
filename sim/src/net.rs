//! gRPC and Connect over turmoil's simulated TCP: a connector for tonic clients, a dialer for
//! Connect clients, and an accepted-stream wrapper for servers (tonic needs `Connected` on what
//! it serves). Which protocol a worker speaks is decided here too.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use futures_util::Stream;
use hyper_util::rt::TokioIo;
use iris_worker::shell::connect::client::{DialFuture, Dialer, Io};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};
use turmoil::net::{TcpListener, TcpStream};

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

/// Dials `host:port` of the URI through turmoil's DNS and network.
fn connector()
-> impl tower::Service<Uri, Response = TokioIo<TcpStream>, Error = io::Error, Future = ConnectFuture>
+ Clone {
    tower::service_fn(|uri: Uri| {
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::other("uri without authority"))?
                .to_string();
            let stream = TcpStream::connect(authority).await?;
            Ok(TokioIo::new(stream))
        }) as ConnectFuture
    })
}

/// Even workers speak Connect with the controller (both ways), odd ones gRPC: every seed with
/// two workers or more exercises both protocols, servers and clients, under its faults.
pub fn speaks_connect(worker: usize) -> bool {
    worker.is_multiple_of(2)
}

/// Worker 2 (of the default three) speaks today's Iris, the 2026-06 reconcile protocol: the
/// controller drives it with Reconcile, it registers with Register and pushes its logs to the
/// log service. Workers 0 and 1 speak the task era (Connect and gRPC).
pub fn speaks_reconcile(worker: usize) -> bool {
    worker % 3 == 2
}

/// Dials for a Connect client over the simulated network.
pub fn dialer() -> Dialer {
    Arc::new(|authority: String| {
        Box::pin(async move {
            let stream = TcpStream::connect(authority).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        }) as DialFuture
    })
}

/// A lazily connecting channel over the simulated network. The endpoint must set HTTP/2
/// keepalive: turmoil never retransmits after a partition, so a connection without it stays
/// wedged forever (as a half-open one does in real life).
pub fn channel(endpoint: Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(connector())
}

/// An accepted simulated connection, as tonic's server wants it.
pub struct Accepted(pub TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Listens on `port` of the current simulated host; yields accepted connections.
pub async fn incoming(port: u16) -> io::Result<impl Stream<Item = io::Result<Accepted>>> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await?;
    Ok(futures_util::stream::unfold(
        listener,
        |listener| async move {
            let next = listener.accept().await.map(|(s, _)| Accepted(s));
            Some((next, listener))
        },
    ))
}
