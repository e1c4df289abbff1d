//! The controller client: RegisterWorker (also the heartbeat) and ReportTaskState, each call with
//! a deadline. Two transports, picked by the address as Iris does: Connect unary over HTTP/1.1
//! (`http://HOST:PORT` or a bare `HOST:PORT`; Iris's controller is a uvicorn app) and gRPC
//! (`grpc://HOST:PORT`) over a channel with HTTP/2 keepalive. Either way an outage or a
//! half-open connection only fails calls (which the core retries) and never wedges the worker.

use std::time::Duration;

use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::core::TaskReport;
use crate::proto;
use crate::proto::controller::{RegisterWorkerRequest, RegisterWorkerResponse};
use crate::proto::controller_service_client::ControllerServiceClient;
use crate::shell::auth::SendToken;
use crate::shell::connect::client::{ConnectClient, tcp_dialer};

pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

const REGISTER_PATH: &str = "/iris.cluster.ControllerService/RegisterWorker";
const REPORT_PATH: &str = "/iris.cluster.ControllerService/ReportTaskState";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("the controller address is empty")]
    Empty,
    #[error(
        "{0:?}: https is not supported yet (no TLS client is built in); use http:// on a \
         private network"
    )]
    Tls(String),
    #[error(
        "{0:?}: unknown scheme; use http://HOST:PORT or HOST:PORT (Connect) or grpc://HOST:PORT"
    )]
    Scheme(String),
    #[error("{0:?} is not HOST:PORT")]
    Authority(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerClientError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("the gRPC endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
}

/// Which protocol reaches the controller, and where (`host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerAddress {
    Connect(String),
    Grpc(String),
}

impl ControllerAddress {
    pub fn parse(address: &str) -> Result<ControllerAddress, AddressError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        let (scheme, rest) = address.split_once("://").unwrap_or(("", address));
        let authority = rest.trim_end_matches('/');
        let valid = authority
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| a.port_u16().is_some() && !authority.contains(['/', '@']));
        if !valid {
            return Err(AddressError::Authority(address.to_string()));
        }
        match scheme {
            "" | "http" => Ok(ControllerAddress::Connect(authority.to_string())),
            "grpc" => Ok(ControllerAddress::Grpc(authority.to_string())),
            "https" => Err(AddressError::Tls(address.to_string())),
            _ => Err(AddressError::Scheme(address.to_string())),
        }
    }
}

/// The gRPC endpoint (`grpc://` stripped) with the worker's deadlines and HTTP/2 keepalive, not
/// yet connected (the simulator connects it over its own network).
pub fn endpoint(authority: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{authority}"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

#[derive(Clone)]
enum Transport {
    Grpc(ControllerServiceClient<InterceptedService<Channel, SendToken>>),
    Connect(ConnectClient),
}

/// Who the worker is, as it tells the controller.
#[derive(Clone)]
pub struct Registration {
    pub worker_id: String,
    /// `host:port`, no scheme.
    pub address: String,
    pub metadata: proto::WorkerMetadata,
}

#[derive(Clone)]
pub struct ControllerClient {
    transport: Transport,
    me: Registration,
}

impl ControllerClient {
    pub fn new(
        controller_address: &str,
        me: Registration,
        token: Option<&str>,
    ) -> Result<ControllerClient, ControllerClientError> {
        Ok(match ControllerAddress::parse(controller_address)? {
            ControllerAddress::Connect(authority) => ControllerClient::with_connect(
                ConnectClient::new(&authority, tcp_dialer(), token),
                me,
            ),
            ControllerAddress::Grpc(authority) => {
                let channel = endpoint(&authority)?.connect_lazy();
                ControllerClient::with_channel(channel, me, token)
            }
        })
    }

    /// gRPC over `channel`.
    pub fn with_channel(channel: Channel, me: Registration, token: Option<&str>) -> Self {
        let client = ControllerServiceClient::with_interceptor(channel, SendToken::new(token));
        ControllerClient {
            transport: Transport::Grpc(client),
            me,
        }
    }

    /// Connect over `client`.
    pub fn with_connect(client: ConnectClient, me: Registration) -> Self {
        ControllerClient {
            transport: Transport::Connect(client),
            me,
        }
    }

    async fn register_worker(
        &self,
        request: RegisterWorkerRequest,
    ) -> Result<RegisterWorkerResponse, Status> {
        match &self.transport {
            Transport::Grpc(client) => {
                let mut client = client.clone();
                Ok(within_deadline(client.register_worker(request))
                    .await??
                    .into_inner())
            }
            Transport::Connect(client) => client.unary(REGISTER_PATH, &request, CALL_TIMEOUT).await,
        }
    }

    async fn report_task_state(
        &self,
        request: proto::controller::ReportTaskStateRequest,
    ) -> Result<(), Status> {
        match &self.transport {
            Transport::Grpc(client) => {
                let mut client = client.clone();
                within_deadline(client.report_task_state(request)).await??;
            }
            Transport::Connect(client) => {
                client
                    .unary::<_, proto::controller::ReportTaskStateResponse>(
                        REPORT_PATH,
                        &request,
                        CALL_TIMEOUT,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Registers (or heartbeats); returns `should_reset`. A refusal is an error.
    pub async fn register(&self, running_task_ids: Vec<String>) -> Result<bool, String> {
        let request = RegisterWorkerRequest {
            worker_id: self.me.worker_id.clone(),
            address: self.me.address.clone(),
            metadata: Some(self.me.metadata.clone()),
            running_task_ids,
        };
        let response = self
            .register_worker(request)
            .await
            .map_err(|s| format!("register failed: {}: {}", s.code(), s.message()))?;
        if !response.accepted {
            return Err("controller refused the registration".into());
        }
        Ok(response.should_reset)
    }

    pub async fn report(&self, report: &TaskReport) -> Result<(), String> {
        self.report_task_state(report.to_proto())
            .await
            .map_err(|s| format!("report failed: {}: {}", s.code(), s.message()))
    }
}

/// A gRPC call bounded by [`CALL_TIMEOUT`] even if the channel's own timeout never fires.
async fn within_deadline<T>(call: impl std::future::Future<Output = T>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Status::deadline_exceeded("no answer within the call timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pick_the_protocol() {
        let connect = |a: &str| Ok(ControllerAddress::Connect(a.to_string()));
        assert_eq!(
            ControllerAddress::parse("10.0.0.1:10000"),
            connect("10.0.0.1:10000")
        );
        assert_eq!(
            ControllerAddress::parse("http://ctl:10000/"),
            connect("ctl:10000")
        );
        assert_eq!(
            ControllerAddress::parse("grpc://ctl:50051"),
            Ok(ControllerAddress::Grpc("ctl:50051".into()))
        );
        assert!(matches!(
            ControllerAddress::parse("https://ctl:443"),
            Err(AddressError::Tls(_))
        ));
        for bad in [
            "",
            "ctl",
            "http://ctl",
            "ftp://ctl:1",
            "http://ctl:1/x",
            "u@ctl:1",
        ] {
            assert!(ControllerAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
