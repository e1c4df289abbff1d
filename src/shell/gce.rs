//! The GCE metadata server: what a cloud VM is (instance, zone, preemptible) and, on a TPU VM,
//! which slice it belongs to and which worker of it it is, as Iris's `env_probe.py` reads it.
//! A TPU VM exports none of this as variables; only the metadata server knows it.
//!
//! The server is found as Google's client libraries find it: `--gce-metadata-host`, else
//! `GCE_METADATA_HOST`, else `metadata.google.internal` when the DMI tables say the machine is a
//! Google VM (Iris's `_is_gcp_vm`). Every read carries `Metadata-Flavor: Google` and gives up
//! after [`READ_TIMEOUT`], so a machine whose server does not answer still starts.
//!
//! Invariant: a TPU VM whose worker number cannot be read is never taken for worker 0 (Iris did
//! that once and a v4-2048 slice lost one of its 256 workers to a duplicate id); it registers as
//! no TPU worker and says why ([`GceFacts::trouble`]).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// How long one metadata read may take (Iris's is 2 s).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_BYTES_MAX: usize = 1 << 20;
const ROOT: &str = "/computeMetadata/v1/instance";

/// Where the metadata server is (`host[:port]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataServer {
    authority: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata server {0}: {1}")]
    Io(String, String),
    #[error("metadata server {0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("metadata server {0}: {1} for {2}")]
    Status(String, StatusCode, String),
}

impl MetadataServer {
    pub fn new(host: &str) -> MetadataServer {
        let host = host
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let authority = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        MetadataServer { authority }
    }

