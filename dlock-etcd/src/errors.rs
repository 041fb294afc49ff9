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
                // etcd shedding load; not "database space exceeded" (an alarm that
                // lasts until an operator clears it), which has the same code.
                Code::ResourceExhausted if status.message().contains("too many requests") => {
                    Error::unavailable(e)
                }
                // The election API sends server-side failures as Unknown; these
                // pass with the cluster's next leader.
                Code::Unknown if is_transient(status.message()) => Error::unavailable(e),
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
        // A keep-alive stream that closed or never opened ("lease not found" is
        // told apart before this, by `is_lease_not_found`).
        EtcdError::LeaseKeepAliveError(_) | EtcdError::WatchError(_) => Error::unavailable(e),
        _ => Error::backend(e),
    }
}

/// An etcd server error that a retry can outlast: no raft leader, a leader change,
/// a proposal that timed out.
fn is_transient(message: &str) -> bool {
    [
        "etcdserver: no leader",
        "etcdserver: leader changed",
        "etcdserver: request timed out",
        "etcdserver: too many requests",
    ]
    .iter()
    .any(|m| message.contains(m))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, message: &str) -> EtcdError {
        EtcdError::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn load_shedding_and_leader_trouble_are_retryable() {
        for e in [
            status(
                tonic::Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            status(tonic::Code::Unknown, "etcdserver: leader changed"),
            status(tonic::Code::Unknown, "etcdserver: request timed out"),
            EtcdError::LeaseKeepAliveError("the keep-alive channel closed".into()),
        ] {
            assert!(from_etcd(e).is_retryable());
        }
    }

    #[test]
    fn other_unknown_errors_and_a_full_database_stay_definite() {
        for e in [
            status(tonic::Code::Unknown, "election: not leader"),
            status(
                tonic::Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
        ] {
            assert!(!from_etcd(e).is_retryable());
        }
    }
}
