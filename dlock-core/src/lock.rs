//! The trait a backend implements: the primitive operations only.
//!
//! Waiting, deadlines, cancellation, keep-alive, the lost signal, release on drop,
//! metrics and tracing are written once, in [`LockExt`](crate::LockExt), on top of it.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::{
    BootInstant, Capabilities, Error, Extension, FenceToken, KeepAlives, LockKey, OwnerId, Tracker,
    election::NativeElection,
};

/// One acquisition attempt, as the machinery sends it to a backend.
#[derive(Clone, Copy, Debug)]
pub struct AttemptRequest<'a> {
    /// The key to lock.
    pub key: &'a LockKey,
    /// The id this acquisition stores as the holder. A retry of the same acquisition
    /// sends the same id, so the backend can recognise a request that already succeeded.
    pub owner: &'a OwnerId,
    /// How long the backend holds the lock unless extended.
    pub ttl: Duration,
    /// The caller will wait if the key is busy: a FIFO backend may queue it.
    /// `false` for `try_acquire`, which must leave nothing behind when busy.
    pub queue: bool,
    /// When this attempt was sent, on the lease clock: the lease's validity is
    /// measured from here. An in-process backend may use it as "now".
    pub sent: BootInstant,
    /// A waiter trying again because the backend's wake-up fired (a release was
    /// announced, or its subscription was confirmed), not a timer: others were
    /// likely woken with it. A quorum backend may order such attempts (Redlock
    /// asks one node first, so waiters woken together do not split the votes).
    /// Never set more than a second after the acquisition's latest plain attempt,
    /// so at least one attempt a second asks as a first attempt does.
    pub woken: bool,
}

/// Who holds a key, as [`Lock::inspect`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The backend's id for the holder, for display: the owner id on Redis, Redlock
    /// and memory; the holder's key name on etcd.
    pub id: String,
    /// The holder's fencing token, where the backend can tell.
    pub fence: Option<FenceToken>,
    /// How long the server still holds the key unless it is extended, where the
    /// backend can tell.
    pub expires_in: Option<Duration>,
    /// The value the holder published ([`Lock::publish`]), if it published one
    /// since it took the key: an election's leader value.
    pub value: Option<Vec<u8>>,
}

impl Holder {
    /// A holder as a backend reports it.
    pub fn new(
        id: impl Into<String>,
        fence: Option<FenceToken>,
        expires_in: Option<Duration>,
    ) -> Self {
        Holder {
            id: id.into(),
            fence,
            expires_in,
            value: None,
        }
    }

    /// The same holder, with the value it published.
    pub fn with_value(mut self, value: Option<Vec<u8>>) -> Self {
        self.value = value;
        self
    }
}

/// A future that resolves when a busy key may have become free.
pub type WakeSignal = BoxFuture<'static, ()>;

/// The result of one acquisition attempt.
pub enum Attempt {
    /// The lock is ours, with this fencing token.
    Acquired {
        /// The token issued in the same atomic step as the acquisition.
        fence: FenceToken,
        /// When the server's countdown for this grant started, if before the attempt
        /// was sent (a lease granted or refreshed by an earlier request of the same
        /// acquisition). `None`: at the send time, as usual.
        valid_from: Option<BootInstant>,
    },
    /// Another holder has the key.
    Busy {
        /// Resolves when the key may be free: the backend's wake-up hook, armed before
        /// the attempt so no release between the two is missed. `None`: back off.
        wake: Option<WakeSignal>,
        /// When the current holder's TTL runs out, if the backend knows.
        retry_after: Option<Duration>,
    },
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Acquired { fence, valid_from } => f
                .debug_struct("Acquired")
                .field("fence", fence)
                .field("valid_from", valid_from)
                .finish(),
            Attempt::Busy { wake, retry_after } => f
                .debug_struct("Busy")
                .field("wake", &wake.is_some())
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// A lock backend: grants leases on named keys.
///
/// # Contract
///
/// Every backend meets these, and the conformance suite (feature `conformance`)
/// checks each one against a real server:
///
/// 1. **Mutual exclusion**: while a lease on K is valid and not released, no other
///    attempt on K succeeds.
/// 2. **Expiry**: a holder that disappears without releasing frees K after the TTL
///    (plus [`Capabilities::expiry_slack`], which grows with leader changes).
/// 3. **Ownership**: `extend` or `release` by an owner whose lease expired and was
///    taken fails with [`Error::LeaseLost`] and leaves the new holder alone.
/// 4. **Fencing**: tokens of successive acquisitions of K strictly increase, across
///    clients and restarts.
/// 5. **Validity**: the server holds the key for at least the TTL measured from
///    when the attempt was sent.
/// 6. **Loss**: `extend` fails once the key is gone or taken.
/// 7. **Cancellation safety**: `attempt` is idempotent per owner id, and `release` by
///    an owner that is only queued removes it from the queue.
/// 8. **Try vs error**: a held key is `Ok(Attempt::Busy)`; `Err` means the backend failed.
///
/// Implement only these methods; use the lock through [`LockExt`](crate::LockExt),
/// which every `Lock` gets for free. The trait is object-safe, so an application can
/// hold an `Arc<dyn Lock>` and pick its backend at run time.
#[async_trait]
pub trait Lock: Send + Sync + 'static {
    /// What this backend promises.
    fn capabilities(&self) -> Capabilities;

