//! From redis-rs errors to dlock's, answering the caller's question: retry, fix the
//! configuration, or look at the key.

use dlock_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The error code our scripts use for a key that holds something else.
const CONFLICT: &str = "DLOCK_CONFLICT";

pub(crate) fn from_redis(key: Option<&str>, e: RedisError) -> Error {
    let key_name = || key.unwrap_or_default().to_owned();
    // A pipeline's error carries its commands' server errors, whose codes it does
    // not report itself (a conflict in a vote pipelined after CLIENT GETNAME).
    let first = e
        .clone()
        .into_server_errors()
        .and_then(|errors| errors.first().map(|(_, error)| error.clone()));
    let (code, detail) = match &first {
        Some(error) => (Some(error.code()), error.details()),
        None => (e.code(), e.detail()),
    };
    match code {
        Some(CONFLICT) => {
            return Error::Conflict {
                key: key_name(),
                detail: detail.unwrap_or("the key holds another type").to_owned(),
            };
        }
        Some("WRONGTYPE") => {
            return Error::Conflict {
                key: key_name(),
                detail: "the key holds a value of another type".to_owned(),
            };
        }
        Some("NOAUTH" | "WRONGPASS") => {
            return Error::Auth {
                source: Box::new(e),
            };
        }
        // The server cannot serve now but will: another client's script runs past
        // busy-reply-threshold, a replica lost its primary, too few replicas for
        // min-replicas-to-write, a cluster failing over. A waiting acquisition
        // retries through them, as through an outage. Not READONLY (a URL naming a
        // replica; the connection is not remade on it, so a retry meets the same
        // server) nor OOM (full of keys that may never expire): those stay definite.
        Some("BUSY" | "MASTERDOWN" | "NOREPLICAS" | "CLUSTERDOWN") => {
            return Error::unavailable(e);
        }
        _ => {}
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return Error::unavailable(e);
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            Error::Auth {
                source: Box::new(e),
            }
        }
        ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain) => {
            Error::unavailable(e)
        }
        _ => Error::backend(e),
    }
}
