//! Who may call the worker, and the tokens it sends. Two directions, two tokens: callers of the
//! worker show `--auth-token-file`'s (the CLI, scripts, the dashboard's API); the worker shows
//! `--controller-token-file`'s to the controller and its log service. Iris's controller calls
//! workers without a token, so the routes it calls also let in the controller's own addresses
//! (resolved from `--controller-address`). Without a token only loopback callers and the
//! controller get in, unless the bind is loopback or `--insecure` says anyone may. The tokens are
//! never logged.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    Empty(String),
    #[error("the token in {0} has characters a header cannot carry")]
    NotAscii(String),
}

/// Reads a token file; surrounding whitespace (a trailing newline) is not part of the token.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let shown = path.display().to_string();
    let raw = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: shown.clone(),
        source,
    })?;
    let token = raw.trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Empty(shown));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotAscii(shown));
    }
    Ok(token)
}

/// Equal in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The controller's addresses, resolved from `--controller-address` and refreshed while the
/// worker runs (`serve` keeps them current).
#[derive(Clone, Debug, Default)]
pub struct ControllerPeers(Arc<RwLock<Vec<IpAddr>>>);

impl ControllerPeers {
    pub fn set(&self, mut ips: Vec<IpAddr>) {
        ips.iter_mut().for_each(|ip| *ip = ip.to_canonical());
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ips;
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ips = self.0.read().unwrap_or_else(|e| e.into_inner());
        ips.contains(&ip.to_canonical())
    }
}

/// Server side: the check every call of a route passes, in both protocols and the dashboard.
#[derive(Clone, Debug)]
pub struct RequireToken {
    /// `Bearer <token>`, when callers must show one.
    expected: Option<Vec<u8>>,
    /// Without a token: anyone is let in (a loopback bind, `--insecure`), not only loopback
    /// callers and the controller.
    open: bool,
    controller: ControllerPeers,
    /// A route the controller calls: its addresses are let in without the token.
    admits_controller: bool,
}

impl RequireToken {
    /// Every caller shows `token`; without one, anyone may call (tests, the simulator).
    pub fn new(token: Option<&str>) -> RequireToken {
        RequireToken {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
            open: true,
            controller: ControllerPeers::default(),
            admits_controller: false,
        }
    }

    /// The worker's gate: `token` from callers, or a loopback caller when there is no token and
    /// the gate is not `open`; the controller's `peers` on the routes that admit the controller.
    pub fn gate(token: Option<&str>, open: bool, peers: ControllerPeers) -> RequireToken {
        RequireToken {
            open,
            controller: peers,
            ..RequireToken::new(token)
        }
    }

    /// The same gate for a route the controller calls (the task era's WorkerService, the
    /// 2026-06 Reconcile).
    pub fn admitting_controller(&self) -> RequireToken {
        RequireToken {
            admits_controller: true,
            ..self.clone()
        }
    }

    /// The one check every route makes; `peer` is the caller's address when known.
    pub fn check(&self, headers: &http::HeaderMap, peer: Option<IpAddr>) -> Result<(), Status> {
        let from_controller =
            || self.admits_controller && peer.is_some_and(|p| self.controller.contains(p));
        let Some(expected) = &self.expected else {
            let local = peer.is_some_and(|p| p.to_canonical().is_loopback());
            if self.open || local || from_controller() {
                return Ok(());
            }
            return Err(Status::unauthenticated(
                "without --auth-token-file this worker admits only loopback callers and its \
                 controller",
            ));
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, expected) || from_controller() {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

/// The caller's address of a request served by tonic's server (or axum's with connect info).
pub fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    let tonic = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr());
    let axum = || {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
    };
    tonic.or_else(axum).map(|addr| addr.ip())
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        self.check(request.metadata().as_ref(), peer)?;
        Ok(request)
    }
}

/// Client side: adds the bearer token to every call, if there is one.
#[derive(Clone, Default)]
pub struct SendToken {
    header: Option<MetadataValue<Ascii>>,
}

impl SendToken {
    pub fn new(token: Option<&str>) -> SendToken {
        SendToken {
            header: token.and_then(|t| format!("Bearer {t}").parse().ok()),
        }
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Whether `host` (as given to --host) only reaches this machine.
pub fn is_loopback_host(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abd"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        let mut check = RequireToken::new(Some("s3cret"));
        assert!(check.call(Request::new(())).is_err());
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check.call(ok).is_ok());
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_controller_is_let_in_where_it_calls_and_loopback_only_without_a_token() {
        let none = http::HeaderMap::new();
        let peers = ControllerPeers::default();
        peers.set(vec!["10.0.0.2".parse().unwrap()]);
        let gate = RequireToken::gate(Some("s3cret"), false, peers.clone());
        assert!(
            gate.check(&none, ip("10.0.0.2")).is_err(),
            "not a controller route"
        );
        let controller_route = gate.admitting_controller();
        assert!(controller_route.check(&none, ip("10.0.0.2")).is_ok());
        assert!(controller_route.check(&none, ip("::ffff:10.0.0.2")).is_ok());
        assert!(controller_route.check(&none, ip("10.0.0.3")).is_err());
        assert!(
            controller_route.check(&none, ip("127.0.0.1")).is_err(),
            "the token's is asked"
        );
        assert!(controller_route.check(&none, None).is_err());

        let tokenless = RequireToken::gate(None, false, peers).admitting_controller();
        assert!(tokenless.check(&none, ip("127.0.0.1")).is_ok());
        assert!(tokenless.check(&none, ip("10.0.0.2")).is_ok());
        let refused = tokenless.check(&none, ip("10.0.0.9")).unwrap_err();
        assert!(
            refused.message().contains("--auth-token-file"),
            "{refused:?}"
        );
        assert!(tokenless.check(&none, None).is_err());
        assert!(RequireToken::new(None).check(&none, ip("10.0.0.9")).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "::1", "localhost", "127.1.2.3"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "worker.example"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
