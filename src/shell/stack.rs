//! One port's RPC stack, for `serve` and the simulator alike: the task era's WorkerService over
//! gRPC and Connect, the reconcile era's Reconcile when the worker speaks it, and whatever else
//! the caller serves on the port (the dashboard), behind the token check and the size limit.

use std::sync::Arc;

use crate::shell::auth::RequireToken;
use crate::shell::connect::front::FrontLayer;
use crate::shell::era2026_06::reconcile::{Reconciler, reconcile_router};
use crate::shell::routes;
use crate::shell::service::WorkerService;

/// Largest request the worker decodes (a callable entrypoint can be large), in either protocol.
pub const REQUEST_BYTES_MAX: usize = crate::shell::connect::codec::BODY_BYTES_MAX;

/// The gRPC service of a worker's port: the task era's WorkerService behind the bearer-token
/// check, decoding requests up to the Connect limit.
pub type GrpcService = tonic::service::interceptor::InterceptedService<
    crate::proto::worker_service_server::WorkerServiceServer<WorkerService>,
    RequireToken,
>;

/// One port's RPC stack, for `serve` and the simulator alike: Connect routes (the task era's
/// service, the reconcile era's Reconcile when the worker speaks it, and `extra`, the
/// dashboard in `serve`) in front of gRPC. The caller serves it on its own listener.
pub fn rpc_stack(
    service: Arc<WorkerService>,
    reconciler: Option<Arc<Reconciler>>,
    token: RequireToken,
    extra: Option<axum::Router>,
) -> (FrontLayer, GrpcService) {
    let grpc = crate::proto::worker_service_server::WorkerServiceServer::from_arc(service.clone())
        .max_decoding_message_size(REQUEST_BYTES_MAX);
    // The controller calls these (the task era's methods, the 2026-06 Reconcile).
    let token = token.admitting_controller();
    let grpc = tonic::service::interceptor::InterceptedService::new(grpc, token.clone());
    let mut http = routes::worker_router(service, token.clone());
    if let Some(reconciler) = reconciler {
        http = http.merge(reconcile_router(reconciler, token));
    }
    if let Some(extra) = extra {
        http = http.merge(extra);
    }
    (FrontLayer::new(http), grpc)
}
