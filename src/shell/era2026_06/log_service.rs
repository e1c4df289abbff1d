//! Where the cluster's log service is: the controller's endpoint registry names it
//! (`/system/log-server`); the log pusher and the stats writer both dial what it says, and ask
//! again after a failed call (the service may have moved).

use std::time::Duration;

use tonic::Status;

use crate::proto::v2026_06::iris::cluster::controller;
use crate::shell::connect::client::{ConnectClient, Dialer};
use crate::shell::controller::ControllerAddress;

const LOG_SERVER: &str = "/system/log-server";
const LIST_ENDPOINTS_PATH: &str = "/iris.cluster.ControllerService/ListEndpoints";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to find the log service and dial it: the controller to ask, the dialer (TCP, or the
/// simulator's network) and the token the worker shows.
#[derive(Clone)]
pub struct Finder {
    pub controller: ConnectClient,
    pub dial: Dialer,
    pub token: Option<String>,
}

impl Finder {
    /// The log service, or `None` (logged) when the controller cannot say where it is.
    pub async fn discover(&self) -> Option<ConnectClient> {
        let request = controller::ListEndpointsRequest {
            prefix: LOG_SERVER.to_string(),
            exact: true,
        };
        let found: Result<controller::ListEndpointsResponse, Status> = self
            .controller
            .unary(LIST_ENDPOINTS_PATH, &request, CALL_TIMEOUT)
            .await;
        let address = match found {
            Ok(found) => found.endpoints.into_iter().next()?.address,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the log service");
                return None;
            }
        };
        match ControllerAddress::parse(&address) {
            Ok(ControllerAddress::Connect(authority)) => Some(ConnectClient::new(
                &authority,
                self.dial.clone(),
                self.token.as_deref(),
            )),
            _ => {
                tracing::warn!(%address, "the log service's address is not host:port or http://");
                None
            }
        }
    }
}
