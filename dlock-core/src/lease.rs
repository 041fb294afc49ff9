//! Leases: the right to a key, with its fencing token, validity, keep-alive,
//! lost signal and release on drop.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use crate::{
    BootInstant, DynLock, Error, FenceToken, LockKey, LossReason, OwnerId,
    call::bounded,
    clock,
    metrics::{self, ReleaseOutcome},
    options::validate_ttl,
};

/// What a lease, its handles and its keep-alive task share. The fixed facts live
/// here too, so a `Lease` is a few words to move around.
pub(crate) struct LeaseState {
    backend: &'static str,
    /// The metrics group the acquisition named.
    group: Option<&'static str>,
    key: LockKey,
    owner: OwnerId,
    fence: FenceToken,
    acquired_at: BootInstant,
    /// `valid_until` as nanoseconds on the lease clock.
    valid_until: AtomicU64,
    ttl_nanos: AtomicU64,
    /// When the newest extension counted so far was sent (the grant, at first), as
    /// nanoseconds on the lease clock. Written only by the holder of the turn below.
    newest_extension: AtomicU64,
    /// The extension turn ([`ExtensionTurn`]), held across each extension call, by
    /// keep-alive and `extend_with` alike: the server applies extensions in the
    /// order they arrive, so only one may be in flight, or a slow keep-alive tick
    /// could land after a manual one and cut the server's expiry below
    /// `valid_until`. A flag and `changed`, not a mutex: 40 bytes less per lease.
    extending: AtomicBool,
    /// Zero while not known lost; then the [`LossReason`] (its code), first one wins.
    lost: AtomicU8,
    /// The latest extension failed without an answer: if validity now runs out, the
    /// backend was unreachable rather than the lease left to expire.
    extend_failing: AtomicBool,
    /// Whether the holder let go: `HOLDING`, `IN_DOUBT` (a release went out while
    /// valid and its outcome is unknown) or `LET_GO` (released, or dropped for a
    /// background release); validity running out after either is no loss. Or
    /// `RAN_OUT`: a `lost()` waiter saw validity end first. One atomic decides
    /// between a release and a waiter racing at `valid_until`.
    let_go: AtomicU8,
    /// This lease's id in its lock's [`Tracker`](crate::Tracker); 0: untracked.
    track_id: u64,
    changed: Notify,
}

/// `LeaseState::let_go`: still held.
const HOLDING: u8 = 0;
/// `LeaseState::let_go`: released while valid, the outcome unknown; running out
/// still reads as `Unreachable`, but counts as no loss.
const IN_DOUBT: u8 = 1;
/// `LeaseState::let_go`: released, or dropped for a background release.
const LET_GO: u8 = 2;
/// `LeaseState::let_go`: validity ran out while held, seen by a `lost()` waiter.
const RAN_OUT: u8 = 3;

fn reason_code(reason: LossReason) -> u8 {
    match reason {
        LossReason::Expired => 1,
        LossReason::Taken => 2,
        LossReason::Gone => 3,
        LossReason::Unreachable => 4,
        LossReason::ShutDown => 5,
    }
}

fn reason_from(code: u8) -> Option<LossReason> {
    Some(match code {
        1 => LossReason::Expired,
        2 => LossReason::Taken,
        3 => LossReason::Gone,
        4 => LossReason::Unreachable,
        5 => LossReason::ShutDown,
        _ => return None,
    })
}

