//! The machinery every backend shares: waiting, deadlines, cancellation safety,
//! and the conveniences users call (`acquire`, `try_acquire`, `with_lock`).

use std::{future::Future, sync::Arc, time::Duration};

use tracing::Instrument;

use crate::{
    Acquire, Attempt, AttemptRequest, BootInstant, Error, Lease, LeaseHandle, Lock, LockKey,
    OwnerId, Wait, lease::Granted, metrics, options::DEFAULT_KEEP_ALIVE,
    reliability::DecorrelatedJitter,
};

/// Backoff between attempts when the backend has no wake-up hook.
const POLL_BASE: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);
/// With a wake-up hook, a missed notification must not strand a waiter: it also
/// retries after at most this long.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// What users call on any [`Lock`]; implemented for every `Lock + Clone` (backends
/// are cheap handles, and so is [`DynLock`](crate::DynLock)).
///
/// ```
/// # async fn demo(lock: impl dlock_core::LockExt) -> Result<(), dlock_core::Error> {
/// use std::time::Duration;
/// use dlock_core::{Acquire, LockExt};
///
/// let mut lease = lock
///     .acquire("order:123", Acquire::ttl(Duration::from_secs(10)).wait(Duration::from_secs(5)))
///     .await?;
/// println!("charging with fence {}", lease.fence());
/// lease.release().await?;
/// # Ok(()) }
/// ```
pub trait LockExt: Lock + Clone {
    /// Takes the lock on `key`, waiting as `opts` says. A lock still held when the
    /// wait limit passes is an [`Error::Timeout`], returned within the limit plus one
    /// operation timeout.
    fn acquire(
        &self,
        key: &str,
        opts: Acquire,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static {
        let run = acquire_lease(self.to_dyn(), LockKey::new(key), opts);
        async move {
            run.await?.ok_or(Error::Timeout {
                waited: Duration::ZERO,
            })
        }
    }

    /// Takes the lock on `key` if it is free, without waiting: `Ok(None)` if it is
    /// held; `Err` only if the backend failed.
    fn try_acquire(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, Error>> + Send + 'static {
        self.try_acquire_with(key, Acquire::ttl(ttl))
    }

    /// [`try_acquire`](Self::try_acquire) with options (keep-alive); the wait mode is ignored.
    fn try_acquire_with(
        &self,
        key: &str,
        opts: Acquire,
    ) -> impl Future<Output = Result<Option<Lease>, Error>> + Send + 'static {
        acquire_lease(self.to_dyn(), LockKey::new(key), opts.wait_mode(Wait::No))
    }

    /// Runs `work` while holding the lock on `key`, with keep-alive on (at a third of
    /// the TTL unless `opts` says otherwise). If the lease is lost, `work` is dropped
    /// (cancelled) and the result is [`Error::LeaseLost`]; otherwise the lease is
    /// released and `work`'s output returned.
    fn with_lock<F, Fut, T>(
        &self,
        key: &str,
        opts: Acquire,
        work: F,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'static
    where
        F: FnOnce(LeaseHandle) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
        T: Send + 'static,
    {
        let acquire = self.acquire(key, opts.keep_alive_unless_set(DEFAULT_KEEP_ALIVE));
        async move {
            let mut lease = acquire.await?;
            let lost = lease.lost();
            let output = tokio::select! {
                biased;
                () = lost => None,
                output = work(lease.handle()) => Some(output),
            };
            match output {
                Some(output) => {
                    match lease.release().await {
                        Ok(()) => Ok(output),
                        // The work finished but the lease ran out before the release:
                        // the work may have overlapped another holder.
                        Err(e) => Err(e),
                    }
                }
                None => Err(Error::LeaseLost {
                    key: lease.key().to_owned(),
                }),
            }
        }
    }

    /// This lock as a shared, type-erased handle.
    fn to_dyn(&self) -> Arc<dyn Lock> {
        Arc::new(self.clone())
    }
}

impl<L: Lock + Clone> LockExt for L {}

/// Releases with the same owner id when an acquisition ends without a lease:
/// cancelled (future dropped), timed out, or failed with its outcome unknown.
struct CleanupOnDrop<'a> {
    lock: &'a Arc<dyn Lock>,
    key: &'a LockKey,
    owner: OwnerId,
    armed: bool,
}

impl Drop for CleanupOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            Arc::clone(self.lock).release_in_background(self.key.clone(), self.owner);
        }
    }
}

