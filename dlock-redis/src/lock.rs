//! `RedisLock`: the one-Redis backend.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, Capabilities, Error, ExpiryScope, Extension, Holder, KeepAlives, Lock,
    LockKey, MAX_REPRESENTABLE_TTL, OwnerId, Tracker,
};

use crate::{NodeGrant, RedisConfig, RedisNode};

/// Locks on one Redis server. Cheap to clone: clones share the connections.
///
/// One multiplexed connection carries the commands; a second one carries the
/// subscriptions, to the keys this client waits on, that wake waiters when a lock
/// is released. Both reconnect by themselves (redis-rs's `ConnectionManager`).
///
/// Waiters of every client queue on the server, per key, in the order they started
/// waiting: a release hands the key to the head of the line and wakes that waiter
/// alone, and a waiter that is gone (its process dead) loses its place within
/// [`PLACE_TTL`](crate::PLACE_TTL), so it never blocks the line for longer.
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<Inner>,
}

struct Inner {
    node: RedisNode,
    tracker: Tracker,
    keep_alives: KeepAlives,
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
                tracker: Tracker::new(),
                keep_alives: KeepAlives::new(),
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
            fifo: true,
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
        let node = &self.inner.node;
        if !req.queue {
            return Ok(match node.acquire(req.key, req.owner, req.ttl).await? {
                NodeGrant::Granted(fence) => Attempt::Acquired {
                    fence,
                    valid_from: None,
                },
                NodeGrant::Held(retry_after) => Attempt::Busy {
                    wake: None,
                    retry_after,
                },
            });
        }
        // Waiters of every client wait in the key's line on the server; a release
        // handing the key to this one wakes it through this client's channel (even
        // a notice that arrives before the answer below).
        match node.acquire_in_line(req.key, req.owner, req.ttl).await? {
            NodeGrant::Granted(fence) => Ok(Attempt::Acquired {
                fence,
                valid_from: None,
            }),
            NodeGrant::Held(retry_after) => Ok(Attempt::Busy {
                wake: Some(node.turn(req.owner)),
                retry_after,
            }),
        }
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.inner
            .node
            .extend(key, owner, ttl)
            .await?
            .into_result(key)
    }

    async fn extend_many(&self, batch: &[Extension]) -> Vec<Result<(), Error>> {
        let answers = self.inner.node.extend_many(batch).await;
        answers
            .into_iter()
            .zip(batch)
            .map(|(answer, e)| answer?.into_result(&e.key))
            .collect()
    }

    fn keep_alives(&self) -> Option<&KeepAlives> {
        Some(&self.inner.keep_alives)
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        // A holder's release hands the key to the head of its line; a waiter's gives
        // up its place.
        self.inner.node.release(key, owner).await
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        self.inner.node.inspect(key).await
    }

    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        self.inner
            .node
            .publish(key, owner, value)
            .await?
            .into_result(key)
    }

    fn operation_timeout(&self) -> Duration {
        self.config().operation_timeout
    }

    fn tracker(&self) -> Option<&Tracker> {
        Some(&self.inner.tracker)
    }
}