impl LeaseState {
    fn valid_until(&self) -> BootInstant {
        BootInstant::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed))
    }

    /// Records an extension sent at `sent`. The newest extension wins, even when it
    /// shortens the lease (`extend_with` a smaller TTL): the server now expires the
    /// key at that earlier time.
    /// Called with the extension turn held, so nothing else writes meanwhile.
    fn extended(&self, sent: BootInstant, valid_until: BootInstant, ttl: Duration) {
        if sent < self.newest_extension() {
            return;
        }
        self.newest_extension
            .store(sent.as_nanos(), Ordering::Release);
        self.ttl_nanos.store(clock::nanos(ttl), Ordering::Relaxed);
        self.valid_until
            .store(valid_until.as_nanos(), Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Before an extension that shortens the lease is sent: the server may apply
    /// it even if its answer never comes, so from now on the lease is only as valid
    /// as the shorter TTL says, and keep-alive plans with it.
    fn shortening(&self, valid_until: BootInstant, ttl: Duration) {
        if valid_until < self.valid_until() {
            self.ttl_nanos.store(clock::nanos(ttl), Ordering::Relaxed);
            self.valid_until
                .store(valid_until.as_nanos(), Ordering::Release);
            self.changed.notify_waiters();
        }
    }

    fn newest_extension(&self) -> BootInstant {
        BootInstant::from_nanos(self.newest_extension.load(Ordering::Acquire))
    }

    /// Waits for the extension in flight, if any, then takes the turn. Dropping the
    /// turn (or this future) gives it back.
    async fn extension_turn(&self) -> ExtensionTurn<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before trying, so a turn given back in between is not missed.
            notified.as_mut().enable();
            if self
                .extending
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return ExtensionTurn(self);
            }
            notified.await;
        }
    }

    pub(crate) fn key(&self) -> &LockKey {
        &self.key
    }

    pub(crate) fn labels(&self) -> metrics::Labels {
        metrics::Labels {
            backend: self.backend,
            group: self.group,
        }
    }

    pub(crate) fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// Released by shutdown (one atomic load, no clock read).
    fn is_shut_down(&self) -> bool {
        self.lost.load(Ordering::Acquire) == reason_code(LossReason::ShutDown)
    }

    fn is_marked_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) != 0
    }

    fn is_lost(&self) -> bool {
        self.is_marked_lost() || self.valid_until().has_passed()
    }

    /// Why the lease was lost: the reason recorded, or, past `valid_until`, the
    /// reason running out implies. `None` while it is valid, and after the holder
    /// let it go without a loss.
    fn lost_reason(&self) -> Option<LossReason> {
        reason_from(self.lost.load(Ordering::Acquire)).or_else(|| {
            (self.valid_until().has_passed() && self.let_go.load(Ordering::Acquire) != LET_GO)
                .then(|| self.expiry_reason())
        })
    }

    /// Why a lease that ran out did: its extensions were failing, or none came.
    fn expiry_reason(&self) -> LossReason {
        if self.extend_failing.load(Ordering::Acquire) {
            LossReason::Unreachable
        } else {
            LossReason::Expired
        }
    }

    /// Marks the lease lost, once: the first reason is kept, counted and logged.
    pub(crate) fn mark_lost(&self, reason: LossReason) {
        if self
            .lost
            .compare_exchange(0, reason_code(reason), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::lease_lost(self.labels(), reason);
            if reason == LossReason::ShutDown {
                tracing::debug!(target: "dlock::lease", backend = self.backend, key = %self.key, fence = self.fence.get(), reason = reason.as_str(), "lease released by shutdown");
            } else {
                tracing::warn!(target: "dlock::lease", backend = self.backend, key = %self.key, fence = self.fence.get(), reason = reason.as_str(), "lease lost: {reason}");
            }
        }
        self.changed.notify_waiters();
    }

    /// After an extension failed: the backend's "not held" loses the lease; an
    /// outage leaves it to the retries, and to the end of validity.
    fn failed_extension(&self, error: &Error) {
        match error {
            Error::LeaseLost { reason, .. } => self.mark_lost(*reason),
            e if e.is_retryable() => self.extend_failing.store(true, Ordering::Release),
            _ => {}
        }
    }

    /// A release went out and its outcome is unknown (no answer in time, an error
    /// that leaves it open, or the call dropped). While the lease is valid, the
    /// release may have landed and the key gone to the next holder: validity ends
    /// now, and the release is in doubt, which is no loss (the work before it
    /// ended in time). Past validity (or lost already), the lease ran out with the
    /// release still out: lost, as a late "held" would say. `true` if in doubt.
    fn release_unknown(&self, now: BootInstant) -> bool {
        if self.let_go.load(Ordering::Acquire) == IN_DOUBT {
            return true;
        }
        if now < self.valid_until()
            && !self.is_marked_lost()
            && self
                .let_go
                .compare_exchange(HOLDING, IN_DOUBT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.extend_failing.store(true, Ordering::Release);
            self.shortening(now, self.ttl());
            return true;
        }
        self.ran_out();
        false
    }

    /// A release that went out while valid has an unknown outcome (see
    /// `release_unknown`): the next release confirms it.
    fn release_in_doubt(&self) -> bool {
        self.let_go.load(Ordering::Acquire) == IN_DOUBT
    }

    /// Validity ended while held: counted lost once, whoever sees it first.
    fn ran_out(&self) {
        let _ = self
            .let_go
            .compare_exchange(HOLDING, RAN_OUT, Ordering::AcqRel, Ordering::Acquire);
        self.mark_expired();
    }

    /// Marks a lease that ran out as lost, with the reason running out implies.
    fn mark_expired(&self) {
        self.mark_lost(self.expiry_reason());
    }

    fn lost_error(&self) -> Error {
        Error::lease_lost(
            self.key.as_str(),
            self.lost_reason().unwrap_or(LossReason::Expired),
        )
    }

    /// Resolves once the lease is lost: marked lost, or past `valid_until`.
    async fn wait_lost(self: Arc<Self>) {
        self.lost_or_within(Duration::ZERO).await;
        if !self.is_marked_lost()
            && self
                .let_go
                .compare_exchange(HOLDING, RAN_OUT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.mark_expired();
        }
    }

    /// Resolves once the lease is marked lost, or no more than `margin` of its
    /// validity is left.
    async fn lost_or_within(&self, margin: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the checks below, so a change between them is not missed.
            notified.as_mut().enable();
            let until = self.valid_until().saturating_sub(margin);
            if self.is_marked_lost() || until.has_passed() {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = clock::sleep_until(until) => {}
            }
        }
    }
}

