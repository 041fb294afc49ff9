//! `RedisLock`: the one-Redis backend.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, Capabilities, Error, ExpiryScope, FenceToken, InvalidInput, Lock,
    LockKey, MAX_REPRESENTABLE_TTL, OwnerId,
    local_queue::{LocalQueue, Turn},
};
use redis::{
    Client, ProtocolVersion, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::{RedisConfig, errors::from_redis, keys::KeyLayout, notify::ReleaseNotifier, scripts};

/// How long a fence counter outlives its last acquisition. A counter that expired is
/// seeded again from the server clock, above every token issued before.
const FENCE_COUNTER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Locks on one Redis server. Cheap to clone: clones share the connections.
///
/// One multiplexed connection carries the commands; a second one carries the
/// pattern subscription that wakes waiters when a lock is released. Both reconnect
/// by themselves (redis-rs's `ConnectionManager`).
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// Kept for its subscription; messages arrive through `notifier`.
    _subscriber: ConnectionManager,
    notifier: Arc<ReleaseNotifier>,
    queue: LocalQueue,
    config: RedisConfig,
}

impl RedisLock {
    /// Connects to `redis://...` or `rediss://...` with default settings.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(RedisConfig::from_url(url)?).await
    }

    /// Connects with `config`; fails within its connect timeout if the server is
    /// unreachable, refuses the credentials, or does not speak Redis.
    pub async fn connect_with(config: RedisConfig) -> Result<Self, Error> {
        let limit = config.connect_timeout;
        dlock_core::bounded("connect", limit, Self::open(config)).await
    }

    async fn open(config: RedisConfig) -> Result<Self, Error> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.operation_timeout))
            .set_number_of_retries(1);
        let conn =
            ConnectionManager::new_with_config(client(&config, false)?, manager_config.clone())
                .await
                .map_err(|e| from_redis(None, e))?;
        let notifier = Arc::new(ReleaseNotifier::new(config.layout.clone()));
        let push_target = Arc::clone(&notifier);
        let subscriber_config = manager_config
            .set_push_sender(move |push| {
                push_target.on_push(push);
                Ok::<(), redis::aio::SendError>(())
            })
            .set_automatic_resubscription();
        let mut subscriber =
            ConnectionManager::new_with_config(client(&config, true)?, subscriber_config)
                .await
                .map_err(|e| from_redis(None, e))?;
        subscriber
            .psubscribe(config.layout.released_pattern())
            .await
            .map_err(|e| from_redis(None, e))?;
        Ok(RedisLock {
            inner: Arc::new(Inner {
                conn,
                _subscriber: subscriber,
                notifier,
                queue: LocalQueue::new(),
                config,
            }),
        })
    }

    /// Deletes the lock on `key` whoever holds it, as an operator breaking a stuck
    /// lock would, and wakes its waiters. The holder's next extension fails and its
    /// `lost()` fires. Returns whether a lock was there.
    pub async fn force_release(&self, key: &str) -> Result<bool, Error> {
        let key = LockKey::new(key)?;
        let layout = self.layout();
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .del(layout.lock(&key))
            .publish(layout.released_channel(&key), "")
            .query_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(deleted == 1)
    }

    /// The configuration this lock was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(crate) fn layout(&self) -> &KeyLayout {
        &self.inner.config.layout
    }
}

/// A client for the config's server; `resp3` for the subscriber, whose messages
/// arrive as pushes on a connection that reconnects and resubscribes by itself.
fn client(config: &RedisConfig, resp3: bool) -> Result<Client, Error> {
    let mut info = config.info.clone();
    if resp3 {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        info = info.set_redis_settings(settings);
    }
    let built = match &config.tls_root_cert_pem {
        Some(pem) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(info),
    };
    built.map_err(|e| {
        Error::InvalidInput(InvalidInput::Url {
            url: config.to_string(),
            reason: e.to_string(),
        })
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn integer(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn unexpected(reply: &Value) -> Error {
    Error::backend(format!(
        "unexpected reply from the acquire script: {reply:?}"
    ))
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("config", &self.inner.config)
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
        // Armed before the script runs, so a release right after it is not missed.
        let wake = local.map(|local| -> dlock_core::WakeSignal {
            let remote = inner.notifier.listen(req.key);
            Box::pin(async move {
                futures::future::select(local, remote).await;
            })
        });
        let layout = &inner.config.layout;
        let reply: Value = scripts::ACQUIRE
            .key(layout.lock(req.key))
            .key(layout.fence(req.key))
            .arg(req.owner.to_hex())
            .arg(millis(req.ttl))
            .arg(millis(FENCE_COUNTER_TTL.max(req.ttl)))
            .invoke_async(&mut inner.conn.clone())
            .await
            .map_err(|e| from_redis(Some(req.key.as_str()), e))?;
        let Value::Array(parts) = &reply else {
            return Err(unexpected(&reply));
        };
        match (
            parts.first().and_then(integer),
            parts.get(1).and_then(integer),
        ) {
            (Some(1), Some(token)) => {
                if req.queue {
                    inner.queue.leave(req.key, req.owner);
                }
                Ok(Attempt::Acquired {
                    fence: FenceToken(token),
                    valid_from: None,
                })
            }
            (Some(0), pttl) => Ok(Attempt::Busy {
                wake,
                retry_after: pttl.map(Duration::from_millis),
            }),
            _ => Err(unexpected(&reply)),
        }
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        let extended: i64 = scripts::EXTEND
            .key(self.layout().lock(key))
            .arg(owner.to_hex())
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        if extended == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                key: key.to_string(),
            })
        }
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        // A waiter giving up leaves the local queue; a holder is not in it.
        self.inner.queue.leave(key, owner);
        let released: i64 = scripts::RELEASE
            .key(self.layout().lock(key))
            .arg(owner.to_hex())
            .arg(self.layout().released_channel(key))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        if released == 1 {
            // This client's next waiter need not wait for the published message.
            self.inner.queue.wake_head(key);
        }
        Ok(released == 1)
    }

    fn operation_timeout(&self) -> Duration {
        self.inner.config.operation_timeout
    }

    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        // At once, so this client's next waiter is not held up by the spawn.
        self.inner.queue.leave(&key, &owner);
        dlock_core::spawn_release(self, key, owner);
    }
}
