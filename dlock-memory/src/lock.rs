//! `MemoryLock`: the in-process backend.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, BootInstant, Capabilities, Error, ExpiryScope, FenceSource,
    FenceToken, Holder, Lock, LockKey, LossReason, OwnerId,
};

use crate::table::{Outcome, Table};

/// Locks shared by the tasks and threads of one process: the embedded default.
///
/// Clones share one table, so hand a clone to every task. It meets the whole
/// contract: FIFO waiting with per-key wake-ups (no polling), fencing tokens from one
/// monotonic counter, and expired entries reclaimed so the table does not grow.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), dlock_core::Error> {
/// use std::time::Duration;
/// use dlock_core::{Acquire, LockExt};
/// use dlock_memory::MemoryLock;
///
/// let locks = MemoryLock::new();
/// let mut lease = locks.acquire("order:123", Acquire::ttl(Duration::from_secs(10))).await?;
/// assert!(locks.try_acquire("order:123", Duration::from_secs(10)).await?.is_none());
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryLock {
    inner: Arc<Inner>,
}

/// Published values by key, with their publisher.
type Published = HashMap<LockKey, (OwnerId, Arc<[u8]>)>;

#[derive(Default)]
struct Inner {
    table: Mutex<Table>,
    owners: AtomicU64,
    /// What holders published ([`Lock::publish`]), with who published it: apart from
    /// the table, so a lease's entry stays small. One per election name; a value
    /// whose publisher no longer holds the key is never returned, and is dropped
    /// when read.
    values: Mutex<Published>,
}

impl MemoryLock {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys have an entry (held, or with waiters). Expired entries are
    /// reclaimed as new keys arrive; [`reclaim_expired`](Self::reclaim_expired) does it now.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// No key is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired entry now; returns how many entries remain.
    pub fn reclaim_expired(&self) -> usize {
        self.table().sweep(BootInstant::now())
    }

    /// Drops the holder of `key`, whoever it is, as an operator breaking a stuck lock
    /// would. The holder's next extension fails and its `lost()` fires.
    pub fn force_release(&self, key: &str) -> bool {
        self.table().force_release(key)
    }

    /// One attempt against the table: no I/O, so it is answered at once.
    fn answer(&self, req: AttemptRequest<'_>) -> Attempt {
        let outcome = self
            .table()
            .attempt(req.key, req.owner, req.ttl, req.queue, req.sent);
        match outcome {
            Outcome::Granted(fence) => Attempt::Acquired {
                fence,
                valid_from: None,
            },
            Outcome::Busy { wake, retry_after } => Attempt::Busy {
                wake: wake.map(|n| -> dlock_core::WakeSignal {
                    Box::pin(async move { n.notified().await })
                }),
                retry_after,
            },
        }
    }

    fn values(&self) -> MutexGuard<'_, Published> {
        self.inner.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder of the mutex panicked: every
        // method finishes its changes before it can panic.
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MemoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLock")
            .field("keys", &self.len())
            .finish()
    }
}

#[async_trait]
impl Lock for MemoryLock {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "memory",
            fencing: true,
            fifo: true,
            wake_on_release: true,
            min_ttl: Duration::from_millis(1),
            max_ttl: Duration::MAX,
            ttl_granularity: Duration::ZERO,
            expiry_slack_fixed: Duration::ZERO,
            leader_change_renews_leases: false,
            expiry_scope: ExpiryScope::PerLease,
            // One clock, in one process: nothing drifts.
            drift_factor: 0.0,
            drift_fixed: Duration::ZERO,
            inspect: true,
            publish: true,
        }
    }

    async fn attempt(&self, req: AttemptRequest<'_>) -> Result<Attempt, Error> {
        Ok(self.answer(req))
    }

    fn attempt_now(&self, req: AttemptRequest<'_>) -> Option<Result<Attempt, Error>> {
        Some(Ok(self.answer(req)))
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.table()
            .extend(key.as_str(), owner, ttl, BootInstant::now())
            .map_err(|reason| Error::lease_lost(key.as_str(), reason))
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        Ok(self.table().release(key.as_str(), owner))
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        let mut table = self.table();
        let Some((owner, fence, left)) = table.holder(key.as_str(), BootInstant::now()) else {
            return Ok(None);
        };
        let mut values = self.values();
        let value = match values.get(key.as_str()) {
            Some((publisher, value)) if *publisher == owner => Some(value.to_vec()),
            Some(_) => {
                values.remove(key.as_str());
                None
            }
            None => None,
        };
        Ok(Some(
            Holder::new(owner.to_string(), Some(fence), Some(left)).with_value(value),
        ))
    }

    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        // Under the table's lock, so the holder cannot change between check and write.
        let mut table = self.table();
        match table.holder(key.as_str(), BootInstant::now()) {
            Some((holder, _, _)) if holder == *owner => {
                self.values()
                    .insert(key.clone(), (*owner, Arc::from(value)));
                Ok(())
            }
            Some(_) => Err(Error::lease_lost(key.as_str(), LossReason::Taken)),
            None => Err(Error::lease_lost(key.as_str(), LossReason::Gone)),
        }
    }

    fn release_now(&self, key: &LockKey, owner: &OwnerId) -> Option<Result<bool, Error>> {
        Some(Ok(self.table().release(key.as_str(), owner)))
    }

    fn new_owner(&self) -> OwnerId {
        // In one process, a unique counter is enough.
        OwnerId::from_counter(self.inner.owners.fetch_add(1, Ordering::Relaxed))
    }

    fn operation_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        // No I/O: release at once, so a cancelled waiter leaves the queue before
        // anyone else looks at it.
        self.table().release(key.as_str(), &owner);
    }
}

#[async_trait]
impl FenceSource for MemoryLock {
    async fn next_fence(&self, _resource: &str) -> Result<FenceToken, Error> {
        // The lock's own counter: tokens also order against leases' tokens.
        Ok(self.table().next_fence())
    }
}
