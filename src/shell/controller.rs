//! The controller client: RegisterWorker (also the heartbeat) and ReportTaskState, each call with
//! a deadline, over a channel with HTTP/2 keepalive so a half-open connection fails fast and is
//! redialled instead of wedging the worker.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::core::TaskReport;
use crate::proto;
use crate::proto::controller_service_client::ControllerServiceClient;
use crate::shell::auth::SendToken;

pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ControllerClient {
    client: ControllerServiceClient<InterceptedService<Channel, SendToken>>,
    worker_id: String,
    address: String,
    metadata: proto::WorkerMetadata,
}

/// `host:port` or a full URI.
pub fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// The controller endpoint with the worker's deadlines and HTTP/2 keepalive, not yet connected
/// (the simulator connects it over its own network).
pub fn endpoint(controller_address: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(endpoint_uri(controller_address))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

impl ControllerClient {
    pub fn new(
        controller_address: &str,
        worker_id: String,
        address: String,
        metadata: proto::WorkerMetadata,
        token: Option<&str>,
    ) -> Result<ControllerClient, tonic::transport::Error> {
        let channel = endpoint(controller_address)?.connect_lazy();
        Ok(ControllerClient::with_channel(
            channel, worker_id, address, metadata, token,
        ))
    }

    pub fn with_channel(
        channel: Channel,
        worker_id: String,
        address: String,
        metadata: proto::WorkerMetadata,
        token: Option<&str>,
    ) -> ControllerClient {
        ControllerClient {
            client: ControllerServiceClient::with_interceptor(channel, SendToken::new(token)),
            worker_id,
            address,
            metadata,
        }
    }

    /// Registers (or heartbeats); returns `should_reset`. A refusal is an error.
    pub async fn register(&self, running_task_ids: Vec<String>) -> Result<bool, String> {
        let request = proto::controller::RegisterWorkerRequest {
            worker_id: self.worker_id.clone(),
            address: self.address.clone(),
            metadata: Some(self.metadata.clone()),
            running_task_ids,
        };
        let mut client = self.client.clone();
        let call = client.register_worker(request);
        let response = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "register timed out".to_string())?
            .map_err(|s| format!("register failed: {}: {}", s.code(), s.message()))?
            .into_inner();
        if !response.accepted {
            return Err("controller refused the registration".into());
        }
        Ok(response.should_reset)
    }

    pub async fn report(&self, report: &TaskReport) -> Result<(), String> {
        let mut client = self.client.clone();
        let call = client.report_task_state(report.to_proto());
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "report timed out".to_string())?
            .map_err(|s| format!("report failed: {}: {}", s.code(), s.message()))?;
        Ok(())
    }
}
