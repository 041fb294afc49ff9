//! From etcd-client errors to dlock's.

use dlock_core::Error;
use etcd_client::Error as EtcdError;

pub(crate) fn from_etcd(e: EtcdError) -> Error {
    match &e {
        EtcdError::GRpcStatus(status) => {
            use tonic::Code;
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                    Error::unavailable(e)
                }
                Code::Unauthenticated | Code::PermissionDenied => Error::Auth {
                    source: Box::new(e),
                },
                Code::InvalidArgument
                    if status.message().contains("authentication failed")
                        || status.message().contains("user name is empty") =>
                {
                    Error::Auth {
                        source: Box::new(e),
                    }
                }
                _ => Error::backend(e),
            }
        }
        EtcdError::TransportError(_) | EtcdError::IoError(_) => Error::unavailable(e),
        _ => Error::backend(e),
    }
}

/// etcd answers a revoke or keep-alive of an expired lease with "lease not found"
/// (a gRPC status for a revoke, a keep-alive error for a refresh).
pub(crate) fn is_lease_not_found(e: &EtcdError) -> bool {
    match e {
        EtcdError::GRpcStatus(s) => {
            s.code() == tonic::Code::NotFound || s.message().contains("lease not found")
        }
        EtcdError::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}
