//! `RedlockLock`: the Redlock algorithm over N independent Redis servers, with a
//! second round that makes fencing tokens.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, BootInstant, Capabilities, Error, ExpiryScope, FenceToken, Holder,
    InvalidInput, Lock, LockKey, LossReason, OwnerId, WakeSignal, bounded,
    reliability::CircuitBreaker,
};
use dlock_redis::{NodeExtend, NodeGrant, RedisNode};
use futures::{StreamExt, stream::FuturesUnordered};

use crate::{
    RedlockConfig,
    health::{Node, Unfit, Vote},
};

/// Tokens must stay exact in the nodes' Lua numbers.
const MAX_TOKEN: u64 = 1 << 53;

/// Locks on a quorum of independent Redis servers (Redlock). Cheap to clone.
///
/// - **Acquire** asks every node at once, each within the smaller of its per-node
///   timeout and the validity left, and decides as soon as a majority said yes (or
///   as soon as no majority is possible). Validity is the TTL less the time since
///   the first request was sent, less the drift (TTL·0.01 + 2 ms). A failed attempt
///   releases on every node, including those that never answered.
/// - **Fencing tokens**: each node's acquire script also issues a token from its
///   counter; the client takes the highest of its majority plus one, and in a
///   second round raises the counter to it on the nodes it holds (a majority must
///   agree). Two grants never share a token, and a later acquisition always gets a
///   larger one; see the crate docs for the argument and its assumptions.
/// - **Node health**: a circuit breaker per node (an open one counts as "no" at
///   once), and delayed restarts: a node seen restarting gets no vote until every
///   lock it might have lost has expired.
#[derive(Clone)]
pub struct RedlockLock {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    config: RedlockConfig,
    tracker: dlock_core::Tracker,
    /// Numbers this client's published values, so a reader picks the newest among
    /// a quorum's nodes (a publish that reached only some of them leaves older ones).
    published: AtomicU64,
    /// Node indices sorted by the servers' `run_id` at connect: the order every
    /// client of these servers tries gates in, whatever order it lists them.
    gate_order: Vec<usize>,
}

