//! `RedisNode`: one Redis server as a lock node, the per-node operations both
//! `RedisLock` and Redlock's quorum (dlock-redlock) are built from. Each is one Lua
//! script; none queues.

use std::{sync::Arc, time::Duration};

use dlock_core::{
    Error, Extension, FenceToken, Holder, InvalidInput, LockKey, LossReason, OwnerId, WakeSignal,
};
use redis::{
    Client, ProtocolVersion, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::{RedisConfig, errors::from_redis, keys::KeyLayout, notify::ReleaseNotifier, scripts};

/// How long a fence counter outlives its last acquisition. A counter that expired is
/// seeded again from the server clock, above every token issued before.
const FENCE_COUNTER_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a waiter's place in a key's line lasts unless it tries again; also how
/// long a key a release handed to a waiter stays reserved for it. A waiter tries
/// again at least every third of it, so only a waiter that is gone (its process
/// dead, cut off) loses its place, and the line moves on within about this long.
pub const PLACE_TTL: Duration = Duration::from_secs(3);

/// One Redis server: a multiplexed connection for the scripts, and a second one for
/// the subscriptions that announce releases of the keys this client waits on. Both reconnect by themselves
/// (redis-rs's `ConnectionManager`). Cheap to clone.
#[derive(Clone)]
pub struct RedisNode {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// This client's id: its waiters in a key's line are woken on its own channel.
    client: String,
    /// What every client's channel name starts with, for the release script.
    client_prefix: String,
    /// Release notices, through a second connection that subscribes to the keys
    /// this client waits on.
    notifier: Arc<ReleaseNotifier>,
    config: RedisConfig,
}

/// A node's answer to [`RedisNode::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeGrant {
    /// Granted (or already ours: a retry by the same owner), with the token the
    /// node's counter issued.
    Granted(FenceToken),
    /// Another owner holds the key, or it is another waiter's turn: worth trying
    /// again after about this long.
    Held(Option<Duration>),
}

/// A node's answer to [`RedisNode::extend`] and [`RedisNode::publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeExtend {
    /// The TTL was reset (or the value stored).
    Extended,
    /// The owner no longer holds the key: [`LossReason::Taken`] or [`LossReason::Gone`].
    NotHeld(LossReason),
}

impl NodeExtend {
    /// The owner-checked scripts' answer (EXTEND, PUBLISH): 1 done, -1 another
    /// owner holds the key, 0 the key is gone.
    fn from_script(answer: i64) -> Self {
        match answer {
            1 => NodeExtend::Extended,
            -1 => NodeExtend::NotHeld(LossReason::Taken),
            _ => NodeExtend::NotHeld(LossReason::Gone),
        }
    }

    /// As the contract answers it: `Ok` if done, [`Error::LeaseLost`] on `key` if
    /// the owner no longer holds it.
    pub fn into_result(self, key: &LockKey) -> Result<(), Error> {
        match self {
            NodeExtend::Extended => Ok(()),
            NodeExtend::NotHeld(reason) => Err(Error::lease_lost(key.as_str(), reason)),
        }
    }
}