/// Armed while a release is out: dropped unanswered (the caller's timeout or
/// `select!` around `release()`), the release's outcome is unknown
/// (`LeaseState::release_unknown`).
struct ReleaseOut<'a> {
    state: &'a LeaseState,
    armed: bool,
}

impl ReleaseOut<'_> {
    fn answered(mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseOut<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.release_unknown(BootInstant::now());
        }
    }
}

/// The right to send the lease's one extension in flight; see `LeaseState::extending`.
struct ExtensionTurn<'a>(&'a LeaseState);

impl Drop for ExtensionTurn<'_> {
    fn drop(&mut self) {
        self.0.extending.store(false, Ordering::Release);
        self.0.changed.notify_waiters();
    }
}

/// An exclusive, time-bounded right to a key.
///
/// It carries the key, the fencing token issued with it, and `valid_until`, a
/// conservative deadline on the lease clock (which, on Linux, counts time the machine
/// spent suspended). Pass [`fence`](Self::fence) with every write to the protected
/// resource.
///
/// Dropping a lease without [`release`](Self::release) releases it in the background,
/// best effort: the release is not immediate, and if it cannot reach the backend the
/// TTL frees the key. A lease dropped while the runtime shuts down (when `main`
/// returns) is not released at all: call [`shutdown`](crate::LockExt::shutdown)
/// first, which releases every lease the lock still holds and waits for the
/// background releases.
pub struct Lease {
    lock: DynLock,
    state: Arc<LeaseState>,
    keep_alive: Option<JoinHandle<()>>,
    released: bool,
}

/// A cheap, cloneable view of a lease for the work done under it: its key, its
/// token, and its lost signal. It cannot release or extend the lease.
#[derive(Clone)]
pub struct LeaseHandle {
    state: Arc<LeaseState>,
}

/// What a successful acquisition hands to the lease.
pub(crate) struct Grant {
    pub(crate) owner: OwnerId,
    pub(crate) fence: FenceToken,
    /// When the server's TTL started, at the earliest: validity counts from here.
    pub(crate) valid_from: BootInstant,
}

