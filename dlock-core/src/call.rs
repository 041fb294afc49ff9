//! Backend calls bounded by a timeout.

use std::{future::Future, pin::pin, task::Poll, time::Duration};

use crate::Error;

/// Runs one backend call with a timeout; on expiry the call is dropped and the
/// result is [`Error::OperationTimeout`] (its outcome unknown). The machinery bounds
/// every backend call with it; backends use it for their own (connecting, say).
///
/// A call that completes on its first poll (an in-process backend, always) never
/// touches the timer: arming one costs more than such a call.
pub async fn bounded<T>(
    operation: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut call = pin!(call);
    if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
        return result;
    }
    // Boxed so the timer's state is not part of every caller's future.
    Box::pin(tokio::time::timeout(limit, call))
        .await
        .unwrap_or(Err(Error::OperationTimeout {
            operation,
            after: limit,
        }))
}
