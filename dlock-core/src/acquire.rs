//! The machinery every backend shares: waiting, deadlines, cancellation safety,
//! and the conveniences users call (`acquire`, `try_acquire`, `with_lock`).

use std::{future::Future, sync::Arc, time::Duration};

use tracing::Instrument;

use crate::{
    Acquire, Attempt, AttemptRequest, BootInstant, DynLock, Error, Lease, LeaseHandle, Lock,
    LockKey, OwnerId, Wait,
    call::bounded,
    lease::Granted,
    metrics::{self, AcquireOutcome},
    options::DEFAULT_KEEP_ALIVE,
    reliability::DecorrelatedJitter,
};

/// Backoff between attempts when the backend has no wake-up hook.
const POLL_BASE: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);
/// With a wake-up hook, a missed notification must not strand a waiter: it also
/// retries after at most this long.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// What users call on any [`Lock`]: implemented for every `Lock + Clone` (backends
/// are cheap handles) and for [`DynLock`]. Nobody implements it by hand.
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
pub trait LockExt {
    /// This lock as a shared, type-erased handle.
    fn to_dyn(&self) -> DynLock;

    /// Takes the lock on `key`, waiting as `opts` says. A lock still held when the
    /// wait limit passes is an [`Error::Timeout`], returned within the limit plus one
    /// operation timeout.
    fn acquire(
        &self,
        key: &str,
        opts: Acquire,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static {
        let (lock, key) = (self.to_dyn(), LockKey::new(key));
        // The inner future is built in place on first poll, not built here and moved.
        async move {
            acquire_lease(lock, key, opts)
                .await?
                .ok_or_else(|| Error::Timeout {
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
}

impl<L: Lock + Clone> LockExt for L {
    fn to_dyn(&self) -> DynLock {
        Arc::new(self.clone())
    }
}

impl LockExt for DynLock {
    fn to_dyn(&self) -> DynLock {
        Arc::clone(self)
    }
}

/// Releases with the same owner id when an acquisition ends without a lease:
/// cancelled (future dropped), timed out, or failed with its outcome unknown.
struct CleanupOnDrop<'a> {
    lock: &'a DynLock,
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
    lock: DynLock,
    key: Result<LockKey, crate::InvalidInput>,
    opts: Acquire,
) -> Result<Option<Lease>, Error> {
    let caps = lock.capabilities();
    let key = key?;
    opts.validate(&caps)?;
    let outcome = wait_for_grant(&lock, caps.name, &key, &opts).await;
    let label = match &outcome {
        Ok(Some(_)) => AcquireOutcome::Acquired,
        Ok(None) => AcquireOutcome::Busy,
        Err(e) if e.is_timeout() => AcquireOutcome::Timeout,
        Err(_) => AcquireOutcome::Error,
    };
    metrics::acquire_outcome(caps.name, label);
    let Some((owner, fence, sent)) = outcome? else {
        return Ok(None);
    };
    Ok(Some(Lease::start(Granted {
        lock,
        caps,
        key,
        owner,
        fence,
        ttl: opts.ttl_value(),
        sent,
        keep_alive: opts.keep_alive_value(),
    })))
}

/// What a successful acquisition hands to the lease: its owner id, its token, and
/// when the server's TTL started at the earliest.
type Grant = (OwnerId, crate::FenceToken, BootInstant);

/// The first attempt, inline: the uncontended path is this and nothing more. Only a
/// caller that has to wait enters the (boxed) loop, so the timers, backoff and span
/// stay out of the common path's future.
async fn wait_for_grant(
    lock: &DynLock,
    backend: &'static str,
    key: &LockKey,
    opts: &Acquire,
) -> Result<Option<Grant>, Error> {
    let sent = BootInstant::now();
    let queue = opts.wait_value() != Wait::No;
    let mut cleanup = CleanupOnDrop {
        lock,
        key,
        owner: lock.new_owner(),
        // From here until a definite answer, the backend may hold something for us.
        armed: true,
    };
    let request = AttemptRequest {
        key,
        owner: &cleanup.owner,
        ttl: opts.ttl_value(),
        queue,
        sent,
    };
    match send_attempt(lock, request).await {
        Ok(Attempt::Acquired { fence, valid_from }) => {
            Ok(Some(cleanup.granted(fence, valid_from, sent)))
        }
        Ok(Attempt::Busy { .. }) if !queue => {
            cleanup.armed = false;
            Ok(None)
        }
        first => Box::pin(keep_trying(backend, opts, cleanup, first, sent)).await,
    }
}

/// One attempt: answered at once by a backend that needs no I/O, otherwise awaited
/// within the operation timeout.
async fn send_attempt(lock: &DynLock, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
    match lock.attempt_now(request) {
        Some(answer) => answer,
        None => bounded("acquire", lock.operation_timeout(), lock.attempt(request)).await,
    }
}

impl CleanupOnDrop<'_> {
    fn granted(
        mut self,
        fence: crate::FenceToken,
        valid_from: Option<BootInstant>,
        sent: BootInstant,
    ) -> Grant {
        self.armed = false;
        // Validity counts from the earlier of the two: never past the server's.
        (
            self.owner,
            fence,
            valid_from.map_or(sent, |from| from.min(sent)),
        )
    }
}

/// Waits and retries until granted, the deadline passes, or the backend fails for good.
async fn keep_trying(
    backend: &'static str,
    opts: &Acquire,
    mut cleanup: CleanupOnDrop<'_>,
    mut attempt: Result<Attempt, Error>,
    started: BootInstant,
) -> Result<Option<Grant>, Error> {
    let (lock, key) = (cleanup.lock, cleanup.key);
    let deadline = match opts.wait_value() {
        Wait::For(limit) => Some(started.saturating_add(limit)),
        Wait::No | Wait::Forever => None,
    };
    let queue = opts.wait_value() != Wait::No;
    let mut backoff: Option<DecorrelatedJitter> = None;
    let mut contended = false;
    let span = tracing::debug_span!("dlock.acquire.wait", backend, key = %key);
    let mut sent = started;
    loop {
        let pause = match attempt {
            Ok(Attempt::Acquired { fence, valid_from }) => {
                if contended {
                    metrics::acquire_wait(
                        backend,
                        BootInstant::now()
                            .saturating_duration_since(started)
                            .as_secs_f64(),
                    );
                }
                return Ok(Some(cleanup.granted(fence, valid_from, sent)));
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
                tracing::debug!(backend, key = %key, error = %e, "acquire attempt failed; retrying");
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
        pause.wait(left).instrument(span.clone()).await;
        sent = BootInstant::now();
        let request = AttemptRequest {
            key,
            owner: &cleanup.owner,
            ttl: opts.ttl_value(),
            queue,
            sent,
        };
        cleanup.armed = true;
        attempt = send_attempt(lock, request).await;
    }
}

/// How to wait before the next attempt.
enum Pause {
    /// Until the backend's wake-up, or this long at most.
    Wake(crate::WakeSignal, Duration),
    Sleep(Duration),
}

impl Pause {
    async fn wait(self, at_most: Duration) {
        match self {
            Pause::Wake(wake, limit) => {
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep(limit.min(at_most)) => {}
                }
            }
            Pause::Sleep(delay) => tokio::time::sleep(delay.min(at_most)).await,
        }
    }
}
