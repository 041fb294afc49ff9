//! Long work under `with_lock`: keep-alive holds the lease past its TTL, the work's
//! own errors come back as they are, and a lost lease cancels the work.
//!
//! ```text
//! cargo run --example keep_alive
//! cargo run --example keep_alive --features redis -- redis://127.0.0.1:6379
//! ```

use std::time::Duration;

use dlock::{Acquire, DynLock, Error, LockExt, LossReason};

/// What the work itself can fail with; `with_lock` hands it back untouched.
#[derive(Debug, PartialEq)]
pub(crate) struct StepFailed(pub(crate) u32);

/// A job of `steps` steps of `step` each, failing at `fail_at` if given.
async fn job(steps: u32, step: Duration, fail_at: Option<u32>) -> Result<u32, StepFailed> {
    for n in 1..=steps {
        tokio::time::sleep(step).await;
        if Some(n) == fail_at {
            return Err(StepFailed(n));
        }
    }
    Ok(steps)
}

/// The three outcomes: a job three TTLs long that completes under keep-alive, one
/// whose step fails (its error comes back, the lock is released), and one without
/// keep-alive whose lease runs out mid-way (cancelled: `LeaseLost`, expired).
pub(crate) async fn run(
    lock: DynLock,
    key: &str,
) -> Result<(Result<u32, StepFailed>, Result<u32, StepFailed>, Error), Error> {
    let ttl = lock.capabilities().fit_ttl(Duration::from_secs(1));
    let step = ttl / 4;

    // 12 steps of a quarter TTL: three TTLs, held throughout by keep-alive
    // (on by default in with_lock, at a third of the TTL).
    let long = lock
        .with_lock(key, Acquire::ttl(ttl), move |lease| async move {
            let done = job(12, step, None).await;
            assert!(lease.is_valid());
            done
        })
        .await?;

    // The work's own error: Ok(Err(..)) from with_lock, and the key is free again.
    let failing = lock
        .with_lock(key, Acquire::ttl(ttl), move |_| job(12, step, Some(3)))
        .await?;
    let mut again = lock
        .try_acquire(key, ttl)
        .await?
        .expect("the failed job left the key held");
    again.release().await?;

    // No keep-alive: the lease runs out after one TTL and the work is dropped.
    let lost = lock
        .with_lock(key, Acquire::ttl(ttl).no_keep_alive(), move |_| {
            job(12, step, None)
        })
        .await
        .expect_err("the work outlived its lease");
    Ok((long, failing, lost))
}

#[allow(dead_code)] // tests include this file as a module and call `run`
#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://keep-alive-demo".into());
    let lock = dlock::connect(&url).await?;
    let (long, failing, lost) = run(lock, "report:nightly").await?;
    println!("three TTLs of work under keep-alive: {long:?}");
    println!("a step that fails:                  {failing:?} (the lock is released)");
    println!("no keep-alive, lease ran out:       {lost}");
    assert!(matches!(
        lost,
        Error::LeaseLost {
            reason: LossReason::Expired,
            ..
        }
    ));
    Ok(())
}
