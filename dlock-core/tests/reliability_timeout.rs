//! `timeout`: typed expiry, and the timed-out future is dropped, not left running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dlock_core::reliability::timeout;
use tokio::time::Instant;

/// Sets its flag when dropped, to prove a future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_fast_future_returns_its_output() {
    let out = timeout(Duration::from_secs(1), async { 7 }).await;
    assert_eq!(out, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn a_ready_future_wins_even_with_a_zero_limit() {
    assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn expiry_reports_the_limit_exactly_on_time_and_drops_the_future() {
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(Arc::clone(&dropped));
    let start = Instant::now();

    let err = timeout(Duration::from_secs(2), async move {
        let _guard = guard;
        std::future::pending::<()>().await
    })
    .await
    .expect_err("never finishes");

    assert_eq!(err.limit(), Duration::from_secs(2));
    assert_eq!(err.to_string(), "timed out after 2s");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner future is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn no_task_is_left_behind_after_a_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(Arc::clone(&dropped));

    let task = tokio::spawn(timeout(Duration::from_millis(500), async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }));
    let result = task.await.expect("the task does not panic");

    assert!(result.is_err());
    assert!(dropped.load(Ordering::SeqCst));
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive, 0, "no task outlives the timeout");
}
