//! The single mapping from node errors to gRPC status. Clients get a stable
//! code and a message that names the failing field, node or key; internal
//! details go to the log.

use tonic::Status;

use crate::node::NodeError;
use crate::storage::StorageError;

pub fn status(e: &NodeError) -> Status {
    match e {
        NodeError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        NodeError::NotFound(m) => Status::not_found(m.clone()),
        NodeError::AlreadyExists(m) => Status::already_exists(m.clone()),
        NodeError::PermissionDenied(m) => Status::permission_denied(m.clone()),
        NodeError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
        NodeError::Unavailable(m) => Status::unavailable(m.clone()),
        NodeError::ResourceExhausted(m) => Status::resource_exhausted(m.clone()),
        // A message another node would not take (its session had ended,
        // usually because it refused the request) is a transient failure of
        // this run; the refusing node reports its own reason.
        NodeError::Net(_) => Status::unavailable(e.to_string()),
        NodeError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        NodeError::Protocol { .. } | NodeError::Aborted(_) => Status::aborted(e.to_string()),
        NodeError::Storage(StorageError::Conflict(m)) => Status::already_exists(m.clone()),
        NodeError::Storage(StorageError::NotFound(m)) => Status::not_found(m.clone()),
        NodeError::Storage(StorageError::Corrupt { .. }) => Status::data_loss(e.to_string()),
        NodeError::Storage(_) | NodeError::Internal(_) => {
            tracing::error!(error = %e, "internal error");
            Status::internal(e.to_string())
        }
    }
}
