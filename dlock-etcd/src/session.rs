//! Session mode: one etcd lease per client, shared by all its locks, as etcd's own
//! `concurrency.Session` does. An acquire and its release cost two raft commits
//! (the put, the delete) instead of three (the lease grant, the put, the revoke).
//!
//! The session's lease is granted on first use and refreshed in the background
//! every third of its TTL for as long as the client lives. When the client goes
//! (process dead, every `EtcdLock` clone dropped) the refreshes stop and all its
//! locks expire together, one TTL later. A session found expired (a long pause) is
//! replaced on the next acquisition; the locks it held are lost.

use std::{
    sync::{Mutex, Weak},
    time::Duration,
};

use dlock_core::{BootInstant, Error};

use crate::{EtcdLock, lock::Inner};

/// The session this client's locks share.
pub(crate) struct Session {
    ttl: Duration,
    /// Held while a lease is granted, so acquisitions that start together share it.
    granting: tokio::sync::Mutex<()>,
    live: Mutex<Option<Live>>,
}

/// A session lease, and when its countdown on the server last restarted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    pub(crate) lease: i64,
    /// The send time of the last refresh (or the grant) that succeeded: the server's
    /// countdown restarted no earlier.
    pub(crate) refreshed: BootInstant,
}

impl Session {
    pub(crate) fn new(ttl: Duration) -> Self {
        Session {
            ttl,
            granting: tokio::sync::Mutex::new(()),
            live: Mutex::new(None),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The session's lease, however long ago it was refreshed.
    pub(crate) fn lease_id(&self) -> Option<i64> {
        self.live().map(|l| l.lease)
    }

    /// The lease in use, unless none was granted yet or it may have expired.
    pub(crate) fn current(&self) -> Option<Live> {
        let live = *self.live();
        live.filter(|l| l.refreshed.saturating_add(self.ttl) > BootInstant::now())
    }

    /// The session's lease, granted now if there is none (or the last one may have
    /// expired), with its refreshes started.
    pub(crate) async fn lease(&self, lock: &EtcdLock) -> Result<Live, Error> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _turn = self.granting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let sent = BootInstant::now();
        let lease = lock.grant(self.ttl).await?;
        let live = Live {
            lease,
            refreshed: sent,
        };
        *self.live() = Some(live);
        tokio::spawn(keep_alive(lock.downgrade(), lease, self.ttl, sent));
        Ok(live)
    }

    /// A refresh of `lease` sent at `sent` succeeded.
    pub(crate) fn refreshed(&self, lease: i64, sent: BootInstant) {
        if let Some(live) = self.live().as_mut()
            && live.lease == lease
            && live.refreshed < sent
        {
            live.refreshed = sent;
        }
    }

    /// etcd no longer has `lease`: the next acquisition grants a new one.
    pub(crate) fn ended(&self, lease: i64) {
        let mut live = self.live();
        if live.is_some_and(|l| l.lease == lease) {
            *live = None;
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Refreshes `lease` every third of `ttl` while the client lives and the lease is
/// the session's. Holds the client only during a refresh, so dropping it ends the
/// session (by expiry, one TTL later).
///
/// Each refresh is due a period after the previous one was sent, and gets at most
/// a period: one that hangs (a frozen member) is dropped in time for a retry on the
/// next member while the lease lives, even when the period is shorter than the
/// operation timeout (a session of a few seconds).
async fn keep_alive(client: Weak<Inner>, lease: i64, ttl: Duration, granted: BootInstant) {
    let period = ttl / 3;
    let mut pause = period;
    // The lease's countdown started when its grant was sent.
    let mut last_sent = granted;
    loop {
        tokio::time::sleep(
            last_sent
                .saturating_add(pause)
                .saturating_duration_since(BootInstant::now()),
        )
        .await;
        let Some(lock) = EtcdLock::upgrade(&client) else {
            return;
        };
        let Some(session) = lock.session() else {
            return;
        };
        // Replaced or ended: another task refreshes the new one. A refresh that is
        // late (errors for a while) goes on: the lease may live yet.
        if session.lease_id() != Some(lease) {
            return;
        }
        let sent = BootInstant::now();
        last_sent = sent;
        let limit = period.min(dlock_core::Lock::operation_timeout(&lock));
        match lock.refresh_within(lease, limit).await {
            Ok(true) => {
                session.refreshed(lease, sent);
                pause = period;
            }
            Ok(false) => {
                tracing::warn!(target: "dlock::backend", lease, "the etcd session expired: its locks are lost");
                session.ended(lease);
                return;
            }
            Err(error) => {
                tracing::debug!(target: "dlock::backend", lease, %error, "refreshing the etcd session failed; trying again");
                // Sooner, while the lease still lives.
                pause = period / 2;
            }
        }
    }
}
