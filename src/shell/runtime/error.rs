//! `RuntimeError`: how a runtime call failed, and whose fault it was (the task's, the host's
//! ports, or the machine's). Below both the `Runtime` trait and the helpers it shares.

#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub message: String,
    /// The start failed because a host port was taken; the core retries with fresh ports.
    pub port_conflict: bool,
    /// The fault is the machine's (engine unreachable, a call timed out), not the task's: the
    /// attempt ends WORKER_FAILED rather than FAILED.
    pub infrastructure: bool,
}

impl RuntimeError {
    pub fn new(message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            message: message.into(),
            port_conflict: false,
            infrastructure: false,
        }
    }

    /// A host port of the attempt is taken: the core retries with fresh ports.
    pub fn port_conflict(message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            port_conflict: true,
            ..RuntimeError::new(message)
        }
    }

    pub fn infrastructure(message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            infrastructure: true,
            ..RuntimeError::new(message)
        }
    }
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::new(e.to_string())
    }
}
