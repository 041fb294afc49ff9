//! A node's health: its circuit breaker, so a dead node costs no waiting, and which
//! server it is (its `run_id`), so a node that restarted (and may have lost its
//! locks) gets no vote until every lock it could have held has expired.
//!
//! A restart is seen on the connection, not guessed from failures: every answer
//! that can be a vote comes with its connection's name, and this client names a
//! connection only in the same pipeline that reads the server's `run_id` over it.
//! A restarted server is reached over a new connection, which has no name, so its
//! first vote always leads to a check, whichever request (or the client library
//! on its own) reconnected; the vote is then asked again, and counts only if it
//! came over a connection named by a check.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use dlock_core::{
    BootInstant, Error, LockKey, OwnerId,
    reliability::{BreakerPermit, CircuitBreaker},
};
use dlock_redis::{NodeGrant, RedisNode};

/// How many connection names a node remembers: a few checks may race on one
/// connection, and the last one to set its name must still be known.
const NAMES_KEPT: usize = 8;

/// One node, as the quorum sees it.
pub(crate) struct Node {
    pub(crate) redis: RedisNode,
    /// `host:port`, for errors and logs.
    pub(crate) address: String,
    breaker: CircuitBreaker,
    identity: Mutex<Identity>,
    /// Numbers checks as they are sent: one answered late (by a server since
    /// replaced) must not undo a later one.
    checks_sent: AtomicU64,
}

/// Which server this client trusts behind a node's address, and how it knows.
struct Identity {
    /// The `run_id` trusted: the one seen at connect, or since a restart.
    run_id: String,
    /// Names this client gave connections to the node, each with the `run_id`
    /// read over that same connection; newest last.
    names: VecDeque<(String, String)>,
    /// A restart was seen: no vote until then.
    no_vote_until: Option<BootInstant>,
    /// The number of the newest check applied.
    newest_check: u64,
}

/// Why a node gets no say in this round.
pub(crate) enum Unfit {
    /// Its breaker is open: it failed too often lately.
    BreakerOpen,
    /// It restarted lately and could have lost locks it held.
    Restarted,
}

/// A node's answer to a vote request.
pub(crate) enum Vote {
    /// The answer of the server this client trusts.
    Counted(NodeGrant),
    /// The node restarted lately: whatever it answered does not count (a key it
    /// granted is cleaned up with the rest).
    Restarted,
    /// Not asked (or not asked again): the attempt was decided already. Says
    /// nothing about the node's health.
    Skipped,
}

impl Node {
    /// Names `redis`'s connection and notes the server's `run_id` behind it: the
    /// server found at connect is trusted as it is.
    pub(crate) async fn connect(redis: RedisNode, breaker: CircuitBreaker) -> Result<Node, Error> {
        let name = connection_name();
        let run_id = redis.name_connection(&name).await?;
        Ok(Node {
            address: redis.config().server_address(),
            redis,
            breaker,
            identity: Mutex::new(Identity {
                run_id: run_id.clone(),
                names: VecDeque::from([(name, run_id)]),
                no_vote_until: None,
                newest_check: 0,
            }),
            checks_sent: AtomicU64::new(1),
        })
    }

    /// The `run_id` trusted now.
    pub(crate) fn run_id(&self) -> String {
        self.identity().run_id.clone()
    }

    /// A permit to ask this node for a vote, or why not; no I/O. `restart_delay`
    /// zero: delayed restarts are off.
    pub(crate) fn permit(&self, restart_delay: Duration) -> Result<BreakerPermit, Unfit> {
        let permit = self
            .breaker
            .try_acquire_permit()
            .map_err(|_| Unfit::BreakerOpen)?;
        if !restart_delay.is_zero() && self.identity().restarted_lately() {
            // Not asked: dropped unsettled, so it tells the breaker nothing (a
            // success here would close a half-open breaker without a trial).
            drop(permit);
            return Err(Unfit::Restarted);
        }
        Ok(permit)
    }

