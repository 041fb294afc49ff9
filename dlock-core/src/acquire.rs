//! The machinery every backend shares: waiting, deadlines, cancellation safety,
//! and the conveniences users call (`acquire`, `try_acquire`, `with_lock`).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tracing::Instrument;

use crate::{
    Acquire, Attempt, AttemptRequest, BootInstant, DynLock, Error, Lease, LeaseHandle, Lock,
    LockKey, OwnerId, Wait,
    call::bounded,
    lease::Grant,
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
    ///
    /// **Outages.** The same rule for every wait mode and backend: a transient
    /// backend error (unreachable, slow; [`Error::is_retryable`]) is retried with
    /// backoff for as long as the caller waits, with the same owner id. When the
    /// wait ends while the backend is failing, the `Timeout` carries its last error
    /// (`cause`) and is retryable. A caller that does not wait (`Wait::No`,
    /// `try_acquire`) gets the backend's error at once; one that waits for ever
    /// waits through the outage. A definite failure (bad input, refused
    /// credentials, no quorum possible) ends the wait at once.
    ///
    /// **Pauses.** A lease is never handed out with its validity already over: a
    /// grant whose answer arrived after the TTL had run out (the process paused
    /// after sending) counts as a failed attempt, asked again with the same owner,
    /// which renews it with validity from the new request.
    fn acquire(
        &self,
        key: &str,
        opts: Acquire,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static {
        let (lock, key) = (self.to_dyn(), LockKey::new(key));
        async move {
            let outcome = match start(lock, key, opts)? {
                Started::Done(outcome) => outcome,
                Started::Waiting(rest) => rest.await?,
            };
            outcome.map_err(|key| Error::Timeout {
                key: key.to_string(),
                waited: Duration::ZERO,
                cause: None,
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
        let (lock, key) = (self.to_dyn(), LockKey::new(key));
        async move {
            match start(lock, key, opts.wait_mode(Wait::No))? {
                Started::Done(outcome) => Ok(outcome.ok()),
                Started::Waiting(rest) => Ok(rest.await?.ok()),
            }
        }
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
                None => Err(Error::lease_lost(
                    lease.key(),
                    lease.lost_reason().unwrap_or(crate::LossReason::Expired),
                )),
            }
        }
    }

    /// Who holds `key` now, read without taking it (so it burns no token and
    /// leaves no place in line): `Ok(None)` if free. [`Error::Unsupported`] on a
    /// backend without [`Capabilities::inspect`](crate::Capabilities::inspect).
    fn holder(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<crate::Holder>, Error>> + Send + 'static {
        let (lock, key) = (self.to_dyn(), LockKey::new(key));
        async move {
            let key = key?;
            let timeout = lock.operation_timeout();
            let answer = bounded("inspect", timeout, lock.inspect(&key)).await;
            crate::tracker::observe(lock.as_ref(), &answer);
            answer
        }
    }

    /// The leader election `name` on this lock's backend; see [`Election`](crate::Election).
    fn election(&self, name: &str) -> Result<crate::Election, Error> {
        crate::Election::new(self.to_dyn(), name)
    }

    /// Frees what this lock holds, for a process about to exit: new acquisitions
    /// are refused ([`Error::ShutDown`]), waiting ones end with that error and give
    /// up their places, every lease still held is marked lost
    /// ([`LossReason::ShutDown`](crate::LossReason::ShutDown), so `lost()` fires
    /// and `with_lock` cancels its work) and then released, and releases still
    /// running in the background (of dropped leases) are awaited. All within
    /// `within`; what did not finish is left to the TTL, and the report says so.
    ///
    /// Call it before `main` returns, for example on Ctrl-C. Without it, a lease
    /// dropped while the runtime shuts down is not released: its background
    /// release never runs, and the key stays held until its TTL runs out.
    /// Backends without a [`Tracker`](crate::Tracker) (the in-process one) have
    /// nothing to free, and report nothing.
    ///
    /// ```no_run
    /// # async fn demo(lock: dlock_core::DynLock) {
    /// use std::time::Duration;
    /// use dlock_core::LockExt;
    ///
    /// tokio::signal::ctrl_c().await.ok();
    /// let report = lock.shutdown(Duration::from_secs(2)).await;
    /// eprintln!("dlock: {report}");
    /// # }
    /// ```
    fn shutdown(
        &self,
        within: Duration,
    ) -> impl Future<Output = crate::ShutdownReport> + Send + 'static {
        let lock = self.to_dyn();
        async move { shut_down(lock, within).await }
    }
}

async fn shut_down(lock: DynLock, within: Duration) -> crate::ShutdownReport {
    let mut report = crate::ShutdownReport::default();
    let Some(tracker) = lock.tracker() else {
        return report;
    };
    let until = BootInstant::now().saturating_add(within);
    let leases = tracker.close();
    // Lost before the key is freed, so nobody works on past the release.
    for state in &leases {
        state.mark_lost(crate::LossReason::ShutDown);
    }
    let timeout = lock.operation_timeout().min(within);
    let releases = leases
        .iter()
        .map(|state| bounded("release", timeout, lock.release(state.key(), state.owner())));
    for (state, outcome) in leases.iter().zip(futures::future::join_all(releases).await) {
        crate::metrics::release(state.labels(), crate::metrics::ReleaseOutcome::Shutdown);
        match outcome {
            Ok(true) => report.released += 1,
            Ok(false) => report.not_held += 1,
            Err(error) => {
                tracing::warn!(target: "dlock::lease", %error, "shutdown could not release a lease; its TTL will free it");
                report.failed += 1;
            }
        }
    }
    report.unfinished = tracker.settle(until).await;
    let left = until.saturating_duration_since(BootInstant::now());
    let _ = bounded("close", left, async {
        lock.close().await;
        Ok::<(), crate::Error>(())
    })
    .await;
    tracing::info!(target: "dlock::lease", backend = lock.capabilities().name, %report, "lock shut down");
    report
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

/// Granted, or busy for a caller that does not wait (the key back, for the error).
type Outcome = Result<Lease, LockKey>;

/// Where an acquisition stands after [`start`].
enum Started {
    /// Answered in process: granted, or busy for a caller that does not wait.
    Done(Outcome),
    /// The rest, boxed, so its timers, backoff and span stay out of the common
    /// path's future: a networked attempt, a wait, or an in-process attempt that
    /// failed.
    Waiting(Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send>>),
}

/// The start of every acquisition, in plain code: validation, then the first
/// attempt. An in-process backend answers it at once, and its usual answers finish
/// here with no await in between: nothing to cancel, nothing to clean up, and no
/// future state to carry.
fn start(
    lock: DynLock,
    key: Result<LockKey, crate::InvalidInput>,
    opts: Acquire,
) -> Result<Started, Error> {
    let caps = lock.capabilities();
    let key = key?;
    opts.validate(&caps)?;
    // Counted before the check, so a shutdown that starts in between waits for
    // this acquisition (and sees it end with `ShutDown`, or release its grant).
    let pending = lock.tracker().map(crate::Tracker::pending);
    if lock.tracker().is_some_and(crate::Tracker::is_closed) {
        return Err(Error::ShutDown {
            key: key.to_string(),
        });
    }
    if opts.keep_alive_value().is_some() && tokio::runtime::Handle::try_current().is_err() {
        return Err(crate::InvalidInput::Option {
            name: "keep_alive",
            reason: "keep-alive runs as a tokio task: acquire from within a tokio runtime, \
                     or turn it off with Acquire::no_keep_alive"
                .into(),
        }
        .into());
    }
    let sent = BootInstant::now();
    let queue = opts.wait_value() != Wait::No;
    let owner = lock.new_owner();
    let request = AttemptRequest {
        key: &key,
        owner: &owner,
        ttl: opts.ttl_value(),
        queue,
        sent,
        woken: false,
    };
    let first = match lock.attempt_now(request) {
        Some(Ok(Attempt::Acquired { fence, valid_from })) => {
            let grant = grant(owner, fence, valid_from, sent);
            return finish(lock, &caps, key, &opts, Ok(Some(grant))).map(Started::Done);
        }
        Some(Ok(Attempt::Busy { .. })) if !queue => {
            return finish(lock, &caps, key, &opts, Ok(None)).map(Started::Done);
        }
        // Queued, or failed with the outcome unknown: the backend may hold
        // something for us from here on.
        Some(answer) => Some(answer),
        None => None,
    };
    let acquisition = Acquisition {
        lock,
        key,
        owner,
        armed: true,
        _pending: pending,
    };
    Ok(Started::Waiting(Box::pin(acquire_slowly(
        acquisition,
        caps,
        opts,
        sent,
        first,
    ))))
}

/// Counts the outcome and, if granted, starts the lease.
fn finish(
    lock: DynLock,
    caps: &crate::Capabilities,
    key: LockKey,
    opts: &Acquire,
    outcome: Result<Option<Grant>, Error>,
) -> Result<Outcome, Error> {
    let label = match &outcome {
        Ok(Some(_)) => AcquireOutcome::Acquired,
        Ok(None) => AcquireOutcome::Busy,
        Err(e) if e.is_timeout() => AcquireOutcome::Timeout,
        Err(_) => AcquireOutcome::Error,
    };
    let labels = metrics::Labels {
        backend: caps.name,
        group: opts.group_value(),
    };
    metrics::acquire_outcome(labels, label);
    match outcome? {
        Some(grant) => {
            let lease = Lease::start(lock, caps, key, grant, opts);
            if lease.is_shut_down() {
                return Err(Error::ShutDown {
                    key: lease.key().to_owned(),
                });
            }
            Ok(Ok(lease))
        }
        None => Ok(Err(key)),
    }
}

/// An acquisition the backend may hold something for: a grant whose answer was
/// lost, a place in the queue. While armed, dropping it (cancelled, timed out,
/// failed) releases with the same owner id. It is armed before a networked first
/// request goes out, and disarmed by a definite answer.
struct Acquisition {
    lock: DynLock,
    key: LockKey,
    owner: OwnerId,
    armed: bool,
    /// Shutdown waits for this acquisition to end, and for the release it leaves.
    _pending: Option<crate::tracker::Pending>,
}

impl Acquisition {
    /// This acquisition's attempt, sent at `sent`; `woken`: after the backend
    /// announced a release.
    fn request(&self, opts: &Acquire, sent: BootInstant, woken: bool) -> AttemptRequest<'_> {
        AttemptRequest {
            key: &self.key,
            owner: &self.owner,
            ttl: opts.ttl_value(),
            queue: opts.wait_value() != Wait::No,
            sent,
            woken,
        }
    }
}

impl Drop for Acquisition {
    fn drop(&mut self) {
        if self.armed {
            Arc::clone(&self.lock).release_in_background(self.key.clone(), self.owner);
        }
    }
}

/// The networked first attempt (when `first` is `None`), then the wait if any.
async fn acquire_slowly(
    mut acquisition: Acquisition,
    caps: crate::Capabilities,
    opts: Acquire,
    sent: BootInstant,
    first: Option<Result<Attempt, Error>>,
) -> Result<Outcome, Error> {
    let first = match first {
        Some(answer) => answer,
        None => send_attempt(&acquisition.lock, acquisition.request(&opts, sent, false)).await,
    };
    crate::tracker::observe(acquisition.lock.as_ref(), &first);
    let outcome = keep_trying(&mut acquisition, &caps, &opts, first, sent).await;
    let (lock, key) = (Arc::clone(&acquisition.lock), acquisition.key.clone());
    finish(lock, &caps, key, &opts, outcome)
}

/// One attempt: answered at once by a backend that needs no I/O, otherwise awaited
/// within the operation timeout.
async fn send_attempt(lock: &DynLock, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
    match lock.attempt_now(request) {
        Some(answer) => answer,
        None => bounded("acquire", lock.operation_timeout(), lock.attempt(request)).await,
    }
}

/// What a grant hands the lease. Validity counts from the earlier of the send time
/// and the server's countdown: never past the server's.
fn grant(
    owner: OwnerId,
    fence: crate::FenceToken,
    valid_from: Option<BootInstant>,
    sent: BootInstant,
) -> Grant {
    Grant {
        owner,
        fence,
        valid_from: grant_valid_from(valid_from, sent),
    }
}

/// Where a grant's validity counts from: the backend's `valid_from`, never later
/// than the send.
fn grant_valid_from(valid_from: Option<BootInstant>, sent: BootInstant) -> BootInstant {
    valid_from.map_or(sent, |from| from.min(sent))
}

/// How long after an acquisition's latest plain attempt (its first, or a retry on
/// a timer) its woken retries may be ordered by the backend
/// ([`AttemptRequest::woken`]: Redlock asks a gate node first). So at least one
/// attempt a second asks as a first attempt does: a gate held by a leftover key,
/// with releases elsewhere waking the waiter again and again, cannot hold it up.
const ORDERED_RETRIES_FOR: Duration = Duration::from_secs(1);

/// Grants in a row that may come back after their validity ended before the
/// acquisition gives up: one is a pause, three are a TTL below the round trip.
const LATE_GRANTS_TOLERATED: u32 = 3;

/// Waits and retries until granted, the deadline passes, or the backend fails for good.
async fn keep_trying(
    acquisition: &mut Acquisition,
    caps: &crate::Capabilities,
    opts: &Acquire,
    mut attempt: Result<Attempt, Error>,
    started: BootInstant,
) -> Result<Option<Grant>, Error> {
    let backend = caps.name;
    let ttl = opts.ttl_value();
    let deadline = match opts.wait_value() {
        Wait::For(limit) => Some(started.saturating_add(limit)),
        Wait::No | Wait::Forever => None,
    };
    let queue = opts.wait_value() != Wait::No;
    let labels = metrics::Labels {
        backend,
        group: opts.group_value(),
    };
    let mut backoff: Option<DecorrelatedJitter> = None;
    let mut contended = false;
    // Made at the first pause: an acquisition that never waits needs no span.
    let mut span: Option<tracing::Span> = None;
    let mut sent = started;
    // The backend's error, while its latest attempt failed: the cause of a timeout.
    let mut failing: Option<Error> = None;
    // Grants in a row whose validity had ended when they came back.
    let mut late_grants = 0u32;
    // Until when woken retries may be ordered (see ORDERED_RETRIES_FOR).
    let mut ordered_until = started.saturating_add(ORDERED_RETRIES_FOR);
    loop {
        // A grant whose validity ended before its answer reached us (the process
        // paused for longer than the TTL after sending): no use to the caller,
        // though the backend may hold the key for us. Asking again with the same
        // owner renews it, with validity counted from the new send.
        // Every grant late, though: the TTL is shorter than the round trip, and
        // asking again cannot help.
        if let Ok(Attempt::Acquired { valid_from, .. }) = &attempt {
            if caps
                .valid_until(grant_valid_from(*valid_from, sent), ttl)
                .has_passed()
            {
                late_grants += 1;
                tracing::debug!(backend, key = %acquisition.key, late_grants, "granted after its validity ended; asking again");
                if late_grants >= LATE_GRANTS_TOLERATED {
                    return Err(Error::InvalidInput(crate::InvalidInput::Option {
                        name: "ttl",
                        reason: format!(
                            "{late_grants} grants in a row came back after their validity ({ttl:?} less the drift) had ended: the TTL is shorter than a round trip to the backend"
                        ),
                    }));
                }
                attempt = Err(Error::unavailable(
                    "the grant arrived after its validity had ended (a pause longer than the TTL)",
                ));
            } else {
                late_grants = 0;
            }
        }
        let pause = match attempt {
            Ok(Attempt::Acquired { fence, valid_from }) => {
                if contended {
                    metrics::acquire_wait(labels, BootInstant::now().secs_since(started));
                }
                acquisition.armed = false;
                return Ok(Some(grant(acquisition.owner, fence, valid_from, sent)));
            }
            Ok(Attempt::Busy { .. }) if !queue => {
                acquisition.armed = false;
                return Ok(None);
            }
            Ok(Attempt::Busy { wake, retry_after }) => {
                failing = None;
                // Queued backends keep our place, so the acquisition stays armed.
                if !contended {
                    contended = true;
                    metrics::contended(labels);
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
            // idempotent per owner) for as long as the caller waits; a caller that
            // does not wait gets the error, and the armed acquisition releases
            // whatever the request may have taken.
            Err(e) if e.is_retryable() && queue => {
                if failing.is_none() {
                    tracing::debug!(backend, key = %acquisition.key, error = %e, "acquire attempt failed; retrying");
                }
                failing = Some(e);
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
                    key: acquisition.key.to_string(),
                    waited: now.saturating_duration_since(started),
                    cause: failing.map(Box::new),
                });
            }
            Some(deadline) => deadline.saturating_duration_since(now),
            None => Duration::MAX,
        };
        let span = span.get_or_insert_with(
            || tracing::debug_span!("dlock.acquire.wait", backend, key = %acquisition.key),
        );
        let lock = Arc::clone(&acquisition.lock);
        let shut_down = async {
            match lock.tracker() {
                Some(tracker) => tracker.closed().await,
                None => std::future::pending().await,
            }
        };
        let woken = tokio::select! {
            woken = pause.wait(left).instrument(span.clone()) => woken,
            // The armed acquisition gives up its place as it is dropped.
            () = shut_down => {
                return Err(Error::ShutDown { key: acquisition.key.to_string() });
            }
        };
        sent = BootInstant::now();
        let woken = woken && sent < ordered_until;
        if !woken {
            ordered_until = sent.saturating_add(ORDERED_RETRIES_FOR);
        }
        acquisition.armed = true;
        attempt = send_attempt(&acquisition.lock, acquisition.request(opts, sent, woken)).await;
        crate::tracker::observe(acquisition.lock.as_ref(), &attempt);
    }
}

/// How to wait before the next attempt.
enum Pause {
    /// Until the backend's wake-up, or this long at most.
    Wake(crate::WakeSignal, Duration),
    Sleep(Duration),
}

impl Pause {
    /// `true` if the backend's wake-up ended it (a release was announced), not a timer.
    async fn wait(self, at_most: Duration) -> bool {
        match self {
            Pause::Wake(wake, limit) => {
                tokio::select! {
                    () = wake => true,
                    () = tokio::time::sleep(limit.min(at_most)) => false,
                }
            }
            Pause::Sleep(delay) => {
                tokio::time::sleep(delay.min(at_most)).await;
                false
            }
        }
    }
}
