//! Connect RPC (the protocol of connect-python, which Iris's controller and clients use) beside
//! gRPC on the worker's port, and as the controller client's default transport.
//!
//! * `codec` — content types, compression, timeouts and error bodies: pure, and fuzzed.
//! * `server` — Connect unary handlers that call the same service code as gRPC.
//! * `front` — the layer that splits one listener between tonic and axum by content type.
//! * `client` — a Connect unary client over HTTP/1.1 with a small connection pool.

pub mod client;
pub mod codec;
pub mod front;
pub mod server;
