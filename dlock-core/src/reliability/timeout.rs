//! A time limit on one future.

use std::future::Future;
use std::time::Duration;

use super::Elapsed;

/// Runs `fut` for at most `limit`. On expiry the future is dropped (whatever it
/// holds is released at once) and the caller gets [`Elapsed`].
///
/// A zero limit still polls the future once, so work that is already done wins.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use dlock_core::reliability::timeout;
///
/// let slow = tokio::time::sleep(Duration::from_secs(60));
/// let err = timeout(Duration::from_millis(10), slow).await.unwrap_err();
/// assert_eq!(err.limit(), Duration::from_millis(10));
/// # }
/// ```
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Elapsed { limit })
}
