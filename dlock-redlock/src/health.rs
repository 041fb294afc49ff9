//! A node's health: its circuit breaker, so a dead node costs no waiting, and its
//! `run_id`, so a node that restarted (and may have lost its locks) gets no vote
//! until every lock it could have held has expired.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use dlock_core::{
    BootInstant, Error,
    reliability::{BreakerPermit, CircuitBreaker},
};
use dlock_redis::RedisNode;

/// One node, as the quorum sees it.
pub(crate) struct Node {
    pub(crate) redis: RedisNode,
    /// `host:port`, for errors and logs.
    pub(crate) address: String,
    breaker: CircuitBreaker,
    /// The `run_id` this client trusts: the one seen at connect, or since a restart.
    run_id: Mutex<String>,
    /// A connection failed since the last check: the node may have restarted.
    suspect: AtomicBool,
    /// A restart was seen: no vote until then.
    no_vote_until: Mutex<Option<BootInstant>>,
}

/// Why a node gets no say in this round.
pub(crate) enum Unfit {
    /// Its breaker is open: it failed too often lately.
    BreakerOpen,
    /// It restarted lately and could have lost locks it held.
    Restarted,
    /// Checking it failed.
    Failed(Error),
}

impl Node {
    pub(crate) fn new(redis: RedisNode, run_id: String, breaker: CircuitBreaker) -> Node {
        Node {
            address: redis.config().server_address(),
            redis,
            breaker,
            run_id: Mutex::new(run_id),
            suspect: AtomicBool::new(false),
            no_vote_until: Mutex::new(None),
        }
    }

    /// A permit to ask this node for a vote, or why not. A suspect node's `run_id`
    /// is checked first (within `timeout`); `delay` is how long a restarted node
    /// waits for its vote (zero: delayed restarts are off).
    pub(crate) async fn permit(
        &self,
        timeout: Duration,
        delay: Duration,
    ) -> Result<BreakerPermit, Unfit> {
        let permit = self
            .breaker
            .try_acquire_permit()
            .map_err(|_| Unfit::BreakerOpen)?;
        if self.suspect.load(Ordering::Acquire) && !delay.is_zero() {
            match dlock_core::bounded("run_id", timeout, self.redis.run_id()).await {
                Ok(id) => {
                    self.suspect.store(false, Ordering::Release);
                    let mut known = self.run_id.lock().unwrap_or_else(|p| p.into_inner());
                    if *known != id {
                        tracing::warn!(
                            target: "dlock::backend",
                            node = %self.address,
                            delay = ?delay,
                            "a Redlock node restarted: no vote until every lock it may have lost has expired"
                        );
                        *known = id;
                        *self.no_vote_until.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(BootInstant::now().saturating_add(delay));
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    permit.failure();
                    return Err(Unfit::Failed(e));
                }
            }
        }
        let waiting = *self.no_vote_until.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_some_and(|until| !until.has_passed()) {
            // The node answers; it is just not trusted yet.
            permit.success();
            return Err(Unfit::Restarted);
        }
        Ok(permit)
    }

    /// The breaker refuses calls now: a release need not wait for this node.
    pub(crate) fn breaker_open(&self) -> bool {
        self.breaker.state() == dlock_core::reliability::BreakerState::Open
    }

    /// Notes a failed request: a connection failure may be a restart.
    pub(crate) fn failed(&self, error: &Error) {
        if error.is_retryable() {
            self.suspect.store(true, Ordering::Release);
        }
    }
}