impl Lease {
    /// Passed by parts and by reference: this is on every acquisition's path, and
    /// moving a large struct through it cost more than the rest of the call.
    pub(crate) fn start(
        lock: DynLock,
        caps: &crate::Capabilities,
        key: LockKey,
        grant: Grant,
        opts: &crate::Acquire,
    ) -> Lease {
        let Grant {
            owner,
            fence,
            valid_from,
        } = grant;
        let ttl = opts.ttl_value();
        let tracker = lock.tracker();
        let track_id = tracker.map_or(0, crate::Tracker::next_id);
        let state = Arc::new(LeaseState {
            backend: caps.name,
            group: opts.group_value(),
            key,
            owner,
            fence,
            acquired_at: valid_from,
            valid_until: AtomicU64::new(caps.valid_until(valid_from, ttl).as_nanos()),
            ttl_nanos: AtomicU64::new(clock::nanos(ttl)),
            newest_extension: AtomicU64::new(valid_from.as_nanos()),
            extending: AtomicBool::new(false),
            lost: AtomicU8::new(0),
            extend_failing: AtomicBool::new(false),
            let_go: AtomicU8::new(HOLDING),
            track_id,
            changed: Notify::new(),
        });
        metrics::describe();
        metrics::held(state.labels(), 1.0);
        if let Some(tracker) = tracker {
            tracker.register(track_id, &state);
            if tracker.is_closed() {
                // Granted while shutdown ran, maybe after it collected the leases:
                // give it back (shutdown waits for this release).
                tracker.unregister(track_id);
                state.mark_lost(LossReason::ShutDown);
                Arc::clone(&lock).release_in_background(state.key.clone(), state.owner);
            }
        }
        let keep_alive = opts.keep_alive_value().map(|fraction| {
            let span =
                tracing::debug_span!("dlock.keep_alive", backend = caps.name, key = %state.key);
            tokio::spawn(tracing::Instrument::instrument(
                keep_alive_task(KeepAlive {
                    lock: Arc::clone(&lock),
                    drift_of: *caps,
                    state: Arc::clone(&state),
                    fraction,
                }),
                span,
            ))
        });
        Lease {
            lock,
            state,
            keep_alive,
            released: false,
        }
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        self.state.key.as_str()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.state.is_shut_down()
    }

    /// The fencing token issued with this lease.
    pub fn fence(&self) -> FenceToken {
        self.state.fence
    }

    /// The id the backend stores as this lease's holder.
    pub fn owner(&self) -> OwnerId {
        self.state.owner
    }

    /// The TTL of the last grant or extension.
    pub fn ttl(&self) -> Duration {
        self.state.ttl()
    }

    /// Until when this holder may assume it holds the lock: never later than the
    /// server-side expiry measured from when the request was sent, minus drift.
    pub fn valid_until(&self) -> BootInstant {
        self.state.valid_until()
    }

    /// Time left until [`valid_until`](Self::valid_until); zero once lost.
    pub fn remaining(&self) -> Duration {
        if self.state.is_marked_lost() {
            return Duration::ZERO;
        }
        self.valid_until().remaining()
    }

    /// Why the lease was lost, once it is: expired, taken, gone, the backend
    /// unreachable, or shut down. `None` while it is valid, and after it was let
    /// go while valid (released, or dropped): its validity running out later is no
    /// loss. After a release in doubt, `Unreachable`, though not counted as lost.
    pub fn lost_reason(&self) -> Option<LossReason> {
        self.state.lost_reason()
    }

    /// Not released, not lost, and not past `valid_until`.
    pub fn is_valid(&self) -> bool {
        !self.released && !self.state.is_lost()
    }