/// `Ok(None)`: busy and not waiting (`Wait::No`).
async fn acquire_lease(
    lock: Arc<dyn Lock>,
    key: Result<LockKey, crate::InvalidInput>,
    opts: Acquire,
) -> Result<Option<Lease>, Error> {
    let caps = lock.capabilities();
    let key = key?;
    opts.validate(&caps)?;
    let span = tracing::debug_span!("dlock.acquire", backend = caps.name, key = %key);
    let outcome = wait_for_grant(&lock, &key, &opts).instrument(span).await;
    let label = match &outcome {
        Ok(Some(_)) => "acquired",
        Ok(None) => "busy",
        Err(e) if e.is_timeout() => "timeout",
        Err(_) => "error",
    };
    metrics::acquire_outcome(caps.name, label);
    let Some((owner, fence, sent)) = outcome? else {
        return Ok(None);
    };
    Ok(Some(Lease::start(Granted {
        lock,
        key,
        owner,
        fence,
        ttl: opts.ttl_value(),
        sent,
        keep_alive: opts.keep_alive_value(),
    })))
}

async fn wait_for_grant(
    lock: &Arc<dyn Lock>,
    key: &LockKey,
    opts: &Acquire,
) -> Result<Option<(OwnerId, crate::FenceToken, BootInstant)>, Error> {
    let backend = lock.capabilities().name;
    let started = BootInstant::now();
    let deadline = match opts.wait_value() {
        Wait::For(limit) => Some(started.saturating_add(limit)),
        Wait::No | Wait::Forever => None,
    };
    let queue = opts.wait_value() != Wait::No;
    let op_timeout = lock.operation_timeout();
    let mut cleanup = CleanupOnDrop {
        lock,
        key,
        owner: lock.new_owner(),
        armed: false,
    };
    let mut backoff: Option<DecorrelatedJitter> = None;
    let mut contended = false;
    loop {
        let request = AttemptRequest {
            key,
            owner: &cleanup.owner,
            ttl: opts.ttl_value(),
            queue,
        };
        let sent = BootInstant::now();
        // From here until a definite answer, the backend may hold something for us.
        cleanup.armed = true;
        let attempt = match tokio::time::timeout(op_timeout, lock.attempt(request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::OperationTimeout {
                operation: "acquire",
                after: op_timeout,
            }),
        };
        let pause = match attempt {
            Ok(Attempt::Acquired { fence }) => {
                cleanup.armed = false;
                if contended {
                    metrics::acquire_wait(
                        backend,
                        BootInstant::now()
                            .saturating_duration_since(started)
                            .as_secs_f64(),
                    );
                }
                return Ok(Some((cleanup.owner, fence, sent)));
            }
            Ok(Attempt::Busy { .. }) if !queue => {
                cleanup.armed = false;
                return Ok(None);
            }
            Ok(Attempt::Busy { wake, retry_after }) => {
                // Queued backends keep our place, so the cleanup stays armed.
                if !contended {
                    contended = true;
                    metrics::contended(backend);
                }
                let retry_after = retry_after.unwrap_or(Duration::MAX);
                match wake {
                    Some(wake) => Pause::Wake(wake, retry_after.min(SAFETY_NET)),
                    None => {
                        let delay = backoff
                            .get_or_insert_with(|| DecorrelatedJitter::new(POLL_BASE, POLL_MAX))
                            .next()
                            .unwrap_or(POLL_MAX);
                        Pause::Sleep(delay.min(retry_after))
                    }
                }
            }
            // The outcome is unknown: retry with the same owner id (attempts are
            // idempotent per owner) while a finite wait allows; otherwise give up, and
            // the armed cleanup releases whatever the request may have taken.
            Err(e) if e.is_retryable() && deadline.is_some() => {
                tracing::debug!(error = %e, "acquire attempt failed; retrying");
                let delay = backoff
                    .get_or_insert_with(|| DecorrelatedJitter::new(POLL_BASE, POLL_MAX))
                    .next()
                    .unwrap_or(POLL_MAX);
                Pause::Sleep(delay)
            }
            Err(e) => return Err(e),
        };
        let now = BootInstant::now();
        let left = match deadline {
            Some(deadline) if now >= deadline => {
                return Err(Error::Timeout {
                    waited: now.saturating_duration_since(started),
                });
            }
            Some(deadline) => deadline.saturating_duration_since(now),
            None => Duration::MAX,
        };
        match pause {
            Pause::Wake(wake, at_most) => {
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep(at_most.min(left)) => {}
                }
            }
            Pause::Sleep(delay) => tokio::time::sleep(delay.min(left)).await,
        }
    }
}

enum Pause {
    Wake(crate::WakeSignal, Duration),
    Sleep(Duration),
}
