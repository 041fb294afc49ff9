//! What the machinery keeps per lock instance: the leases it holds and the work
//! still running for it in the background, so [`shutdown`](crate::LockExt::shutdown)
//! can free them all before the process exits; and whether its backend answered
//! lately, so an outage is logged once when it starts and once when it ends.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::{BootInstant, Error, lease::LeaseState};

/// Per-lock bookkeeping for shutdown and the backend-health log. A networked
/// backend owns one and returns it from [`Lock::tracker`](crate::Lock::tracker);
/// it has nothing to configure.
#[derive(Default)]
pub struct Tracker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The leases granted and not yet released or dropped, by id.
    leases: Mutex<HashMap<u64, Weak<LeaseState>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    closing: Notify,
    /// Networked acquisitions in flight, and background releases not yet done.
    pending: AtomicUsize,
    idle: Notify,
    /// Set while the backend is failing: when the outage was first seen.
    unreachable: AtomicBool,
    outage_since: Mutex<Option<BootInstant>>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending")
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("leases", &self.lease_count())
            .field("pending", &self.shared.pending.load(Ordering::Relaxed))
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Counts one piece of background work until dropped: shutdown waits for it. A
/// backend that spawns work of its own (a release retried in the background) holds
/// one in that task.
#[must_use = "the work counts only while the guard lives"]
pub struct Pending {
    shared: Arc<Shared>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

impl Tracker {
    /// A tracker with nothing in it.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Whether [`shutdown`](crate::LockExt::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How many leases are held through this lock right now.
    pub fn lease_count(&self) -> usize {
        lock(&self.shared.leases).len()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn register(&self, id: u64, state: &Arc<LeaseState>) {
        lock(&self.shared.leases).insert(id, Arc::downgrade(state));
    }

    pub(crate) fn unregister(&self, id: u64) {
        lock(&self.shared.leases).remove(&id);
    }

    /// Counts work that shutdown waits for, until the guard is dropped.
    pub fn pending(&self) -> Pending {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        Pending {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Resolves once shutdown starts (at once if it has).
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Stops new acquisitions and wakes the waiting ones; returns the live leases.
    pub(crate) fn close(&self) -> Vec<Arc<LeaseState>> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.closing.notify_waiters();
        let mut leases = self.shared.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.drain().filter_map(|(_, s)| s.upgrade()).collect()
    }

    /// Waits until no background work is pending, or `until`; the count left.
    pub(crate) async fn settle(&self, until: BootInstant) -> usize {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.shared.pending.load(Ordering::Acquire);
            if left == 0 || until.has_passed() {
                return left;
            }
            tokio::select! {
                () = notified => {}
                () = crate::clock::sleep_until(until) => {}
            }
        }
    }

    /// Notes how a backend call ended, and logs an outage's start and end once each.
    pub(crate) fn observe<T>(&self, backend: &'static str, result: &Result<T, Error>) {
        let shared = &self.shared;
        match result {
            // Logged by the first failure of an outage only.
            Err(error) if is_outage(error) && !shared.unreachable.swap(true, Ordering::AcqRel) => {
                *lock(&shared.outage_since) = Some(BootInstant::now());
                tracing::warn!(target: "dlock::backend", backend, %error, "backend unreachable");
            }
            Err(error) if is_outage(error) => {}
            // Any answer, even "busy" or "not held", means the backend is reachable.
            // The plain load first keeps the common path to one relaxed read.
            _ if shared.unreachable.load(Ordering::Relaxed)
                && shared.unreachable.swap(false, Ordering::AcqRel) =>
            {
                let since = lock(&shared.outage_since).take();
                let down_for = since.map_or(Duration::ZERO, |s| {
                    BootInstant::now().saturating_duration_since(s)
                });
                tracing::info!(target: "dlock::backend", backend, ?down_for, "backend reachable again");
            }
            _ => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes how a call to `lock`'s backend ended, where the lock keeps a tracker.
pub(crate) fn observe<L: crate::Lock + ?Sized, T>(lock: &L, result: &Result<T, Error>) {
    if let Some(tracker) = lock.tracker() {
        tracker.observe(lock.capabilities().name, result);
    }
}

/// The errors that mean "the backend did not answer", as opposed to an answer.
fn is_outage(error: &Error) -> bool {
    match error {
        Error::Unavailable { .. }
        | Error::OperationTimeout { .. }
        | Error::QuorumUnavailable { .. } => true,
        Error::Timeout { cause, .. } => cause.as_deref().is_some_and(is_outage),
        _ => false,
    }
}

/// What [`shutdown`](crate::LockExt::shutdown) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Leases released on the backend.
    pub released: usize,
    /// Leases the backend no longer had (expired or taken before the shutdown).
    pub not_held: usize,
    /// Leases whose release failed or ran out of time: their TTL frees them.
    pub failed: usize,
    /// Background work (releases of dropped leases, cancelled waits) still running
    /// when the time was up.
    pub unfinished: usize,
}

impl ShutdownReport {
    /// Everything was released or already gone, and nothing is left running.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.unfinished == 0
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} released, {} no longer held, {} failed, {} background operations unfinished",
            self.released, self.not_held, self.failed, self.unfinished
        )
    }
}