    /// One acquisition attempt.
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error>;

    /// Resets the TTL of `owner`'s lease on `key`. [`Error::LeaseLost`] if `owner`
    /// no longer holds it.
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error>;

    /// Extends many leases, answering for each in order. Optional: the default
    /// extends them all at once through [`extend`](Self::extend); a backend that can
    /// do it in one round trip (a Redis pipeline) overrides it, and returns a
    /// [`KeepAlives`] from [`keep_alives`](Self::keep_alives) so that keep-alive
    /// batches its extensions.
    async fn extend_many(&self, batch: &[Extension]) -> Vec<Result<(), Error>> {
        futures::future::join_all(batch.iter().map(|e| self.extend(&e.key, &e.owner, e.ttl))).await
    }

    /// The batcher through which keep-alive sends this lock's extensions, with
    /// [`extend_many`](Self::extend_many). `None`, the default: each lease's
    /// keep-alive calls [`extend`](Self::extend) on its own.
    fn keep_alives(&self) -> Option<&KeepAlives> {
        None
    }

    /// Gives up `owner`'s hold on `key`, or its place in the queue. `Ok(true)` if
    /// `owner` held the lock; `Ok(false)` if it did not (expired, taken, never granted).
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error>;

    /// [`attempt`](Self::attempt), answered without awaiting, by a backend that needs
    /// no I/O (an in-process table). The machinery tries it first: `Some` spares it
    /// the boxed future, which costs as much as such a backend's whole answer. `None`,
    /// the default: await `attempt`.
    fn attempt_now(&self, request: AttemptRequest<'_>) -> Option<Result<Attempt, Error>> {
        let _ = request;
        None
    }

    /// [`release`](Self::release), answered without awaiting; see
    /// [`attempt_now`](Self::attempt_now).
    fn release_now(&self, key: &LockKey, owner: &OwnerId) -> Option<Result<bool, Error>> {
        let _ = (key, owner);
        None
    }

    /// Who holds `key` now, read without taking it, queueing, or issuing a token:
    /// `Ok(None)` if it is free. Optional: a backend that offers it says
    /// [`Capabilities::inspect`]; the default is [`Error::Unsupported`].
    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        let _ = key;
        Err(Error::Unsupported {
            backend: self.capabilities().name,
            operation: "inspect",
        })
    }

    /// Stores `value` as what `owner`, the holder of `key`, publishes on it: an
    /// election's leader value. [`inspect`](Self::inspect) returns it (in
    /// [`Holder::value`]) while `owner` holds the key, and never once another owner
    /// does. [`Error::LeaseLost`] if `owner` does not hold `key`. Optional: a backend
    /// that offers it says [`Capabilities::publish`]; the default is
    /// [`Error::Unsupported`].
    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        let _ = (key, owner, value);
        Err(Error::Unsupported {
            backend: self.capabilities().name,
            operation: "publish",
        })
    }

    /// The backend's own leader election for `name`, where it has one that is
    /// better than an election built on the lock (etcd's, whose campaign writes the
    /// value in the same step). `None`, the default: [`Election`](crate::Election)
    /// builds one from `attempt`, `extend`, `publish` and `inspect`.
    fn native_election(&self, name: &str) -> Option<Result<Arc<dyn NativeElection>, Error>> {
        let _ = name;
        None
    }

    /// A fresh owner id for one acquisition. Networked backends keep the default
    /// (128 bits from the OS); an in-process backend may use a counter.
    fn new_owner(&self) -> OwnerId {
        OwnerId::random()
    }

    /// How long one backend call may take before its outcome counts as unknown.
    fn operation_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// The bookkeeping that [`shutdown`](crate::LockExt::shutdown) and the
    /// backend-health log use. A networked backend keeps a [`Tracker`] and returns
    /// it here. `None`, the default: nothing is tracked, and `shutdown` has nothing
    /// to free (right for an in-process backend, whose locks end with the process).
    fn tracker(&self) -> Option<&Tracker> {
        None
    }

    /// Called by [`shutdown`](crate::LockExt::shutdown) after it released what it
    /// could: what the backend holds for the whole client can go now (etcd's
    /// session lease, and with it any key a failed release left). The default
    /// does nothing.
    async fn close(&self) {}

    /// Releases in the background, for leases dropped without `release` and
    /// acquisitions cancelled mid-flight. The default spawns `release` on the
    /// current tokio runtime (if any); an in-process backend may do it at once.
    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        spawn_release(self, key, owner);
    }
}

/// Spawns `release` on the current tokio runtime (none: the TTL frees the key),
/// counted by the lock's [`Tracker`] so `shutdown` waits for it. The default
/// `release_in_background`, for overrides that do something first.
pub fn spawn_release<L: Lock + ?Sized>(lock: Arc<L>, key: LockKey, owner: OwnerId) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let pending = lock.tracker().map(Tracker::pending);
        handle.spawn(async move {
            let timeout = lock.operation_timeout();
            let result = crate::bounded("release", timeout, lock.release(&key, &owner)).await;
            crate::tracker::observe(lock.as_ref(), &result);
            if let Err(error) = result {
                tracing::debug!(target: "dlock::lease", %key, %error, "background release failed; the TTL will free the key");
            }
            drop(pending);
        });
    }
}

/// A type-erased lock: pick the backend at run time, hold it as one type.
pub type DynLock = Arc<dyn Lock>;