impl RedisNode {
    /// Connects with `config`; fails within its connect timeout if the server is
    /// unreachable, refuses the credentials, or does not speak Redis.
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        let limit = config.connect_timeout;
        dlock_core::bounded("connect", limit, Self::open(config)).await
    }

    async fn open(config: RedisConfig) -> Result<Self, Error> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.operation_timeout))
            .set_number_of_retries(config.retries);
        let conn =
            ConnectionManager::new_with_config(client(&config, false)?, manager_config.clone())
                .await
                .map_err(|e| from_redis(None, e))?;
        let client_id = OwnerId::random().to_hex();
        let client_channel = config.layout.client_channel(&client_id);
        let (notifier, subscriptions) =
            ReleaseNotifier::new(config.layout.clone(), client_channel.clone());
        // Weak: the connection must not keep the notifier, which keeps the task that
        // owns the connection, alive after the lock is dropped.
        let push_target = Arc::downgrade(&notifier);
        let subscriber_config = manager_config
            .set_push_sender(move |push| {
                if let Some(notifier) = push_target.upgrade() {
                    notifier.on_push(push);
                }
                Ok::<(), redis::aio::SendError>(())
            })
            .set_automatic_resubscription();
        let mut subscriber =
            ConnectionManager::new_with_config(client(&config, true)?, subscriber_config)
                .await
                .map_err(|e| from_redis(None, e))?;
        // Before any attempt: a waiter's turn is never announced to a client that
        // does not listen yet.
        subscriber
            .subscribe(&client_channel)
            .await
            .map_err(|e| from_redis(None, e))?;
        tokio::spawn(subscriptions.run(subscriber));
        Ok(RedisNode {
            inner: Arc::new(Inner {
                conn,
                client: client_id,
                client_prefix: config.layout.client_channel_prefix(),
                notifier,
                config,
            }),
        })
    }

    /// The configuration this node was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// A signal that fires at the next release of `key` on this node published after
    /// this call, if this client is subscribed to the key's releases already (one of
    /// its waiters waits on it, or did a moment ago); `None` otherwise, for one map
    /// lookup. Arm it before sending an attempt, so a release right after the
    /// attempt is not missed.
    pub fn armed(&self, key: &LockKey) -> Option<WakeSignal> {
        self.inner.notifier.armed(key)
    }

    /// A signal that fires when a release hands a key to `owner`, a waiter in the
    /// key's line ([`acquire_in_line`](Self::acquire_in_line)): one message, to this
    /// client alone. Take it once an attempt found the key busy; a notice that came
    /// before fires it at once.
    pub fn turn(&self, owner: &OwnerId) -> WakeSignal {
        self.inner.notifier.turn(owner)
    }

    /// A signal that fires at the next release of `key` on this node published after
    /// this call, for an attempt that found the key busy. If this client was not
    /// subscribed to the key's releases, it subscribes, and the signal fires once
    /// the server confirmed it instead, so the caller tries again.
    pub fn listen(&self, key: &LockKey) -> WakeSignal {
        self.inner.notifier.listen(key)
    }

    /// Takes `key` for `owner` for `ttl` if it is free and nobody waits in line for
    /// it, with the next token from the key's counter (at least the server clock in
    /// µs, above every earlier token), in one script. Never queues.
    pub async fn acquire(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<NodeGrant, Error> {
        self.attempt(key, owner, ttl, false).await
    }

    /// As [`acquire`](Self::acquire), but a busy key puts `owner` in the key's line
    /// on the server (or refreshes its place there): the key goes to waiters of
    /// every client in the order they joined, each release handing it to the head
    /// and waking that waiter alone. A place lapses unless the waiter tries again
    /// within [`PLACE_TTL`]; [`release`](Self::release) gives it up.
    pub async fn acquire_in_line(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<NodeGrant, Error> {
        self.attempt(key, owner, ttl, true).await
    }

    async fn attempt(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
        in_line: bool,
    ) -> Result<NodeGrant, Error> {
        let reply: Value = self
            .acquire_invocation(key, owner, ttl, in_line)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        grant_from(&reply)
    }

    /// As [`acquire`](Self::acquire), with the name of the connection the answer
    /// came over (`CLIENT GETNAME`, in the same pipeline): `None` for a connection
    /// opened since the last [`name_connection`](Self::name_connection). Redlock
    /// counts a vote only from a server it checked over that very connection.
    pub async fn acquire_with_connection_name(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<(NodeGrant, Option<String>), Error> {
        let invocation = self.acquire_invocation(key, owner, ttl, false);
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("GETNAME").invoke_script(&invocation);
        let (name, reply): (Option<String>, Value) =
            query_loading_script(&pipe, &scripts::ACQUIRE, &mut self.connection())
                .await
                .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok((grant_from(&reply)?, name))
    }

    /// Takes `key` for `owner` for `ttl` if nobody holds it, with plain commands
    /// and no script: `SET NX PX`, then `GET` and `PTTL` in the same round trip,
    /// for a quorum that issues no fencing tokens (the grant's token is 0). It
    /// neither looks at nor joins a line, so never mix it with
    /// [`acquire_in_line`](Self::acquire_in_line) on one key. A key `owner` holds
    /// already (a retry whose first answer was lost) gets its TTL reset from now,
    /// by the extend script, so it lasts as long as a fresh grant would.
    pub async fn take(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<NodeGrant, Error> {
        Ok(self.take_named(key, owner, ttl, false).await?.0)
    }

    /// As [`take`](Self::take), with the name of the connection the answer came
    /// over, as [`acquire_with_connection_name`](Self::acquire_with_connection_name)
    /// gives it.
    pub async fn take_with_connection_name(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<(NodeGrant, Option<String>), Error> {
        self.take_named(key, owner, ttl, true).await
    }

    async fn take_named(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
        named: bool,
    ) -> Result<(NodeGrant, Option<String>), Error> {
        let err = |e| from_redis(Some(key.as_str()), e);
        let (lock, me) = (self.layout().lock(key), owner.to_hex());
        let mut pipe = redis::pipe();
        if named {
            pipe.cmd("CLIENT").arg("GETNAME");
        }
        // SET NX never replaces a key, whatever its type; GET then reports a key
        // of another type as WRONGTYPE, a conflict.
        pipe.cmd("SET")
            .arg(&lock)
            .arg(&me)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .cmd("GET")
            .arg(&lock)
            .cmd("PTTL")
            .arg(&lock);
        let mut conn = self.connection();
        let (mut name, set, holder, pttl): (Option<String>, Option<String>, Option<String>, i64) =
            if named {
                pipe.query_async(&mut conn).await.map_err(err)?
            } else {
                let (set, holder, pttl) = pipe.query_async(&mut conn).await.map_err(err)?;
                (None, set, holder, pttl)
            };
        if set.is_some() {
            return Ok((NodeGrant::Granted(FenceToken(0)), name));
        }
        if holder.as_deref() != Some(me.as_str()) {
            // Held by another (or it expired in between: worth trying again soon).
            let left = u64::try_from(pttl).ok().map(Duration::from_millis);
            return Ok((NodeGrant::Held(left), name));
        }
        // Ours already. Its TTL counts from the first grant, which may be older
        // than the attempt asking now: reset it, atomically on the owner.
        let mut pipe = redis::pipe();
        if named {
            pipe.cmd("CLIENT").arg("GETNAME");
        }
        let invocation = self.extend_invocation(key, owner, ttl);
        pipe.invoke_script(&invocation);
        let extended: i64 = if named {
            let (n, extended): (Option<String>, i64) =
                query_loading_script(&pipe, &scripts::EXTEND, &mut conn)
                    .await
                    .map_err(err)?;
            name = n;
            extended
        } else {
            let (extended,): (i64,) = query_loading_script(&pipe, &scripts::EXTEND, &mut conn)
                .await
                .map_err(err)?;
            extended
        };
        let grant = match NodeExtend::from_script(extended) {
            NodeExtend::Extended => NodeGrant::Granted(FenceToken(0)),
            NodeExtend::NotHeld(_) => NodeGrant::Held(None),
        };
        Ok((grant, name))
    }

    /// Names the connection requests go over `name` (`CLIENT SETNAME`) and reads
    /// the `run_id` of the server at its other end, in one pipeline, so both are
    /// about the same connection. A server that restarted is reached over a new,
    /// unnamed connection: while a connection keeps its name, it still reaches
    /// the server whose `run_id` this returned.
    pub async fn name_connection(&self, name: &str) -> Result<String, Error> {
        let ((), info): ((), String) = redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .cmd("INFO")
            .arg("server")
            .query_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(None, e))?;
        run_id_in(&info)
    }

    /// The ACQUIRE script for `owner` on `key` (see `scripts.rs` for its arguments).
    fn acquire_invocation(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
        in_line: bool,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = self.with_line_keys(&scripts::ACQUIRE, key);
        invocation
            .arg(owner.to_hex())
            .arg(millis(ttl))
            .arg(millis(FENCE_COUNTER_TTL.max(ttl)))
            .arg(if in_line { "1" } else { "0" })
            .arg(millis(PLACE_TTL))
            .arg(&self.inner.client);
        invocation
    }

    /// Raises `key`'s fence counter to `token` if `owner` still holds the key and
    /// the counter is below it (or already at it: a retry). `false` if the key is no
    /// longer `owner`'s or the counter is above `token`. Redlock's second round.
    pub async fn raise_fence(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        token: FenceToken,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let layout = self.layout();
        let raised: i64 = scripts::RAISE_FENCE
            .key(layout.lock(key))
            .key(layout.fence(key))
            .arg(owner.to_hex())
            .arg(token.get().to_string())
            .arg(millis(FENCE_COUNTER_TTL.max(ttl)))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(raised == 1)
    }

    /// Resets the TTL of `owner`'s hold on `key`, or says why it cannot: the key
    /// is gone, or another owner holds it.
    pub async fn extend(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<NodeExtend, Error> {
        let extended: i64 = self
            .extend_invocation(key, owner, ttl)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(NodeExtend::from_script(extended))
    }

    /// Many [`extend`](Self::extend)s in one round trip: a pipeline of the same
    /// script, answered in order. A failed call (the connection broke) fails each.
    pub async fn extend_many(&self, batch: &[Extension]) -> Vec<Result<NodeExtend, Error>> {
        let invocations: Vec<_> = batch
            .iter()
            .map(|e| self.extend_invocation(&e.key, &e.owner, e.ttl))
            .collect();
        // Each answer on its own: one key that fails (another type, say) must not
        // fail every lease in the batch with it.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let mut conn = self.connection();
        let mut answers: redis::RedisResult<Vec<redis::RedisResult<i64>>> =
            pipe.query_async(&mut conn).await;
        let lost_script = |answers: &redis::RedisResult<Vec<redis::RedisResult<i64>>>| {
            answers.as_ref().is_ok_and(|answers| {
                answers.iter().any(|a| {
                    a.as_ref().is_err_and(|e| {
                        e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                    })
                })
            })
        };
        if lost_script(&answers) {
            // The server lost the script (a restart, SCRIPT FLUSH): load it, once more.
            answers = match scripts::EXTEND.prepare_invoke().load_async(&mut conn).await {
                Ok(_) => pipe.query_async(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        match answers {
            Ok(answers) => batch
                .iter()
                .zip(answers)
                .map(|(x, a)| {
                    a.map(NodeExtend::from_script)
                        .map_err(|e| from_redis(Some(x.key.as_str()), e))
                })
                .collect(),
            Err(e) => batch
                .iter()
                .map(|x| Err(from_redis(Some(x.key.as_str()), e.clone())))
                .collect(),
        }
    }

    /// Who holds `key`, read in one script, with the value it published: it takes,
    /// queues and issues nothing.
    pub async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        let layout = self.layout();
        type Found = (String, i64, String, i64, Vec<u8>);
        let found: Option<Found> = scripts::INSPECT
            .key(layout.lock(key))
            .key(layout.fence(key))
            .key(layout.value(key))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(found.map(|(owner, pttl, fence, has_value, value)| {
            // PTTL -1: a key without expiry (not one of ours); -2 cannot happen here.
            let left = u64::try_from(pttl).ok().map(Duration::from_millis);
            Holder::new(owner, fence.parse().ok().map(FenceToken), left)
                .with_value((has_value == 1).then_some(value))
        }))
    }

    /// Stores `value` as what `owner` publishes on `key`, if it holds the key; see
    /// [`Lock::publish`](dlock_core::Lock::publish).
    pub async fn publish(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        value: &[u8],
    ) -> Result<NodeExtend, Error> {
        let layout = self.layout();
        let stored: i64 = scripts::PUBLISH
            .key(layout.lock(key))
            .key(layout.value(key))
            .arg(owner.to_hex())
            .arg(value)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(NodeExtend::from_script(stored))
    }

    /// Deletes `owner`'s hold on `key` and hands the key to the head of its line
    /// (or announces the release to the clients that listen); `false` if `owner`
    /// did not hold it. A waiter's release gives up its place in line.
    pub async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        let layout = self.layout();
        let mut invocation = self.with_line_keys(&scripts::RELEASE, key);
        let (released, head): (i64, String) = invocation
            .arg(owner.to_hex())
            .arg(layout.released_channel(key))
            .arg(millis(PLACE_TTL))
            .arg(&self.inner.client)
            .arg(&self.inner.client_prefix)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        if let Some((owner, client)) = head.split_once('@')
            && client == self.inner.client
        {
            // The next holder is a waiter of this client: woken now, without
            // waiting for the server's notice to come round.
            self.inner.notifier.wake_owner(owner);
        }
        Ok(released == 1)
    }

    /// Deletes the lock on `key` whoever holds it, and hands the key to the head of
    /// its line (or announces the release to the clients that listen).
    pub async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let layout = self.layout();
        let mut invocation = self.with_line_keys(&scripts::FORCE_RELEASE, key);
        let deleted: i64 = invocation
            .arg(layout.released_channel(key))
            .arg(millis(PLACE_TTL))
            .arg(&self.inner.client_prefix)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| from_redis(Some(key.as_str()), e))?;
        Ok(deleted == 1)
    }

    /// The EXTEND script for `owner`'s lease on `key` (KEYS: lock; ARGV: owner, ttl).
    fn extend_invocation(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = scripts::EXTEND.prepare_invoke();
        invocation
            .key(self.layout().lock(key))
            .arg(owner.to_hex())
            .arg(millis(ttl));
        invocation
    }

    /// `script` with the keys of `key`'s lock and line, in the order the acquire and
    /// release scripts take them (see [`KeyLayout::script_keys`]).
    fn with_line_keys(
        &self,
        script: &'static redis::Script,
        key: &LockKey,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        for k in self.layout().script_keys(key).all() {
            invocation.key(k);
        }
        invocation
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(crate) fn layout(&self) -> &KeyLayout {
        &self.inner.config.layout
    }
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
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

/// Runs `pipe`, whose scripts are all `script`; after a `NOSCRIPT` (a server that
/// restarted or ran SCRIPT FLUSH) loads it and runs the pipeline once more.
async fn query_loading_script<T: redis::FromRedisValue>(
    pipe: &redis::Pipeline,
    script: &redis::Script,
    conn: &mut ConnectionManager,
) -> redis::RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            pipe.query_async(conn).await
        }
        answer => answer,
    }
}

/// The `run_id` line of `INFO server`.
fn run_id_in(info: &str) -> Result<String, Error> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| Error::backend("INFO server has no run_id"))
}

/// The ACQUIRE script's answer: `{1, token}` granted, `{0, pttl}` held.
fn grant_from(reply: &Value) -> Result<NodeGrant, Error> {
    let Value::Array(parts) = reply else {
        return Err(unexpected(reply));
    };
    match (
        parts.first().and_then(integer),
        parts.get(1).and_then(integer),
    ) {
        (Some(1), Some(token)) => Ok(NodeGrant::Granted(FenceToken(token))),
        (Some(0), pttl) => Ok(NodeGrant::Held(pttl.map(Duration::from_millis))),
        _ => Err(unexpected(reply)),
    }
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