    /// The flag's, the environment's, or the well-known name on a Google VM; `None` elsewhere
    /// or when told `off`.
    pub fn locate(flag: Option<&str>) -> Option<MetadataServer> {
        let env = std::env::var("GCE_METADATA_HOST").ok();
        let given = flag.or(env.as_deref()).filter(|h| !h.trim().is_empty());
        match given {
            Some("off") => None,
            Some(host) => Some(MetadataServer::new(host)),
            None => is_google_vm().then(|| MetadataServer::new("metadata.google.internal")),
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The text at `instance/<path>`, trimmed; `None` when the server has no such key.
    pub async fn read(&self, path: &str) -> Result<Option<String>, MetadataError> {
        let (status, body) = self.get(path, READ_TIMEOUT).await?;
        match status {
            StatusCode::OK => Ok(Some(body.trim().to_string()).filter(|v| !v.is_empty())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(MetadataError::Status(
                self.authority.clone(),
                other,
                path.to_string(),
            )),
        }
    }

    /// The value at `instance/<path>` once it differs from `last` (the server's long poll,
    /// `?wait_for_change=true&last_etag=`), with its new etag; gives up after `wait`.
    pub async fn wait_for_change(
        &self,
        path: &str,
        etag: &str,
        wait: Duration,
    ) -> Result<(String, String), MetadataError> {
        let query = format!(
            "{path}?wait_for_change=true&last_etag={etag}&timeout_sec={}",
            wait.as_secs().max(1)
        );
        let (status, body, new_etag) = self.get_tagged(&query, wait + READ_TIMEOUT).await?;
        if status != StatusCode::OK {
            return Err(MetadataError::Status(self.authority.clone(), status, query));
        }
        Ok((body.trim().to_string(), new_etag))
    }

    async fn get(
        &self,
        path: &str,
        limit: Duration,
    ) -> Result<(StatusCode, String), MetadataError> {
        let (status, body, _) = self.get_tagged(path, limit).await?;
        Ok((status, body))
    }

    async fn get_tagged(
        &self,
        path: &str,
        limit: Duration,
    ) -> Result<(StatusCode, String, String), MetadataError> {
        let call = self.call(path);
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(MetadataError::Timeout(self.authority.clone(), limit)),
        }
    }

    async fn call(&self, path: &str) -> Result<(StatusCode, String, String), MetadataError> {
        let io =
            |e: &dyn std::fmt::Display| MetadataError::Io(self.authority.clone(), e.to_string());
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| io(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io(&e))?;
        let driver = tokio::spawn(connection);
        let request = Request::get(format!("{ROOT}/{path}"))
            .header(http::header::HOST, self.authority.as_str())
            .header("metadata-flavor", "Google")
            .body(Empty::<Bytes>::new())
            .map_err(|e| io(&e))?;
        let answer = sender.send_request(request).await.map_err(|e| io(&e));
        let result = match answer {
            Ok(response) => {
                let status = response.status();
                let etag = response
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = Limited::new(response.into_body(), BODY_BYTES_MAX)
                    .collect()
                    .await
                    .map_err(|e| io(&e))?
                    .to_bytes();
                Ok((status, String::from_utf8_lossy(&body).into_owned(), etag))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

/// Iris's `_is_gcp_vm`: the DMI product or vendor names Google.
fn is_google_vm() -> bool {
    [
        "/sys/class/dmi/id/product_name",
        "/sys/class/dmi/id/sys_vendor",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .any(|v| v.to_lowercase().contains("google"))
}

/// What the metadata server says of this VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GceFacts {
    pub instance_name: String,
    /// `us-central2-b` (the server says `projects/<n>/zones/us-central2-b`).
    pub zone: String,
    pub preemptible: bool,
    pub tpu: Option<TpuVm>,
    /// Why this VM is not the TPU worker its metadata says it is (no worker number).
    pub trouble: Option<String>,
}

/// One VM of a TPU slice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TpuVm {
    /// The slice: the instance name without its `-w-N` suffix.
    pub slice: String,
    /// `v5litepod-16`.
    pub accelerator_type: String,
    /// This VM's index in the slice (`agent-worker-number`).
    pub worker_id: u32,
    /// The slice's VMs' addresses, comma-separated, in worker order.
    pub hostnames: String,
    /// `2,2,1` (from `tpu-env`).
    pub chips_per_host_bounds: String,
}

impl GceFacts {
    /// The region of the zone: `us-central2-b` -> `us-central2`.
    pub fn region(&self) -> Option<&str> {
        self.zone.rsplit_once('-').map(|(region, _)| region)
    }
}

/// Reads the VM's facts; a server that does not answer gives an error, a key it lacks nothing.
pub async fn probe(server: &MetadataServer) -> Result<GceFacts, MetadataError> {
    let instance_name = server.read("name").await?.unwrap_or_default();
    let zone = server.read("zone").await?.unwrap_or_default();
    let zone = zone.rsplit('/').next().unwrap_or_default().to_string();
    let preemptible = server
        .read("scheduling/preemptible")
        .await?
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut facts = GceFacts {
        instance_name,
        zone,
        preemptible,
        ..GceFacts::default()
    };
    let Some(accelerator_type) = server.read("attributes/accelerator-type").await? else {
        return Ok(facts);
    };
    let number = server.read("attributes/agent-worker-number").await?;
    let Some(worker_id) = number.as_deref().and_then(|n| n.parse::<u32>().ok()) else {
        facts.trouble = Some(format!(
            "this TPU VM ({accelerator_type}, instance {:?}) has no readable worker number \
             (metadata attributes/agent-worker-number: {number:?}); it does not take TPU work \
             rather than pose as worker 0",
            facts.instance_name
        ));
        return Ok(facts);
    };
    let endpoints = server.read("attributes/worker-network-endpoints").await?;
    let tpu_env = server.read("attributes/tpu-env").await?;
    facts.tpu = Some(TpuVm {
        slice: slice_name(&facts.instance_name),
        accelerator_type,
        worker_id,
        hostnames: endpoints
            .as_deref()
            .map(worker_hostnames)
            .unwrap_or_default(),
        chips_per_host_bounds: tpu_env
            .as_deref()
            .map(chips_per_host_bounds)
            .unwrap_or_default(),
    });
    Ok(facts)
}

/// Iris's `_extract_tpu_name`: the instance name without a trailing `-w-N` (or `-wN`, `-w`).
pub fn slice_name(instance: &str) -> String {
    let instance = instance.trim();
    let Some(at) = instance.rfind("-w") else {
        return instance.to_string();
    };
    let tail = instance[at + 2..].trim_start_matches('-');
    match tail.chars().all(|c| c.is_ascii_digit()) {
        true => instance[..at].to_string(),
        false => instance.to_string(),
    }
}

/// Iris's `_extract_tpu_worker_hostnames`: of each `id:name:address` entry, the first field
/// with a dot.
pub fn worker_hostnames(endpoints: &str) -> String {
    let hosts: Vec<&str> = endpoints
        .split(',')
        .filter_map(|entry| entry.split(':').map(str::trim).find(|f| f.contains('.')))
        .collect();
    hosts.join(",")
}

/// The `CHIPS_PER_HOST_BOUNDS: '2,2,1'` line of the `tpu-env` blob.
pub fn chips_per_host_bounds(tpu_env: &str) -> String {
    tpu_env
        .lines()
        .filter_map(|l| l.strip_prefix("CHIPS_PER_HOST_BOUNDS:"))
        .map(|v| v.trim().trim_matches('\'').trim().to_string())
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_are_read_as_iris_reads_them() {
        assert_eq!(slice_name("my-slice-w-3"), "my-slice");
        assert_eq!(slice_name("my-slice-w3"), "my-slice");
        assert_eq!(slice_name("my-slice-w-"), "my-slice");
        assert_eq!(slice_name("my-slice-worker"), "my-slice-worker");
        assert_eq!(slice_name("plain"), "plain");
        assert_eq!(
            worker_hostnames("0:w0:10.0.0.2,1:w1:10.0.0.3,bad"),
            "10.0.0.2,10.0.0.3"
        );
        let env = "ACCELERATOR_TYPE: 'v5litepod-16'\nCHIPS_PER_HOST_BOUNDS: '2,2,1'\n";
        assert_eq!(chips_per_host_bounds(env), "2,2,1");
        assert_eq!(chips_per_host_bounds("nothing"), "");
        let facts = GceFacts {
            zone: "us-central2-b".into(),
            ..GceFacts::default()
        };
        assert_eq!(facts.region(), Some("us-central2"));
        assert_eq!(
            MetadataServer::new("http://127.0.0.1:8123/").authority(),
            "127.0.0.1:8123"
        );
        assert_eq!(
            MetadataServer::new("metadata.google.internal").authority(),
            "metadata.google.internal:80"
        );
    }
}
