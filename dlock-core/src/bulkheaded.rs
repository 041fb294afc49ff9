//! `Bulkheaded`: any backend with its acquisition attempts bounded by a bulkhead.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    Attempt, AttemptRequest, Capabilities, Error, Lock, LockKey, OwnerId, reliability::Bulkhead,
};

/// A backend whose acquisition attempts pass through a [`Bulkhead`], so a stampede
/// of waiters cannot flatten the server.
///
/// - Only the attempt itself holds a slot: an acquire sleeping between attempts (on
///   a wake-up or a backoff) holds none.
/// - Extensions and releases bypass it: a holder never queues behind acquirers, so
///   a crowd of waiters cannot make holders lose their leases.
/// - A full bulkhead refuses at once with [`Error::Overloaded`]; an acquire with a
///   wait limit backs off and tries again, as for any retryable error.
/// - A refused attempt does not reach the backend, so it does not keep the
///   waiter's place where the backend keeps one only while the waiter comes back
///   (Redis's line, `PLACE_TTL`): size the bulkhead so waiters are refused for
///   less than that, or they go to the back of the line.
///
/// ```
/// use dlock_core::{Bulkheaded, reliability::Bulkhead};
/// # fn wrap<L: dlock_core::Lock>(backend: L) -> Result<(), dlock_core::reliability::ConfigError> {
/// let bounded = Bulkheaded::new(backend, Bulkhead::with_name("locks", 32, 64)?);
/// # Ok(()) }
/// ```
pub struct Bulkheaded<L> {
    inner: Arc<L>,
    bulkhead: Bulkhead,
}

impl<L> Bulkheaded<L> {
    /// Wraps `inner`; its attempts go through `bulkhead`.
    pub fn new(inner: L, bulkhead: Bulkhead) -> Self {
        Bulkheaded {
            inner: Arc::new(inner),
            bulkhead,
        }
    }

    /// The bulkhead, for its gauges.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L> Clone for Bulkheaded<L> {
    fn clone(&self) -> Self {
        Bulkheaded {
            inner: Arc::clone(&self.inner),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<L> std::fmt::Debug for Bulkheaded<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkheaded")
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<L: Lock> Lock for Bulkheaded<L> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        let _slot = self.bulkhead.acquire().await?;
        self.inner.attempt(request).await
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.inner.extend(key, owner, ttl).await
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.inner.release(key, owner).await
    }

    fn release_now(&self, key: &LockKey, owner: &OwnerId) -> Option<Result<bool, Error>> {
        self.inner.release_now(key, owner)
    }

    fn new_owner(&self) -> OwnerId {
        self.inner.new_owner()
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<crate::Holder>, Error> {
        self.inner.inspect(key).await
    }

    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        self.inner.publish(key, owner, value).await
    }

    fn native_election(&self, name: &str) -> Option<Result<Arc<dyn crate::NativeElection>, Error>> {
        self.inner.native_election(name)
    }

    fn tracker(&self) -> Option<&crate::Tracker> {
        self.inner.tracker()
    }

    fn operation_timeout(&self) -> Duration {
        self.inner.operation_timeout()
    }

    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        Arc::clone(&self.inner).release_in_background(key, owner);
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