    /// Resolves when this holder can no longer assume it holds the lock: at
    /// `valid_until` unless extended, or as soon as an extension finds the key gone or
    /// taken. With keep-alive on, it fires no later than `valid_until` once extension
    /// stops succeeding. The future owns what it needs, so it can be moved into a task.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        Arc::clone(&self.state).wait_lost()
    }

    /// A cloneable view for the work done under this lease.
    pub fn handle(&self) -> LeaseHandle {
        LeaseHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Extends the lease by its TTL, measured from now.
    pub async fn extend(&mut self) -> Result<(), Error> {
        let ttl = self.state.ttl();
        self.extend_with(ttl).await
    }

    /// Extends the lease with a new TTL, measured from now.
    pub async fn extend_with(&mut self, ttl: Duration) -> Result<(), Error> {
        if self.released {
            return Err(Error::LeaseReleased {
                key: self.key().to_owned(),
            });
        }
        validate_ttl(ttl, &self.lock.capabilities())?;
        // Wait for an extension in flight (keep-alive's) to finish first.
        let _turn = self.state.extension_turn().await;
        if self.state.is_lost() {
            self.state.mark_expired();
            return Err(self.state.lost_error());
        }
        let sent = BootInstant::now();
        let valid_until = self.lock.capabilities().valid_until(sent, ttl);
        self.state.shortening(valid_until, ttl);
        let budget = self.budget(sent);
        let outcome = bounded(
            "extend",
            budget,
            self.lock.extend(&self.state.key, &self.state.owner, ttl),
        )
        .await;
        crate::tracker::observe(self.lock.as_ref(), &outcome);
        match outcome {
            Ok(()) => {
                self.state.extended(sent, valid_until, ttl);
                self.state.extend_failing.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.state.failed_extension(&e);
                Err(e)
            }
        }
    }

    /// Releases the lease. [`Error::LeaseLost`] if it was lost before the release
    /// was answered: it expired (passed `valid_until`, even while the release was
    /// out), was taken, or [`shutdown`](crate::LockExt::shutdown) released it; the
    /// new holder, if any, is left alone. [`Error::LeaseReleased`]
    /// if released before. On any other error the lease stays unreleased: call
    /// again, or drop it to release in the background. It is no longer valid,
    /// though, if the error leaves the outcome unknown (a timeout, a lost answer):
    /// the release may have landed and the key gone to the next holder, so its
    /// validity ends there (`lost()` fires, [`LossReason::Unreachable`]). That is
    /// not a loss of the work done before, which ended in time: the next call
    /// answers `Ok` once the backend answers, and nothing counts it as lost.
    pub async fn release(&mut self) -> Result<(), Error> {
        if self.released {
            return Err(Error::LeaseReleased {
                key: self.key().to_owned(),
            });
        }
        self.stop_keep_alive();
        if self.state.is_shut_down() {
            // Shutdown released it already (and counted it).
            self.finish(BootInstant::now());
            return Err(self.state.lost_error());
        }
        let (key, owner) = (&self.state.key, &self.state.owner);
        let answer = match self.lock.release_now(key, owner) {
            Some(answer) => answer,
            None => {
                let out = ReleaseOut {
                    state: &self.state,
                    armed: true,
                };
                let timeout = self.lock.operation_timeout();
                let outcome = bounded("release", timeout, self.lock.release(key, owner)).await;
                out.answered();
                crate::tracker::observe(self.lock.as_ref(), &outcome);
                outcome
            }
        };
        let held = match answer {
            Ok(held) => held,
            Err(error) => {
                metrics::release(self.state.labels(), ReleaseOutcome::Error);
                if error.is_retryable() && !self.state.release_unknown(BootInstant::now()) {
                    // Ran out with the release out: lost, whatever the release did.
                    // Not finished: calling again, or dropping, still frees the key.
                    return Err(self.state.lost_error());
                }
                return Err(error);
            }
        };
        let now = BootInstant::now();
        self.finish(now);
        if self.state.release_in_doubt() {
            // The first release went out while the lease was valid; this one only
            // confirms the key is no longer ours.
            metrics::release(self.state.labels(), ReleaseOutcome::Released);
            return Ok(());
        }
        // Past valid_until the holder could not assume it held the lock, even if the
        // server (whose clock may run slower) still had it. Let go only after the
        // loss checks, and only if no lost() waiter saw validity end first: a lease
        // already lost stays counted as lost.
        if held
            && now < self.state.valid_until()
            && !self.state.is_marked_lost()
            && self
                .state
                .let_go
                .compare_exchange(HOLDING, LET_GO, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            metrics::release(self.state.labels(), ReleaseOutcome::Released);
            Ok(())
        } else {
            metrics::release(self.state.labels(), ReleaseOutcome::Lost);
            if held || now >= self.state.valid_until() {
                self.state.ran_out();
            } else {
                self.state.mark_lost(LossReason::Gone);
            }
            Err(self.state.lost_error())
        }
    }

    /// Gives up the lease without releasing it, as a crashed holder would: no
    /// keep-alive, no release on drop. The key stays held until its TTL runs out.
    pub fn leave_to_expire(mut self) {
        self.stop_keep_alive();
        self.released = true;
        self.end_hold(BootInstant::now());
        self.untrack();
    }

    /// Done with the lease: released (or found lost) on the backend.
    fn finish(&mut self, now: BootInstant) {
        self.released = true;
        self.end_hold(now);
        self.untrack();
    }

    fn untrack(&self) {
        if let Some(tracker) = self.lock.tracker() {
            tracker.unregister(self.state.track_id);
        }
    }

    /// A call's timeout: the backend's operation timeout, but never past validity.
    fn budget(&self, now: BootInstant) -> Duration {
        let left = self.state.valid_until().saturating_duration_since(now);
        self.lock.operation_timeout().min(left)
    }

    fn stop_keep_alive(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }

    /// The lease is no longer held by this process: counted off the gauge, its
    /// hold time recorded.
    fn end_hold(&self, now: BootInstant) {
        metrics::held(self.state.labels(), -1.0);
        metrics::hold(self.state.labels(), now.secs_since(self.state.acquired_at));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_keep_alive();
        if !self.released {
            self.end_hold(BootInstant::now());
            self.untrack();
            if self.state.is_shut_down() {
                return;
            }
            metrics::release(self.state.labels(), ReleaseOutcome::Background);
            // A lease that ran out unnoticed still counts as lost (not one whose
            // validity ended with a release in doubt: its work ended in time).
            if self.state.is_lost() && !self.state.release_in_doubt() {
                self.state.ran_out();
            }
            let _ = self.state.let_go.compare_exchange(
                HOLDING,
                LET_GO,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            Arc::clone(&self.lock).release_in_background(self.state.key.clone(), self.state.owner);
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.state.backend)
            .field("key", &self.state.key)
            .field("fence", &self.state.fence)
            .field("remaining", &self.remaining())
            .field("keep_alive", &self.keep_alive.is_some())
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

impl LeaseHandle {
    /// The lock key.
    pub fn key(&self) -> &str {
        self.state.key.as_str()
    }

    /// The fencing token issued with the lease.
    pub fn fence(&self) -> FenceToken {
        self.state.fence
    }

    /// The id the backend stores as the lease's holder.
    pub fn owner(&self) -> OwnerId {
        self.state.owner
    }

    /// Not lost and not past `valid_until` (a released lease still reads as valid here).
    pub fn is_valid(&self) -> bool {
        !self.state.is_lost()
    }

    /// Until when the holder may assume it holds the lock.
    pub fn valid_until(&self) -> BootInstant {
        self.state.valid_until()
    }

    /// Resolves when the lease is lost; see [`Lease::lost`].
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        Arc::clone(&self.state).wait_lost()
    }

    /// Why the lease was lost, once it is; see [`Lease::lost_reason`].
    pub fn lost_reason(&self) -> Option<LossReason> {
        self.state.lost_reason()
    }

    /// Resolves when the lease is lost, or when no more than `margin` of its
    /// validity is left: an election's renew deadline, which steps a leader down
    /// before another candidate can take the key.
    pub(crate) async fn lost_or_within(self, margin: Duration) {
        self.state.lost_or_within(margin).await;
    }
}

impl From<&Lease> for LeaseHandle {
    fn from(lease: &Lease) -> LeaseHandle {
        lease.handle()
    }
}

impl From<&LeaseHandle> for LeaseHandle {
    fn from(handle: &LeaseHandle) -> LeaseHandle {
        handle.clone()
    }
}

impl From<&Lease> for FenceToken {
    fn from(lease: &Lease) -> FenceToken {
        lease.fence()
    }
}

impl From<&LeaseHandle> for FenceToken {
    fn from(handle: &LeaseHandle) -> FenceToken {
        handle.fence()
    }
}

impl fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("key", &self.state.key)
            .field("fence", &self.state.fence)
            .finish_non_exhaustive()
    }
}