impl RedlockLock {
    /// Connects to `redlock://...` or `redlocks://...` with default settings.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(RedlockConfig::from_url(url)?).await
    }

    /// Connects to every node (all must answer) and notes each one's `run_id`.
    /// Two addresses that reach the same server are refused.
    pub async fn connect_with(config: RedlockConfig) -> Result<Self, Error> {
        let connects = config.nodes.iter().enumerate().map(|(i, c)| async move {
            let breaker = CircuitBreaker::builder()
                .name(format!("redlock-node-{i}"))
                .min_calls(4)
                .reset_timeout(Duration::from_secs(2))
                .build()
                .map_err(Error::backend)?;
            let redis = RedisNode::connect(c.clone()).await?;
            bounded("run_id", c.connect_timeout(), Node::connect(redis, breaker)).await
        });
        let nodes = futures::future::try_join_all(connects).await?;
        let mut run_ids = std::collections::HashMap::new();
        for node in &nodes {
            let (run_id, address) = (node.run_id(), &node.address);
            if let Some(other) = run_ids.insert(run_id.clone(), address) {
                return Err(Error::InvalidInput(InvalidInput::Option {
                    name: "nodes",
                    reason: format!("{other} and {address} are the same server (run_id {run_id})"),
                }));
            }
        }
        let mut gate_order: Vec<usize> = (0..nodes.len()).collect();
        gate_order.sort_by_key(|&i| nodes[i].run_id());
        Ok(RedlockLock {
            inner: Arc::new(Inner {
                gate_order,
                nodes,
                config,
                tracker: dlock_core::Tracker::new(),
                published: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration this lock was connected with.
    pub fn config(&self) -> &RedlockConfig {
        &self.inner.config
    }

    /// Deletes the lock on `key` on every node, whoever holds it; `true` if a
    /// majority had it.
    pub async fn force_release(&self, key: &str) -> Result<bool, Error> {
        let key = LockKey::new(key)?;
        let released =
            futures::future::join_all(self.inner.nodes.iter().map(|n| n.redis.force_release(&key)))
                .await;
        Ok(released.iter().filter(|r| matches!(r, Ok(true))).count() >= self.config().quorum())
    }

    /// The nodes in the order a waiter tries them as the gate for `key`: every
    /// client of the same servers agrees on it (the servers sorted by `run_id`, as
    /// seen at connect), and keys spread over the nodes (rotated by a hash of the
    /// key), so no one node is every key's gate.
    fn gate_order(&self, key: &LockKey) -> Vec<usize> {
        let by_server = &self.inner.gate_order;
        let start = (fnv1a(key.as_str().as_bytes()) % by_server.len() as u64) as usize;
        by_server[start..]
            .iter()
            .chain(&by_server[..start])
            .copied()
            .collect()
    }

    /// How long a restarted node waits for its vote.
    fn restart_delay(&self) -> Duration {
        if self.inner.config.delayed_restarts {
            self.inner.config.max_ttl
        } else {
            Duration::ZERO
        }
    }

    /// Releases `owner`'s keys on every node after a failed attempt, whatever the
    /// breakers say: its requests may have landed anywhere. Each release gets one
    /// node's timeout (`per_node`); the attempt waits for them up to `wait` (what
    /// is left of its operation time), so a retry by the same owner is sent after
    /// them, and cannot be overtaken by this clean-up and lose its new grant. What
    /// is still out then is dropped if the owner will `retry` (a waiting
    /// acquisition): it may not have been sent yet (a reconnect, a script reloaded
    /// after NOSCRIPT), and sent after the retry's grant it would delete it; a key
    /// left that way is the owner's, released with its lease or when the
    /// acquisition gives up. Without a retry to overtake (`try_acquire`), it
    /// finishes in the background, or it would leave a key for a whole TTL. Nodes
    /// behind an open breaker are not waited for: their releases finish in the
    /// background, or with a retry to come, are left to the acquisition's end.
    /// Nodes marked in `not_ours` answered that another owner holds the key (or
    /// were not asked): nothing of ours is there to release.
    async fn clean_up(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        per_node: Duration,
        wait: Duration,
        retry: bool,
        not_ours: &[bool],
    ) {
        let background = self.inner.config.operation_timeout;
        let mut waits = FuturesUnordered::new();
        for (node, &skip) in self.inner.nodes.iter().zip(not_ours) {
            if skip {
                continue;
            }
            let (redis, key, owner) = (node.redis.clone(), key.clone(), *owner);
            if node.breaker_open() {
                if retry {
                    // Its release could be late too: the retry's half-open trial
                    // vote may overtake it. The acquisition releases when it ends.
                    continue;
                }
                tokio::spawn(async move {
                    let _ = bounded("release", background, redis.release(&key, &owner)).await;
                });
            } else {
                waits.push(async move {
                    let _ = bounded("release", per_node, redis.release(&key, &owner)).await;
                });
            }
        }
        let all = async { while waits.next().await.is_some() {} };
        if tokio::time::timeout(wait, all).await.is_err() && !retry {
            tokio::spawn(async move { while waits.next().await.is_some() {} });
        }
    }
}

impl std::fmt::Debug for RedlockLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockLock")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lock for RedlockLock {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "redlock",
            fencing: self.inner.config.fencing,
            fifo: false,
            wake_on_release: true,
            min_ttl: self.inner.config.min_ttl(),
            max_ttl: self.inner.config.max_ttl,
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
        let config = &self.inner.config;
        let nodes = &self.inner.nodes;
        let (n, quorum) = (nodes.len(), config.quorum());
        let per_node = config.per_node_timeout(req.ttl);
        if per_node >= req.ttl {
            return Err(Error::InvalidInput(InvalidInput::Option {
                name: "per_node_timeout",
                reason: format!(
                    "{per_node:?} is not below the TTL {:?}: a node's answer could outlast the lease",
                    req.ttl
                ),
            }));
        }
        let caps = self.capabilities();
        let drift = caps.drift(req.ttl);
        let valid_end = caps.valid_until(req.sent, req.ttl);
        if valid_end <= req.sent.saturating_add(per_node) {
            return Err(Error::InvalidInput(InvalidInput::Option {
                name: "ttl",
                reason: format!(
                    "{:?} leaves no validity after the drift ({drift:?}) and one node's timeout",
                    req.ttl
                ),
            }));
        }
        // Both rounds must also end within the machinery's operation timeout.
        let op_deadline = req
            .sent
            .saturating_add(config.operation_timeout.mul_f64(0.9));
        let deadline = valid_end.min(op_deadline);
        let left = || deadline.saturating_duration_since(BootInstant::now());
        // Armed before any request on the nodes where this client is subscribed to
        // the key already, so a release in between is not missed; the others
        // subscribe only if the key is busy.
        let armed: Option<Vec<Option<WakeSignal>>> = req
            .queue
            .then(|| nodes.iter().map(|n| n.redis.armed(req.key)).collect());

        // Round 1: every node at once, polled here; answers still out when the
        // decision is made are settled in the background (breaker, restart check).
        // A waiter woken by a release asks the key's first node that can vote (its
        // gate) alone first, and the others only once it granted: waiters woken by
        // the same release all meet at the gate, which grants one of them, so
        // their votes do not split with nobody reaching a majority (64 clients on
        // one key: 71-84 grants/s before, 158-172 after). A retry on a timer asks
        // everyone, so a key left on the gate alone (a crashed attempt's) holds
        // waiters up for one wait at most, not its TTL.
        let gated = req.woken && req.queue;
        let mut planned = Vec::with_capacity(n);
        // Set once this attempt is decided: votes still out ask nothing more.
        let decided = Arc::new(AtomicBool::new(false));
        let mut failures: Vec<(String, Error)> = Vec::new();
        // Nodes that answered "held by another": nothing of ours to clean up there.
        let mut not_ours = vec![false; n];
        for (i, node) in nodes.iter().enumerate() {
            let permit = match node.permit(self.restart_delay()) {
                Ok(permit) => permit,
                Err(unfit) => {
                    let why = match unfit {
                        Unfit::BreakerOpen => Error::unavailable("circuit breaker open"),
                        Unfit::Restarted => restarted_lately(),
                    };
                    failures.push((node.address.clone(), why));
                    not_ours[i] = true;
                    continue;
                }
            };
            let (inner, key, owner, ttl) = (
                Arc::clone(&self.inner),
                req.key.clone(),
                *req.owner,
                req.ttl,
            );
            let (limit, delay) = (per_node.min(left()), self.restart_delay());
            let (fencing, decided) = (config.fencing, Arc::clone(&decided));
            planned.push((i, async move {
                let node = &inner.nodes[i];
                let vote = node.vote(&key, &owner, ttl, delay, fencing, &decided);
                let answer = bounded("acquire", limit, vote).await;
                match &answer {
                    // Dropped unsettled: neither a success nor a failure (a
                    // half-open breaker's trial is not spent on it).
                    Ok(Vote::Skipped) => drop(permit),
                    Ok(_) => permit.success(),
                    Err(_) => permit.failure(),
                }
                (i, answer)
            }));
        }
        if planned.len() < quorum {
            return Err(Error::QuorumUnavailable {
                needed: quorum,
                failures,
            });
        }
        let mut asks = FuturesUnordered::new();
        if gated {
            // The key's gate first: the first of its nodes in gate order that can vote.
            let order = self.gate_order(req.key);
            planned.sort_by_key(|(i, _)| order.iter().position(|o| o == i));
        }
        // Held back while the gate answers: not polled, so nothing is sent.
        let mut held_back = planned.into_iter().map(|(_, ask)| ask);
        if gated {
            asks.extend(held_back.next());
        } else {
            asks.extend(held_back.by_ref());
        }
        let mut granted: Vec<(usize, FenceToken)> = Vec::new();
        let mut refused = 0;
        let mut retry_after: Option<Duration> = None;
        let mut won = false;
        let mut gate_refused = false;
        while refused + failures.len() <= n - quorum {
            let Ok(Some((i, answer))) = tokio::time::timeout(left(), asks.next()).await else {
                break;
            };
            let gate_said_held = matches!(answer, Ok(Vote::Counted(NodeGrant::Held(_))));
            match answer {
                Ok(Vote::Counted(NodeGrant::Granted(counter))) => {
                    granted.push((i, counter));
                    if granted.len() >= quorum {
                        won = true;
                        break;
                    }
                }
                Ok(Vote::Counted(NodeGrant::Held(pttl))) => {
                    refused += 1;
                    not_ours[i] = true;
                    tracing::debug!(node = %nodes[i].address, key = %req.key, "held by another owner");
                    retry_after = match (retry_after, pttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                // Only after the decision, which ends this loop.
                Ok(Vote::Skipped) => {}
                Ok(Vote::Restarted) => {
                    failures.push((nodes[i].address.clone(), restarted_lately()))
                }
                Err(e) => failures.push((nodes[i].address.clone(), e)),
            }
            if held_back.len() > 0 {
                if gate_said_held {
                    // Another owner has the gate: wait for its release, asking
                    // nobody else (the held-back nodes were never asked).
                    gate_refused = true;
                    break;
                }
                // Granted, or failed (then the others decide without it).
                asks.extend(held_back.by_ref());
            }
        }
        if gate_refused {
            // The gate is held by another and nobody else was asked: nothing of
            // ours anywhere to clean up.
            not_ours.fill(true);
        }
        drop(held_back);
        // Neither a majority nor a definite no within the time left: the nodes were
        // slow, not busy.
        let timed_out = !won && !gate_refused && refused + failures.len() <= n - quorum;
        // Before anything else is sent (the second round, the clean-up), and before
        // the votes still out are polled again.
        decided.store(true, Ordering::Release);
        if !asks.is_empty() {
            tokio::spawn(async move { while asks.next().await.is_some() {} });
        }

        // Round 2: the token.
        let mut fence = FenceToken(0);
        let mut raise_failed = None;
        if won && config.fencing {
            let highest = granted
                .iter()
                .map(|(_, c)| c.get())
                .max()
                .unwrap_or_default();
            let token = FenceToken(highest.saturating_add(1));
            won = token.get() < MAX_TOKEN
                && match self
                    .raise(req, &granted, token, per_node.min(left()), quorum)
                    .await
                {
                    Ok(raised) => raised,
                    Err(error) => {
                        raise_failed = Some(error);
                        false
                    }
                };
            fence = token;
        }
        if won && BootInstant::now() < valid_end {
            return Ok(Attempt::Acquired {
                fence,
                valid_from: None,
            });
        }
        // Within the attempt's operation time, so a try_acquire on a held key is
        // Ok(None), never the machinery's timeout.
        let operation_left = op_deadline.saturating_duration_since(BootInstant::now());
        self.clean_up(
            req.key,
            req.owner,
            per_node,
            operation_left,
            req.queue,
            &not_ours,
        )
        .await;
        if failures.len() > n - quorum {
            return Err(no_quorum(quorum, n, failures));
        }
        if let Some(error) = raise_failed {
            return Err(error);
        }
        if won {
            // A majority granted, but too late: its validity ended on the way.
            return Err(Error::unavailable(
                "a majority granted the lock after its validity ended",
            ));
        }
        if timed_out && refused == 0 {
            // Nobody said the key is held: "busy" would be a guess. Retryable, so
            // an acquisition that waits tries again.
            return Err(Error::unavailable(format!(
                "no majority of {n} nodes answered within {:?} ({} granted, {} failed)",
                per_node,
                granted.len(),
                failures.len()
            )));
        }
        let wake = armed.map(|armed| {
            let signals: Vec<WakeSignal> = armed
                .into_iter()
                .zip(nodes)
                .map(|(armed, node)| armed.unwrap_or_else(|| node.redis.listen(req.key)))
                .collect();
            Box::pin(async move {
                futures::future::select_all(signals).await;
            }) as WakeSignal
        });
        Ok(Attempt::Busy { wake, retry_after })
    }

    /// The holder is the owner a quorum of nodes agree on, its time left the least
    /// of theirs, and its token the counter value a quorum of them share: the
    /// second round set it on a majority (a node that answered late may hold a
    /// higher one of its own). No owner with a quorum is free: an acquisition that
    /// failed, or one still in flight.
    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        let nodes = &self.inner.nodes;
        let quorum = self.inner.config.quorum();
        let limit = self.inner.config.operation_timeout;
        let mut asks: FuturesUnordered<_> = nodes
            .iter()
            .map(|node| async move {
                let answer = bounded("inspect", limit, node.redis.inspect(key)).await;
                (node.address.clone(), answer)
            })
            .collect();
        let (mut free, mut failures) = (0, Vec::new());
        let mut seen: Vec<Holder> = Vec::new();
        // How many nodes name `id` as the holder.
        let votes = |seen: &[Holder], id: &str| seen.iter().filter(|h| h.id == id).count();
        let holder_of = |seen: &[Holder]| -> Option<Holder> {
            let first = seen.iter().find(|h| votes(seen, &h.id) >= quorum)?;
            let theirs: Vec<&Holder> = seen.iter().filter(|h| h.id == first.id).collect();
            let fence = theirs
                .iter()
                .filter_map(|h| h.fence)
                .find(|f| theirs.iter().filter(|h| h.fence == Some(*f)).count() >= quorum);
            let left = theirs.iter().filter_map(|h| h.expires_in).min();
            // Any quorum of the holder's nodes shares one with the newest publish's.
            let value = theirs
                .iter()
                .filter_map(|h| h.value.as_deref().and_then(numbered))
                .max_by_key(|&(n, _)| n)
                .map(|(_, value)| value.to_vec());
            Some(Holder::new(first.id.clone(), fence, left).with_value(value))
        };
        while let Some((address, answer)) = asks.next().await {
            match answer {
                Ok(None) => free += 1,
                Ok(Some(holder)) => seen.push(holder),
                Err(e) => failures.push((address, e)),
            }
            match holder_of(&seen) {
                Some(holder) if holder.fence.is_some() || !self.inner.config.fencing => {
                    return Ok(Some(holder));
                }
                _ if free >= quorum => return Ok(None),
                _ => {}
            }
        }
        if let Some(holder) = holder_of(&seen) {
            return Ok(Some(holder));
        }
        // Free only if no owner could have a quorum with the nodes that did not answer.
        let most_votes = seen.iter().map(|h| votes(&seen, &h.id)).max().unwrap_or(0);
        if most_votes + failures.len() >= quorum || failures.len() > nodes.len() - quorum {
            return Err(Error::QuorumUnavailable {
                needed: quorum,
                failures,
            });
        }
        Ok(None)
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        let nodes = &self.inner.nodes;
        let quorum = self.inner.config.quorum();
        let limit = self
            .inner
            .config
            .per_node_timeout(ttl)
            .min(self.inner.config.operation_timeout);
        let mut asks: FuturesUnordered<_> = nodes
            .iter()
            .map(|node| async move {
                let answer = match node.permit(Duration::ZERO) {
                    Ok(permit) => {
                        let answer =
                            bounded("extend", limit, node.redis.extend(key, owner, ttl)).await;
                        match &answer {
                            Ok(_) => permit.success(),
                            Err(_) => permit.failure(),
                        }
                        answer
                    }
                    Err(_) => Err(Error::unavailable("circuit breaker open")),
                };
                (node.address.clone(), answer)
            })
            .collect();
        let mut votes = OwnerVotes::new(nodes.len(), quorum);
        while let Some((address, answer)) = asks.next().await {
            votes.count(address, answer);
            if votes.done() {
                return Ok(());
            }
            // Never deletes anything: a failed extension leaves the lease to expire.
            if votes.not_held() {
                return Err(Error::lease_lost(key.as_str(), votes.why));
            }
            if votes.hopeless() {
                break;
            }
        }
        let why = votes.why;
        Err(Error::QuorumUnavailable {
            needed: quorum,
            failures: votes.failures,
        })
        .map_err(|e| match e {
            // Retryable for keep-alive: the nodes may answer again in time.
            Error::QuorumUnavailable { failures, .. } if failures.is_empty() => {
                Error::lease_lost(key.as_str(), why)
            }
            Error::QuorumUnavailable { failures, .. } => Error::unavailable(format!(
                "extend reached no quorum: {}",
                failures
                    .iter()
                    .map(|(node, e)| format!("{node}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            other => other,
        })
    }

    /// Stored on a quorum of the nodes where `owner` holds the key, numbered so the
    /// newest wins on reading.
    async fn publish(&self, key: &LockKey, owner: &OwnerId, value: &[u8]) -> Result<(), Error> {
        let nodes = &self.inner.nodes;
        let quorum = self.inner.config.quorum();
        let number = self.inner.published.fetch_add(1, Ordering::Relaxed);
        let mut payload = format!("{number}:").into_bytes();
        payload.extend_from_slice(value);
        let limit = self.inner.config.operation_timeout;
        let payload = &payload;
        let mut asks: FuturesUnordered<_> = nodes
            .iter()
            .map(|node| async move {
                let answer =
                    bounded("publish", limit, node.redis.publish(key, owner, payload)).await;
                (node.address.clone(), answer)
            })
            .collect();
        let mut votes = OwnerVotes::new(nodes.len(), quorum);
        while let Some((address, answer)) = asks.next().await {
            votes.count(address, answer);
            if votes.done() {
                return Ok(());
            }
            if votes.not_held() {
                return Err(Error::lease_lost(key.as_str(), votes.why));
            }
        }
        Err(Error::QuorumUnavailable {
            needed: quorum,
            failures: votes.failures,
        })
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        let limit = self.inner.config.operation_timeout;
        let quorum = self.inner.config.quorum();
        // Every node in parallel; the answer waits for the nodes whose breaker is
        // closed, so a frozen one holds nobody up, and the rest finish in the
        // background.
        let mut waiting = 0;
        let mut releases = FuturesUnordered::new();
        for node in &self.inner.nodes {
            // Only the answers of nodes waited for count down: a node whose breaker
            // is open (down, refusing at once) answering first must not end the
            // wait before a healthy node answered.
            let awaited = !node.breaker_open();
            if awaited {
                waiting += 1;
            }
            let (redis, key, owner) = (node.redis.clone(), key.clone(), *owner);
            releases.push(async move {
                let answer = bounded("release", limit, redis.release(&key, &owner)).await;
                (awaited, answer)
            });
        }
        let n = self.inner.nodes.len();
        let (mut released, mut not_held, mut errors) = (0, 0, Vec::new());
        let deadline = tokio::time::Instant::now().checked_add(limit);
        while waiting > 0 && released < quorum && not_held <= n - quorum {
            let next = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, releases.next()).await,
                // A timeout too large to add to now: no deadline.
                None => Ok(releases.next().await),
            };
            let Ok(Some((awaited, answer))) = next else {
                break;
            };
            match answer {
                Ok(true) => released += 1,
                Ok(false) => not_held += 1,
                Err(e) => errors.push(e),
            }
            if awaited {
                waiting -= 1;
            }
        }
        if !releases.is_empty() {
            tokio::spawn(async move { while releases.next().await.is_some() {} });
        }
        if released >= quorum {
            return Ok(true);
        }
        // "Not held" only when more nodes than a quorum can spare said so; nodes that
        // failed, did not answer in time, or were not waited for (breaker open) may
        // have held it: the outcome is unknown, not a lost lease.
        if not_held > n - quorum {
            return Ok(false);
        }
        Err(errors.into_iter().next().unwrap_or_else(|| {
            Error::unavailable(format!(
                "release reached no majority of {n} nodes: {released} released, {not_held} not held, the rest did not answer"
            ))
        }))
    }

    fn operation_timeout(&self) -> Duration {
        self.inner.config.operation_timeout
    }

    fn tracker(&self) -> Option<&dlock_core::Tracker> {
        Some(&self.inner.tracker)
    }
}

impl RedlockLock {
    /// Round 2: raises the counter to `token` on the nodes that granted; `true` if
    /// a majority did.
    async fn raise(
        &self,
        req: AttemptRequest<'_>,
        granted: &[(usize, FenceToken)],
        token: FenceToken,
        limit: Duration,
        quorum: usize,
    ) -> Result<bool, Error> {
        let mut raises: FuturesUnordered<_> = granted
            .iter()
            .map(|&(i, _)| {
                let node = &self.inner.nodes[i];
                async move {
                    bounded(
                        "raise_fence",
                        limit,
                        node.redis.raise_fence(req.key, req.owner, token, req.ttl),
                    )
                    .await
                }
            })
            .collect();
        let (mut raised, mut refused, mut errors) = (0, 0, Vec::new());
        while let Some(answer) = raises.next().await {
            match answer {
                Ok(true) => {
                    raised += 1;
                    if raised >= quorum {
                        return Ok(true);
                    }
                }
                // Another acquisition got there (a higher counter, a new holder).
                Ok(false) => refused += 1,
                Err(e) => errors.push(e),
            }
        }
        // Only failures, no node said no: not "busy", but the nodes' error, and one
        // worth retrying (one node's definite error in this round says nothing the
        // next attempt's first round would not weigh against the others).
        match errors.into_iter().next() {
            Some(error) if refused == 0 && error.is_retryable() => Err(error),
            Some(error) if refused == 0 => Err(Error::unavailable(format!(
                "the token round failed on a node: {error}"
            ))),
            _ => Ok(false),
        }
    }
}

/// The nodes' answers to an owner-checked write (extend, publish), as they come in.
struct OwnerVotes {
    nodes: usize,
    quorum: usize,
    done: usize,
    not_held: usize,
    /// Taken if any node has another holder; otherwise the key is gone.
    why: LossReason,
    failures: Vec<(String, Error)>,
}

impl OwnerVotes {
    fn new(nodes: usize, quorum: usize) -> Self {
        OwnerVotes {
            nodes,
            quorum,
            done: 0,
            not_held: 0,
            why: LossReason::Gone,
            failures: Vec::new(),
        }
    }

    fn count(&mut self, address: String, answer: Result<NodeExtend, Error>) {
        match answer {
            Ok(NodeExtend::Extended) => self.done += 1,
            Ok(NodeExtend::NotHeld(reason)) => {
                self.not_held += 1;
                if reason == LossReason::Taken {
                    self.why = reason;
                }
            }
            Err(e) => self.failures.push((address, e)),
        }
    }

    /// A quorum did it.
    fn done(&self) -> bool {
        self.done >= self.quorum
    }

    /// More nodes than a quorum can spare say the owner does not hold the key.
    fn not_held(&self) -> bool {
        self.not_held > self.nodes - self.quorum
    }

    /// No quorum can do it any more, counting failures too.
    fn hopeless(&self) -> bool {
        self.not_held + self.failures.len() > self.nodes - self.quorum
    }
}

/// A published value read back: its number and the value (see `publish`).
fn numbered(stored: &[u8]) -> Option<(u64, &[u8])> {
    let colon = stored.iter().position(|&b| b == b':')?;
    let number = std::str::from_utf8(&stored[..colon]).ok()?.parse().ok()?;
    Some((number, &stored[colon + 1..]))
}

/// No majority was possible this round. Definite (`QuorumUnavailable`) only if the
/// nodes known to be out (down, refusing, breaker open, restarted lately) leave no
/// majority; nodes that were merely slow (their per-node time ran out) may answer the
/// next attempt, so then the error is retryable and a waiting acquisition goes on,
/// as it does through any transient outage. A node that stays slow soon opens its
/// breaker, and then counts as out.
fn no_quorum(quorum: usize, n: usize, failures: Vec<(String, Error)>) -> Error {
    let slow = failures
        .iter()
        .filter(|(_, e)| matches!(e, Error::OperationTimeout { .. }))
        .count();
    if failures.len() - slow > n - quorum {
        return Error::QuorumUnavailable {
            needed: quorum,
            failures,
        };
    }
    Error::unavailable(format!(
        "no majority of {n} nodes: {}",
        failures
            .iter()
            .map(|(node, e)| format!("{node}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// FNV-1a: a hash every client computes alike, whatever its build (std's hashers
/// promise no stable output).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why a node that restarted lately has no say.
fn restarted_lately() -> Error {
    Error::unavailable("restarted lately: no vote until its locks expired")
}
