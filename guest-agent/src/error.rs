//! The agent's one error type. Its kind says whose fault a failure is and
//! travels to the host as the gRPC status code, which the host's API maps
//! to Docker's HTTP status (host/src/api). `to_status` is the only place
//! in the agent that picks a gRPC code: domain code says what went wrong
//! (`AgentError::conflict(..)`), never how it is sent.

use berth_engine::layer::LayerError;
use berth_engine::registry::PullError;
use berth_engine::store::StoreError;
use berth_engine::volume::VolumeError;
use tonic::{Code, Status};

/// Whose fault, in Docker's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such container, image, volume or path (Docker's 404).
    NotFound,
    /// The object's state forbids it: running, in use, name taken (409).
    Conflict,
    /// The request itself is wrong (400).
    Invalid,
    /// Refused whatever the state: a predefined network, one with active
    /// endpoints, an address in use (Docker's 403).
    Forbidden,
    /// The agent cannot do it in this environment: no cgroup v2, no image
    /// store, another protocol version.
    Unavailable,
    /// The client stopped sending (an upload that stalled).
    Timeout,
    /// Ours: I/O, a task that died, a bug.
    Internal,
}

/// An error with its kind and the message the client sees (Docker's
/// wording where clients match on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    kind: ErrorKind,
    message: String,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AgentError {
        AgentError { kind, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::Conflict, message)
    }

    pub fn invalid(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::Invalid, message)
    }

    pub fn unavailable(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::Unavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::Timeout, message)
    }

    pub fn internal(message: impl Into<String>) -> AgentError {
        AgentError::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The gRPC code each kind travels as. The host reads InvalidArgument as
/// 400, PermissionDenied as 403, NotFound as 404, Aborted as 409 and
/// anything else as 500.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::FailedPrecondition,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status an error is answered with.
pub fn to_status(err: AgentError) -> Status {
    Status::new(code(err.kind), err.message)
}

impl From<AgentError> for Status {
    fn from(err: AgentError) -> Status {
        to_status(err)
    }
}

/// Bad archives are the client's fault; anything else is ours.
impl From<StoreError> for AgentError {
    fn from(err: StoreError) -> AgentError {
        let kind = match &err {
            StoreError::Invalid(_) | StoreError::DigestMismatch { .. } => ErrorKind::Invalid,
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Layer(
                LayerError::Unsafe { .. } | LayerError::DigestMismatch { .. } | LayerError::UnsupportedCompression(_),
            ) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        AgentError::new(kind, err.to_string())
    }
}

impl From<VolumeError> for AgentError {
    fn from(err: VolumeError) -> AgentError {
        let kind = match err {
            VolumeError::NotFound(_) => ErrorKind::NotFound,
            VolumeError::Invalid(_) => ErrorKind::Invalid,
            VolumeError::Io { .. } => ErrorKind::Internal,
        };
        AgentError::new(kind, err.to_string())
    }
}

/// An unknown image or one we may not read is Docker's 404.
impl From<&PullError> for AgentError {
    fn from(err: &PullError) -> AgentError {
        let kind = match err {
            PullError::ManifestUnknown { .. } | PullError::AccessDenied { .. } => ErrorKind::NotFound,
            PullError::InvalidReference(_) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        AgentError::new(kind, err.to_string())
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for AgentError {
    fn from(err: tokio::task::JoinError) -> AgentError {
        AgentError::internal(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_travels_as_the_code_the_host_maps() {
        for (kind, expected) in [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::Conflict, Code::Aborted),
            (ErrorKind::Invalid, Code::InvalidArgument),
            (ErrorKind::Forbidden, Code::PermissionDenied),
            (ErrorKind::Unavailable, Code::FailedPrecondition),
            (ErrorKind::Timeout, Code::DeadlineExceeded),
            (ErrorKind::Internal, Code::Internal),
        ] {
            let status = Status::from(AgentError::new(kind, "why"));
            assert_eq!((status.code(), status.message()), (expected, "why"), "{kind:?}");
        }
    }

    #[test]
    fn store_errors_blame_the_client_only_for_bad_input() {
        assert_eq!(AgentError::from(StoreError::NotFound("x".into())).kind(), ErrorKind::NotFound);
        assert_eq!(AgentError::from(StoreError::Conflict("x".into())).kind(), ErrorKind::Conflict);
        assert_eq!(AgentError::from(StoreError::Invalid("x".into())).kind(), ErrorKind::Invalid);
        let io = StoreError::Io { context: "writing".into(), source: std::io::Error::other("disk") };
        let err = AgentError::from(io);
        assert_eq!((err.kind(), err.message()), (ErrorKind::Internal, "writing: disk"));
        assert_eq!(AgentError::from(StoreError::NotFound("busybox".into())).message(), "No such image: busybox");
    }

    #[test]
    fn volume_and_pull_errors_keep_their_kind() {
        assert_eq!(AgentError::from(VolumeError::NotFound("v".into())).kind(), ErrorKind::NotFound);
        assert_eq!(AgentError::from(VolumeError::Invalid("v".into())).kind(), ErrorKind::Invalid);
        let unknown = PullError::ManifestUnknown { reference: "busybox:nope".into() };
        assert_eq!(AgentError::from(&unknown).kind(), ErrorKind::NotFound);
        assert_eq!(AgentError::from(&PullError::InvalidReference("x".into())).kind(), ErrorKind::Invalid);
        assert_eq!(AgentError::from(&PullError::Unsupported("x".into())).kind(), ErrorKind::Internal);
    }
}