struct KeepAlive {
    lock: DynLock,
    drift_of: crate::Capabilities,
    state: Arc<LeaseState>,
    fraction: f64,
}

/// How long keep-alive waits after a failed extension: a quarter of the validity
/// left, at least 5 ms so it does not spin, but never longer than its usual period
/// (which, for TTLs of a few milliseconds, is shorter than 5 ms).
fn retry_pause(left: Duration, ttl: Duration, fraction: f64) -> Duration {
    (left / 4)
        .max(Duration::from_millis(5))
        .min(ttl.mul_f64(fraction))
}

/// Extends the lease each time `fraction` of its TTL has passed since the newest
/// extension, whoever made it: a manual `extend_with` (longer or shorter) reschedules
/// it at once. A failed extension is retried sooner, and every call is bounded by the
/// validity left, so the lease is marked lost no later than `valid_until` once
/// extension stops succeeding.
async fn keep_alive_task(ka: KeepAlive) {
    // After a failure: the newest extension then, and when to try again. Dropped as
    // soon as another extension succeeds.
    let mut retry: Option<(BootInstant, BootInstant)> = None;
    // Failures in a row: the first is logged as a warning, the rest at debug, and
    // the recovery once, so an outage costs two lines per lease, not one per retry.
    let mut failures: u32 = 0;
    loop {
        let changed = ka.state.changed.notified();
        tokio::pin!(changed);
        // Registered before reading the state, so a change in between is not missed.
        changed.as_mut().enable();
        if ka.state.is_lost() {
            ka.state.mark_expired();
            return;
        }
        let newest = ka.state.newest_extension();
        let period = ka.state.ttl().mul_f64(ka.fraction);
        let next = match retry {
            Some((seen, at)) if seen == newest => at,
            _ => newest.saturating_add(period),
        };
        let due = next.min(ka.state.valid_until());
        // Batched, it wakes a quarter period early to board the batch that departs
        // by `due`: leases due within that much of each other go together.
        let batches = ka.lock.keep_alives();
        let wake = match batches {
            Some(_) => due.saturating_sub(period / 4),
            None => due,
        };
        tokio::select! {
            () = clock::sleep_until(wake) => {}
            // Extended elsewhere, shortened, or lost: plan again.
            () = changed => continue,
        }
        let turn = ka.state.extension_turn().await;
        if ka.state.newest_extension() != newest {
            // A manual extension went first while this one waited for its turn.
            continue;
        }
        if ka.state.is_lost() {
            ka.state.mark_expired();
            return;
        }
        let ttl = ka.state.ttl();
        let sent = BootInstant::now();
        let left = ka.state.valid_until().saturating_duration_since(sent);
        // Batched, the wait for the batch to leave (up to a quarter period, longer
        // than the operation timeout for long TTLs) is not a round trip: the batch
        // bounds its call by the operation timeout from when it leaves, and here
        // only the validity left bounds the whole.
        let budget = match batches {
            Some(_) => left,
            None => ka.lock.operation_timeout().min(left),
        };
        // Batched, the TTL counts from when the batch went out, a little later.
        let outcome = bounded("extend", budget, async {
            match batches {
                Some(batches) => {
                    let extension = crate::Extension {
                        key: ka.state.key.clone(),
                        owner: ka.state.owner,
                        ttl,
                    };
                    batches.extend(&ka.lock, extension, due).await
                }
                None => ka
                    .lock
                    .extend(&ka.state.key, &ka.state.owner, ttl)
                    .await
                    .map(|()| sent),
            }
        })
        .await;
        drop(turn);
        crate::tracker::observe(ka.lock.as_ref(), &outcome);
        match outcome {
            Ok(sent) => {
                let valid_until = ka.drift_of.valid_until(sent, ttl);
                ka.state.extended(sent, valid_until, ttl);
                ka.state.extend_failing.store(false, Ordering::Release);
                retry = None;
                if failures > 0 {
                    tracing::info!(target: "dlock::keep_alive", backend = ka.state.backend, key = %ka.state.key, fence = ka.state.fence.get(), failures, "keep-alive extended the lease again");
                    failures = 0;
                }
            }
            Err(error) if error.is_lease_lost() => {
                ka.state.failed_extension(&error);
                return;
            }
            Err(error) => {
                ka.state.failed_extension(&error);
                metrics::extend_failed(ka.state.labels());
                // Retry well before validity runs out, but do not spin.
                let left = ka.state.valid_until().remaining();
                if failures == 0 {
                    tracing::warn!(target: "dlock::keep_alive", backend = ka.state.backend, key = %ka.state.key, fence = ka.state.fence.get(), %error, ?left, "keep-alive extension failed; retrying until the lease runs out");
                } else {
                    tracing::debug!(target: "dlock::keep_alive", backend = ka.state.backend, key = %ka.state.key, %error, ?left, "keep-alive extension failed again");
                }
                failures = failures.saturating_add(1);
                let at = BootInstant::now().saturating_add(retry_pause(left, ttl, ka.fraction));
                retry = Some((newest, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pause_stays_within_the_period_even_for_tiny_ttls() {
        let ms = Duration::from_millis;
        // A 10 ms TTL at a third: the period (3.3 ms) is below the 5 ms floor.
        assert_eq!(
            retry_pause(ms(8), ms(10), 1.0 / 3.0),
            ms(10).mul_f64(1.0 / 3.0)
        );
        assert_eq!(retry_pause(ms(400), ms(3000), 1.0 / 3.0), ms(100));
        assert_eq!(retry_pause(ms(4), ms(3000), 1.0 / 3.0), ms(5));
        // Degenerate input: no panic, and never above the period.
        let period = Duration::from_nanos(2).mul_f64(0.5);
        assert!(retry_pause(Duration::ZERO, Duration::from_nanos(2), 0.5) <= period);
    }
}
