//! Bearer-token authentication: the worker's service refuses calls without the operator's token,
//! and the worker's own clients (controller client, CLI) send it. The token is never logged.

use std::path::Path;

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

/// Server side: admits a call only with `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct RequireToken {
    expected: Option<Vec<u8>>,
}

impl RequireToken {
    pub fn new(token: Option<&str>) -> RequireToken {
        RequireToken {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }

    /// The one check both protocols make: gRPC through the interceptor, Connect directly.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, expected) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata().as_ref())?;
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