    /// Asks for `key`. With delayed restarts on, the answer counts only if it came
    /// over a connection this client checked and the server there is the trusted
    /// one, past any restart delay. An answer over a connection not checked yet
    /// leads to a check, and the vote is asked again (the acquire script grants a
    /// retry by the same owner): only an answer whose own connection was checked
    /// counts, even if the address could reach another server in between.
    /// Without `fencing`, the vote is plain commands (no script, no token).
    ///
    /// Once `decided` is set (the attempt won or gave up, and its clean-up may be
    /// on its way), the vote asks nothing more: a second ask sent after the
    /// clean-up's release would take the key again for a whole TTL, for an owner
    /// that no longer wants it. An ask sent before is ordered before the release on
    /// the node's one connection, which then deletes what it took.
    pub(crate) async fn vote(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
        restart_delay: Duration,
        fencing: bool,
        decided: &AtomicBool,
    ) -> Result<Vote, Error> {
        // Decided before this vote was first polled (the others failed at once).
        if decided.load(Ordering::Acquire) {
            return Ok(Vote::Skipped);
        }
        if restart_delay.is_zero() {
            let grant = if fencing {
                self.redis.acquire(key, owner, ttl).await
            } else {
                self.redis.take(key, owner, ttl).await
            };
            return grant.map(Vote::Counted);
        }
        let mut checked_once = false;
        loop {
            let (grant, name) = if fencing {
                self.redis
                    .acquire_with_connection_name(key, owner, ttl)
                    .await?
            } else {
                self.redis
                    .take_with_connection_name(key, owner, ttl)
                    .await?
            };
            let vouched = {
                let identity = self.identity();
                identity
                    .vouches_for(name.as_deref())
                    .map(|run_id| run_id == identity.run_id && !identity.restarted_lately())
            };
            match vouched {
                Some(true) => return Ok(Vote::Counted(grant)),
                Some(false) => return Ok(Vote::Restarted),
                // Reconnected again since the check: no say this round.
                None if checked_once => return Ok(Vote::Restarted),
                None => {}
            }
            // A connection opened since the last check: check it, then ask again.
            self.check(restart_delay).await?;
            checked_once = true;
            if self.identity().restarted_lately() {
                return Ok(Vote::Restarted);
            }
            if decided.load(Ordering::Acquire) {
                return Ok(Vote::Skipped);
            }
        }
    }

    /// Names the connection in use and reads the server's `run_id` over it; a new
    /// `run_id` starts the restart delay.
    async fn check(&self, restart_delay: Duration) -> Result<(), Error> {
        let number = self.checks_sent.fetch_add(1, Ordering::Relaxed);
        let name = connection_name();
        let run_id = self.redis.name_connection(&name).await?;
        let mut identity = self.identity();
        if identity.names.len() == NAMES_KEPT {
            identity.names.pop_front();
        }
        identity.names.push_back((name, run_id.clone()));
        if number < identity.newest_check {
            // A later check was applied first; this one may have reached a server
            // since replaced, whose run_id must not come back.
            return Ok(());
        }
        identity.newest_check = number;
        if identity.run_id != run_id {
            tracing::warn!(
                target: "dlock::backend",
                node = %self.address,
                delay = ?restart_delay,
                "a Redlock node restarted: no vote until every lock it may have lost has expired"
            );
            identity.run_id = run_id;
            identity.no_vote_until = Some(BootInstant::now().saturating_add(restart_delay));
        }
        Ok(())
    }

    /// The breaker refuses calls now: a release need not wait for this node.
    pub(crate) fn breaker_open(&self) -> bool {
        self.breaker.state() == dlock_core::reliability::BreakerState::Open
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Identity {
    fn restarted_lately(&self) -> bool {
        self.no_vote_until.is_some_and(|until| !until.has_passed())
    }

    /// The `run_id` read over the connection named `name`, if this client named it.
    fn vouches_for(&self, name: Option<&str>) -> Option<String> {
        let name = name?;
        self.names
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, run_id)| run_id.clone())
    }
}

/// A name no other connection has: `dlock-redlock-` and 32 random hex digits.
fn connection_name() -> String {
    format!("dlock-redlock-{}", OwnerId::random().to_hex())
}
