//! `RedisLock`: the one-Redis backend.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, Capabilities, Error, ExpiryScope, Holder, Lock, LockKey,
    MAX_REPRESENTABLE_TTL, OwnerId, Tracker,
    local_queue::{LocalQueue, Turn},
};

use crate::{NodeExtend, NodeGrant, RedisConfig, RedisNode};

/// Locks on one Redis server. Cheap to clone: clones share the connections.
///
/// One multiplexed connection carries the commands; a second one carries the
/// subscriptions, to the keys this client waits on, that wake waiters when a lock
/// is released. Both reconnect
/// by themselves (redis-rs's `ConnectionManager`). This client's waiters queue
/// locally per key, so only the head of the line contends at the server.
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<Inner>,
}

struct Inner {
    node: RedisNode,
    queue: LocalQueue,
    tracker: Tracker,
}

impl RedisLock {
    /// Connects to `redis://...` or `rediss://...` with default settings.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(RedisConfig::from_url(url)?).await
    }

    /// Connects with `config`; fails within its connect timeout if the server is
    /// unreachable, refuses the credentials, or does not speak Redis.
    pub async fn connect_with(config: RedisConfig) -> Result<Self, Error> {
        Ok(RedisLock {
            inner: Arc::new(Inner {
                node: RedisNode::connect(config).await?,
                queue: LocalQueue::new(),
                tracker: Tracker::new(),
            }),
        })
    }

    /// Deletes the lock on `key` whoever holds it, as an operator breaking a stuck
    /// lock would, and wakes its waiters. The holder's next extension fails and its
    /// `lost()` fires. Returns whether a lock was there.
    pub async fn force_release(&self, key: &str) -> Result<bool, Error> {
        self.inner.node.force_release(&LockKey::new(key)?).await
    }

    /// The configuration this lock was connected with.
    pub fn config(&self) -> &RedisConfig {
        self.inner.node.config()
    }

    /// The server, as a node: its per-node operations.
    pub fn node(&self) -> &RedisNode {
        &self.inner.node
    }
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("config", self.config())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lock for RedisLock {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "redis",
            fencing: true,
            fifo: false,
            wake_on_release: true,
            min_ttl: Duration::from_millis(10),
            max_ttl: MAX_REPRESENTABLE_TTL,
            // PX counts whole milliseconds: a finer TTL would be cut short on the server.
            ttl_granularity: Duration::from_millis(1),
            expiry_slack_fixed: Duration::ZERO,
            leader_change_renews_leases: false,
            expiry_scope: ExpiryScope::PerLease,
            drift_factor: 0.01,
            drift_fixed: Duration::from_millis(2),
            inspect: true,
            publish: true,
        }
    }

    async fn attempt(&self, req: AttemptRequest<'_>) -> Result<Attempt, Error> {
        let inner = &self.inner;
        // Only the head of this client's queue contends at the server; it is woken by
        // a release in this client directly, or by the server's notice of any release.
        let mut local = None;
        if req.queue {
            match inner.queue.join(req.key, req.owner) {
                Turn::Behind(wake) => {
                    return Ok(Attempt::Busy {
                        wake: Some(wake),
                        retry_after: None,
                    });
                }
                Turn::Head(wake) => local = Some(wake),
            }
        }
        // Armed before the script runs where this client is subscribed to the key
        // already, so a release right after it is not missed; otherwise it
        // subscribes once the key is found busy (the uncontended path never does).
        let armed = local.as_ref().and_then(|_| inner.node.armed(req.key));
        match inner.node.acquire(req.key, req.owner, req.ttl).await? {
            NodeGrant::Granted(fence) => {
                if req.queue {
                    inner.queue.leave(req.key, req.owner);
                }
                Ok(Attempt::Acquired {
                    fence,
                    valid_from: None,
                })
            }
            NodeGrant::Held(retry_after) => {
                let wake = local.map(|local| -> dlock_core::WakeSignal {
                    let remote = armed.unwrap_or_else(|| inner.node.listen(req.key));
                    Box::pin(async move {
                        futures::future::select(local, remote).await;
                    })
                });
                Ok(Attempt::Busy { wake, retry_after })
            }
        }
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        match self.inner.node.extend(key, owner, ttl).await? {
            NodeExtend::Extended => Ok(()),
            NodeExtend::NotHeld(reason) => Err(Error::lease_lost(key.as_str(), reason)),
        }
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        // A waiter giving up leaves the local queue; a holder is not in it.
        self.inner.queue.leave(key, owner);
        let released = self.inner.node.release(key, owner).await?;
        if released {
            // This client's next waiter need not wait for the published message.
            self.inner.queue.wake_head(key);
        }
        Ok(released)
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        self.inner.node.inspect(key).await
    }

    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        match self.inner.node.publish(key, owner, value).await? {
            NodeExtend::Extended => Ok(()),
            NodeExtend::NotHeld(reason) => Err(Error::lease_lost(key.as_str(), reason)),
        }
    }

    fn operation_timeout(&self) -> Duration {
        self.config().operation_timeout
    }

    fn tracker(&self) -> Option<&Tracker> {
        Some(&self.inner.tracker)
    }

    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        // At once, so this client's next waiter is not held up by the spawn.
        self.inner.queue.leave(&key, &owner);
        dlock_core::spawn_release(self, key, owner);
    }
}
