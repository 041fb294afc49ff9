//! The cases, one per contract point or failure mode. Each is a plain async
//! function over a [`Harness`]; failures panic with a message that says what broke.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

pub use super::elections::{
    election_campaign_deadline_and_bad_options, election_deposed_leader_steps_down,
    election_hands_over_and_everyone_sees_the_leader,
};
use super::{Checked, Harness, NotApplicable};
use crate::{
    Acquire, BootInstant, Capabilities, DynLock, Error, ExpiryScope, FenceToken, InvalidInput,
    LockExt, LossReason, MAX_KEY_LEN, Wait,
};

/// Slack for "soon" on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(250);
/// How late a timer may fire on a loaded 2-core machine: the slack allowed when
/// checking that `lost()` fires no later than `valid_until`.
const LATE_MARGIN: Duration = Duration::from_millis(150);

fn unique_key(case: &str) -> String {
    format!("dlock-conformance:{case}:{}", crate::OwnerId::random())
}

/// A TTL short enough to wait out, long enough to outlast scheduling noise.
fn short_ttl(caps: &Capabilities) -> Duration {
    caps.fit_ttl(Duration::from_millis(400))
}

/// A TTL that never runs out during a case.
fn long_ttl(caps: &Capabilities) -> Duration {
    caps.fit_ttl(Duration::from_secs(60))
}

async fn setup(h: &dyn Harness) -> (DynLock, Capabilities) {
    let lock = h.client().await;
    let caps = lock.capabilities();
    (lock, caps)
}

/// 1, 8: a free key is granted at once, with a token when the backend fences.
pub async fn try_acquire_on_free_key_succeeds(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let key = unique_key("free");
    let mut lease = lock
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("try_acquire on a free key failed")
        .expect("a free key was reported busy");
    assert_eq!(lease.key(), key);
    assert!(lease.is_valid());
    if caps.fencing {
        assert!(
            lease.fence() > FenceToken(0),
            "fencing backend issued token 0"
        );
    }
    lease.release().await.expect("release failed");
    Ok(())
}

/// 1, 8: a held key is `Ok(None)` for other clients and for the holder's own client.
pub async fn try_acquire_on_held_key_is_none(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("held");
    let mut lease = a
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    let lease = lease.as_mut().expect("a free key was reported busy");
    let other = b
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(other.is_none(), "another client took a held key");
    let same = a
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(
        same.is_none(),
        "the holder's own client took its held key again"
    );
    lease.release().await.expect("release failed");
    Ok(())
}

/// Locks are not reentrant: a second acquire by the same client waits like any other.
pub async fn acquire_is_not_reentrant(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let key = unique_key("reentrant");
    let mut lease = lock
        .acquire(&key, Acquire::ttl(long_ttl(&caps)))
        .await
        .expect("acquire failed");
    let again = lock
        .acquire(
            &key,
            Acquire::ttl(long_ttl(&caps)).wait(Duration::from_millis(200)),
        )
        .await;
    assert!(
        matches!(again, Err(Error::Timeout { .. })),
        "second acquire: {again:?}"
    );
    lease.release().await.expect("release failed");
    Ok(())
}

/// 1: many tasks on two clients, one key: never two inside, no update lost.
pub async fn mutual_exclusion_under_contention(h: &dyn Harness) -> Checked {
    const TASKS: usize = 8;
    const ROUNDS: usize = 8;
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("exclusion");
    let inside = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let lock = if t % 2 == 0 { a.clone() } else { b.clone() };
        let (key, inside, counter) = (key.clone(), inside.clone(), counter.clone());
        let ttl = long_ttl(&caps);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let mut lease = lock
                    .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(60)))
                    .await
                    .expect("acquire failed");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                // A read-modify-write with a pause in the middle: any overlap loses an update.
                let seen = counter.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(seen + 1, Ordering::SeqCst);
                assert!(
                    lease.is_valid(),
                    "lease expired inside the critical section"
                );
                inside.store(false, Ordering::SeqCst);
                lease.release().await.expect("release failed");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a contending task failed");
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        TASKS * ROUNDS,
        "updates were lost"
    );
    Ok(())
}

/// A released key is free at once.
pub async fn release_frees_the_key(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("release");
    let mut lease = a
        .acquire(&key, Acquire::ttl(long_ttl(&caps)))
        .await
        .expect("acquire failed");
    lease.release().await.expect("release failed");
    assert!(!lease.is_valid(), "a released lease still reads as valid");
    let next = b
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(next.is_some(), "the key stayed held after release");
    Ok(())
}

/// A waiter is granted the key soon after the release, not at the holder's expiry.
pub async fn waiter_wakes_on_release(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("wake");
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move {
            let lease = b
                .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(30)))
                .await;
            (lease, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released_at = Instant::now();
    lease.release().await.expect("release failed");
    let (granted, at) = waiter.await.expect("waiter panicked");
    granted.expect("the waiter was not granted the key");
    let handoff = at - released_at;
    // Backends without wake-ups poll with a backoff capped well below this.
    assert!(handoff < Duration::from_secs(2), "handoff took {handoff:?}");
    Ok(())
}

/// 2, 5: a holder that disappears frees the key after the TTL, and not before its
/// `valid_until`.
pub async fn abandoned_lease_expires_after_ttl(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("expiry");
    let ttl = short_ttl(&caps);
    let lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let valid_until = lease.valid_until();
    lease.leave_to_expire();
    if caps.expiry_scope == ExpiryScope::PerClient {
        // The whole client is the holder: abandon it.
        drop(a);
    }
    let early = b.try_acquire(&key, ttl).await.expect("backend failed");
    assert!(early.is_none(), "the key was free right after acquisition");
    let started = Instant::now();
    // A margin that holds on a loaded 2-core machine: an etcd server busy with
    // other tests' clusters was seen freeing an expired lease's key 4 s late.
    let limit = ttl + caps.expiry_slack_fixed + Duration::from_secs(5);
    let next = b
        .acquire(&key, Acquire::ttl(ttl).wait(limit))
        .await
        .unwrap_or_else(|e| panic!("abandoned key not free within {limit:?}: {e}"));
    let granted = BootInstant::now();
    assert!(
        granted >= valid_until,
        "the key was granted again {:?} before the old lease's valid_until",
        valid_until.saturating_duration_since(granted)
    );
    assert!(started.elapsed() <= limit + MARGIN);
    drop(next);
    Ok(())
}

/// 2: waiters queued behind holders that each disappear take over one after
/// another, each within a TTL of the previous grant.
pub async fn queued_waiters_take_over_expired_holders(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if caps.expiry_scope == ExpiryScope::PerClient {
        return Err(NotApplicable(
            "leases share their client's session and cannot expire alone",
        ));
    }
    let key = unique_key("expiry-chain");
    let ttl = short_ttl(&caps);
    let first = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let mut previous = first.valid_until();
    first.leave_to_expire();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let lock = h.client().await;
        let key = key.clone();
        waiters.push(tokio::spawn(async move {
            let lease = lock
                .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(30)))
                .await
                .expect("waiter failed");
            let granted = BootInstant::now();
            let valid_until = lease.valid_until();
            lease.leave_to_expire();
            (granted, valid_until)
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut grants = Vec::new();
    for w in waiters {
        grants.push(w.await.expect("waiter panicked"));
    }
    grants.sort();
    for (granted, valid_until) in grants {
        assert!(
            granted >= previous,
            "granted while the previous lease was valid"
        );
        let late = granted.saturating_duration_since(previous);
        let bound = caps.drift(ttl) + caps.expiry_slack_fixed + Duration::from_millis(500);
        assert!(
            late <= bound,
            "taken over {late:?} after the previous lease ran out"
        );
        previous = valid_until;
    }
    Ok(())
}

/// Waits until the lease can no longer be valid on the server, and a second client
/// holds the key.
async fn expire_and_take(
    h: &dyn Harness,
    caps: &Capabilities,
    key: &str,
    old_valid_until: BootInstant,
) -> crate::Lease {
    crate::clock::sleep_until(old_valid_until).await;
    let b = h.client().await;
    let wait = short_ttl(caps) + caps.expiry_slack_fixed + Duration::from_secs(2);
    b.acquire(key, Acquire::ttl(long_ttl(caps)).wait(wait))
        .await
        .expect("the expired key could not be taken")
}

/// 3: releasing an expired lease that another holder took is `LeaseLost`, and the
/// new holder keeps the key.
pub async fn stale_release_is_lease_lost(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if caps.expiry_scope == ExpiryScope::PerClient {
        return Err(NotApplicable(
            "leases share their client's session and cannot expire alone",
        ));
    }
    let key = unique_key("stale-release");
    let mut old = a
        .acquire(&key, Acquire::ttl(short_ttl(&caps)))
        .await
        .expect("acquire failed");
    let mut new = expire_and_take(h, &caps, &key, old.valid_until()).await;
    let err = old.release().await.expect_err("a stale release succeeded");
    assert!(err.is_lease_lost(), "stale release: {err:?}");
    let c = h.client().await;
    let third = c
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(
        third.is_none(),
        "a stale release freed the new holder's key"
    );
    new.release()
        .await
        .expect("the new holder could not release");
    Ok(())
}

/// 3: extending an expired lease that another holder took is `LeaseLost`, and the
/// new holder keeps the key.
pub async fn stale_extend_is_lease_lost(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if caps.expiry_scope == ExpiryScope::PerClient {
        return Err(NotApplicable(
            "leases share their client's session and cannot expire alone",
        ));
    }
    let key = unique_key("stale-extend");
    let mut old = a
        .acquire(&key, Acquire::ttl(short_ttl(&caps)))
        .await
        .expect("acquire failed");
    let mut new = expire_and_take(h, &caps, &key, old.valid_until()).await;
    let err = old.extend().await.expect_err("a stale extend succeeded");
    assert!(
        matches!(
            err,
            Error::LeaseLost {
                reason: LossReason::Expired,
                ..
            }
        ),
        "stale extend: {err:?}"
    );
    assert!(!old.is_valid());
    let c = h.client().await;
    let third = c
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(third.is_none(), "a stale extend disturbed the new holder");
    new.release()
        .await
        .expect("the new holder could not release");
    Ok(())
}

fn needs_fencing(caps: &Capabilities) -> Checked {
    if caps.fencing {
        Ok(())
    } else {
        Err(NotApplicable("the backend issues no fencing tokens"))
    }
}

/// 4: successive acquisitions of a key, by alternating clients, get strictly
/// increasing tokens.
pub async fn fence_tokens_increase(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    needs_fencing(&caps)?;
    let b = h.client().await;
    let key = unique_key("fence");
    let mut last = FenceToken(0);
    for round in 0..6 {
        let lock = if round % 2 == 0 { &a } else { &b };
        let mut lease = lock
            .acquire(&key, Acquire::ttl(long_ttl(&caps)))
            .await
            .expect("acquire failed");
        assert!(
            lease.fence() > last,
            "token {} after {}",
            lease.fence(),
            last
        );
        last = lease.fence();
        lease.release().await.expect("release failed");
    }
    Ok(())
}

/// 4: a client started after another was dropped still gets larger tokens.
pub async fn fence_tokens_increase_across_client_restart(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    needs_fencing(&caps)?;
    let key = unique_key("fence-restart");
    let mut first = a
        .acquire(&key, Acquire::ttl(long_ttl(&caps)))
        .await
        .expect("acquire failed");
    let token = first.fence();
    first.release().await.expect("release failed");
    drop(a);
    let b = h.client().await;
    let second = b
        .acquire(&key, Acquire::ttl(long_ttl(&caps)))
        .await
        .expect("acquire failed");
    assert!(
        second.fence() > token,
        "token {} after restart, {} before",
        second.fence(),
        token
    );
    Ok(())
}

/// 4: under contention, tokens increase in the order the lock was granted.
pub async fn fence_tokens_follow_lock_order(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    needs_fencing(&caps)?;
    let b = h.client().await;
    let key = unique_key("fence-order");
    let grants = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let lock = if t % 2 == 0 { a.clone() } else { b.clone() };
        let (key, grants) = (key.clone(), grants.clone());
        let ttl = long_ttl(&caps);
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let mut lease = lock
                    .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(60)))
                    .await
                    .expect("acquire failed");
                grants.lock().expect("poisoned").push(lease.fence());
                lease.release().await.expect("release failed");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a task failed");
    }
    let grants = grants.lock().expect("poisoned").clone();
    assert!(
        grants.windows(2).all(|w| w[0] < w[1]),
        "tokens out of grant order: {grants:?}"
    );
    Ok(())
}

/// 5: `valid_until` is no later than the TTL measured from when the request was sent.
pub async fn valid_until_is_within_ttl(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let key = unique_key("validity");
    let ttl = long_ttl(&caps);
    let before = BootInstant::now();
    let mut lease = lock
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let after = BootInstant::now();
    assert!(
        lease.valid_until() <= after.saturating_add(ttl),
        "valid_until beyond the TTL"
    );
    assert!(
        lease.valid_until() >= before.saturating_add(ttl).saturating_sub(caps.drift(ttl)),
        "valid_until shorter than TTL minus drift"
    );
    assert!(lease.remaining() <= ttl);
    lease.release().await.expect("release failed");
    Ok(())
}

/// 5, 6: extending moves `valid_until` forward, and the key stays held past the
/// original TTL.
pub async fn extend_pushes_valid_until(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("extend");
    let ttl = short_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let first = lease.valid_until();
    tokio::time::sleep(ttl / 2).await;
    let before = BootInstant::now();
    lease.extend().await.expect("extend failed");
    assert!(
        lease.valid_until() > first,
        "extend did not move valid_until"
    );
    assert!(lease.valid_until() <= BootInstant::now().saturating_add(ttl));
    assert!(lease.valid_until() >= before.saturating_add(ttl).saturating_sub(caps.drift(ttl)));
    crate::clock::sleep_until(first.saturating_add(ttl / 10)).await;
    let other = b.try_acquire(&key, ttl).await.expect("backend failed");
    assert!(
        other.is_none(),
        "the key was free after its original TTL despite extend"
    );
    assert!(lease.is_valid());
    lease.release().await.expect("release failed");
    Ok(())
}

/// 6: with keep-alive, a lease outlives several TTLs and stays exclusive.
pub async fn keep_alive_holds_past_ttl(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("keep-alive");
    let ttl = short_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
        .await
        .expect("acquire failed");
    tokio::time::sleep(ttl * 3).await;
    assert!(lease.is_valid(), "keep-alive let the lease run out");
    let other = b.try_acquire(&key, ttl).await.expect("backend failed");
    assert!(other.is_none(), "another client took a kept-alive key");
    lease.release().await.expect("release failed");
    Ok(())
}

/// 6: with keep-alive on, `lost()` fires no later than `valid_until` once the key
/// is gone from the server.
pub async fn lost_fires_when_key_is_deleted(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let key = unique_key("lost");
    let ttl = short_ttl(&caps);
    let lease = a
        .acquire(&key, Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
        .await
        .expect("acquire failed");
    tokio::time::sleep(ttl / 2).await;
    h.delete_key(&key).await;
    let limit = ttl * 2 + MARGIN;
    tokio::time::timeout(limit, lease.lost())
        .await
        .unwrap_or_else(|_| panic!("lost() did not fire within {limit:?} of the key's deletion"));
    let fired = BootInstant::now();
    assert_eq!(
        lease.lost_reason(),
        Some(LossReason::Gone),
        "a deleted key's lease"
    );
    // Once extension fails, valid_until stops growing; lost() must not fire after it.
    let late = fired.saturating_duration_since(lease.valid_until());
    assert!(
        late <= LATE_MARGIN,
        "lost() fired {late:?} after valid_until"
    );
    assert!(!lease.is_valid());
    Ok(())
}

/// 6: without keep-alive, `lost()` fires at `valid_until`, not earlier.
pub async fn lost_fires_at_valid_until_without_keep_alive(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let key = unique_key("lost-ttl");
    let lease = a
        .acquire(&key, Acquire::ttl(short_ttl(&caps)))
        .await
        .expect("acquire failed");
    let until = lease.valid_until();
    lease.lost().await;
    let fired = BootInstant::now();
    assert!(
        fired >= until,
        "lost() fired {:?} early",
        until.saturating_duration_since(fired)
    );
    let late = fired.saturating_duration_since(until);
    assert!(late <= LATE_MARGIN, "lost() fired {late:?} late");
    Ok(())
}

/// 3, 7: an expired holder dropping its lease (release in the background) leaves
/// the new holder alone.
pub async fn old_holder_drop_leaves_new_holder(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if caps.expiry_scope == ExpiryScope::PerClient {
        return Err(NotApplicable(
            "leases share their client's session and cannot expire alone",
        ));
    }
    let key = unique_key("old-drop");
    let old = a
        .acquire(&key, Acquire::ttl(short_ttl(&caps)))
        .await
        .expect("acquire failed");
    let mut new = expire_and_take(h, &caps, &key, old.valid_until()).await;
    drop(old);
    tokio::time::sleep(MARGIN).await;
    let c = h.client().await;
    let third = c
        .try_acquire(&key, long_ttl(&caps))
        .await
        .expect("backend failed");
    assert!(
        third.is_none(),
        "the old holder's drop released the new holder's key"
    );
    new.release().await.expect("the new holder lost its key");
    Ok(())
}

/// 7: a waiter cancelled mid-wait leaves no trace: once the holder releases, the
/// key is free for anyone at once.
pub async fn cancelled_wait_leaves_nothing_behind(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let c = h.client().await;
    let key = unique_key("cancel-wait");
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move { b.acquire(&key, Acquire::ttl(ttl)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiter.abort();
    assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    lease.release().await.expect("release failed");
    let next = c
        .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(2)))
        .await
        .expect("a cancelled waiter kept the key from others");
    drop(next);
    Ok(())
}

/// 7: an acquire future dropped after any number of polls leaves the key free
/// within one TTL.
pub async fn acquire_dropped_at_any_poll_leaves_key_free(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let ttl = short_ttl(&caps);
    for polls in 0..6 {
        let key = unique_key(&format!("drop-poll-{polls}"));
        {
            let mut fut = std::pin::pin!(a.acquire(&key, Acquire::ttl(ttl)));
            for _ in 0..polls {
                if futures::poll!(&mut fut).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let wait = ttl + caps.expiry_slack_fixed + Duration::from_secs(2);
        b.acquire(&key, Acquire::ttl(ttl).wait(wait))
            .await
            .unwrap_or_else(|e| {
                panic!("after dropping at poll {polls}, key not free within {wait:?}: {e}")
            });
    }
    Ok(())
}

/// Dropping a lease releases it in the background, long before its TTL.
pub async fn dropped_lease_is_released_in_background(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("drop");
    let ttl = long_ttl(&caps);
    let lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    drop(lease);
    b.acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(5)))
        .await
        .expect("a dropped lease was not released in the background");
    Ok(())
}

/// 9: a wait limit on a held key ends in `Timeout` within the limit plus one
/// operation timeout, and not before the limit.
pub async fn acquire_deadline_is_honoured(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("deadline");
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let result = b.acquire(&key, Acquire::ttl(ttl).wait(limit)).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "got {result:?}"
    );
    assert!(
        took >= limit - Duration::from_millis(5),
        "gave up early, after {took:?}"
    );
    let bound = limit + b.operation_timeout() + MARGIN;
    assert!(took <= bound, "took {took:?}, more than {bound:?}");
    lease.release().await.expect("release failed");
    Ok(())
}

/// 8: `try_acquire` on a held key answers without waiting for the holder.
pub async fn try_acquire_does_not_wait(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    let b = h.client().await;
    let key = unique_key("try-fast");
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let started = Instant::now();
    let other = b.try_acquire(&key, ttl).await.expect("backend failed");
    assert!(other.is_none());
    assert!(started.elapsed() < b.operation_timeout() + MARGIN);
    let waitless = b.acquire(&key, Acquire::ttl(ttl).wait_mode(Wait::No)).await;
    assert!(
        matches!(waitless, Err(Error::Timeout { .. })),
        "Wait::No on a held key: {waitless:?}"
    );
    lease.release().await.expect("release failed");
    Ok(())
}

fn expect_invalid<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Error>,
    want: fn(&InvalidInput) -> bool,
) {
    match result {
        Err(Error::InvalidInput(e)) if want(&e) => {}
        other => panic!("{what}: expected a typed invalid-input error, got {other:?}"),
    }
}

/// 10: bad input gets a typed error, and nothing panics.
pub async fn bad_input_is_refused(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let ttl = long_ttl(&caps);
    let key = unique_key("bad-input");
    expect_invalid("empty key", lock.try_acquire("", ttl).await, |e| {
        *e == InvalidInput::EmptyKey
    });
    let long = "k".repeat(MAX_KEY_LEN + 1);
    expect_invalid(
        "long key",
        lock.acquire(&long, Acquire::ttl(ttl)).await,
        |e| matches!(e, InvalidInput::KeyTooLong { .. }),
    );
    expect_invalid(
        "zero TTL",
        lock.try_acquire(&key, Duration::ZERO).await,
        |e| *e == InvalidInput::ZeroTtl,
    );
    expect_invalid(
        "huge TTL",
        lock.try_acquire(&key, Duration::MAX).await,
        |e| matches!(e, InvalidInput::TtlTooLong { .. }),
    );
    if caps.min_ttl > Duration::from_nanos(1) {
        let below = caps.min_ttl - Duration::from_nanos(1);
        expect_invalid(
            "TTL below minimum",
            lock.try_acquire(&key, below).await,
            |e| {
                matches!(
                    e,
                    InvalidInput::TtlTooShort { .. } | InvalidInput::TtlGranularity { .. }
                )
            },
        );
    }
    for fraction in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        expect_invalid(
            "keep-alive fraction",
            lock.acquire(&key, Acquire::ttl(ttl).keep_alive(fraction))
                .await,
            |e| matches!(e, InvalidInput::KeepAliveFraction(_)),
        );
    }
    expect_invalid(
        "zero wait",
        lock.acquire(&key, Acquire::ttl(ttl).wait(Duration::ZERO))
            .await,
        |e| *e == InvalidInput::ZeroWait,
    );
    // None of the refused calls took the key.
    let mut lease = lock
        .try_acquire(&key, ttl)
        .await
        .expect("backend failed")
        .expect("key left held");
    expect_invalid(
        "extend with zero TTL",
        lease.extend_with(Duration::ZERO).await,
        |e| *e == InvalidInput::ZeroTtl,
    );
    lease.release().await.expect("release failed");
    let extend = lease.extend().await;
    assert!(
        matches!(extend, Err(Error::LeaseReleased { .. })),
        "extend after release: {extend:?}"
    );
    let again = lease.release().await;
    assert!(
        matches!(again, Err(Error::LeaseReleased { .. })),
        "second release: {again:?}"
    );
    Ok(())
}

/// Keys that differ only in separators, braces, spaces or script never collide.
pub async fn keys_do_not_collide(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let base = unique_key("keys");
    let suffixes = [
        "",
        "/",
        "/a",
        "a",
        ":a",
        "{a}",
        "{a",
        "a}",
        "}{",
        " a",
        "a ",
        "\\a",
        "%2Fa",
        "*",
        "?",
        "ключ",
        "🔒",
        "\u{0}",
        "\t\n",
        "a/b/c",
        "a\u{301}",
        "\u{1}\u{7f}\u{fffd}\u{ff}",
    ];
    let ttl = long_ttl(&caps);
    let mut leases = Vec::new();
    for s in suffixes {
        let key = format!("{base}{s}");
        let lease = lock
            .try_acquire(&key, ttl)
            .await
            .unwrap_or_else(|e| panic!("key {key:?} refused: {e}"))
            .unwrap_or_else(|| panic!("key {key:?} collided with another"));
        assert_eq!(lease.key(), key);
        leases.push(lease);
    }
    for lease in &leases {
        let again = lock
            .try_acquire(lease.key(), ttl)
            .await
            .expect("backend failed");
        assert!(again.is_none(), "key {:?} was not held", lease.key());
    }
    for mut lease in leases {
        lease.release().await.expect("release failed");
    }
    Ok(())
}

/// `with_lock` returns the work's output and releases the key.
pub async fn with_lock_returns_and_releases(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let key = unique_key("with-lock");
    let ttl = short_ttl(&caps);
    let out = lock
        .with_lock(&key, Acquire::ttl(ttl), |lease| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            lease.fence()
        })
        .await
        .expect("with_lock failed");
    if caps.fencing {
        assert!(out > FenceToken(0));
    }
    let next = lock.try_acquire(&key, ttl).await.expect("backend failed");
    assert!(next.is_some(), "with_lock left the key held");
    Ok(())
}

/// 6: `with_lock` cancels its work when the lease is lost, and says so.
pub async fn with_lock_cancels_work_when_lost(h: &dyn Harness) -> Checked {
    let (lock, caps) = setup(h).await;
    let key = unique_key("with-lock-lost");
    let ttl = short_ttl(&caps);
    let still_running = Arc::new(AtomicU64::new(0));
    let work = {
        let still_running = still_running.clone();
        lock.with_lock(&key, Acquire::ttl(ttl), move |_lease| async move {
            loop {
                still_running.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let task = tokio::spawn(work);
    tokio::time::sleep(ttl / 2).await;
    h.delete_key(&key).await;
    let result = tokio::time::timeout(ttl * 2 + MARGIN, task)
        .await
        .expect("with_lock kept running after its lease was lost")
        .expect("with_lock panicked");
    assert!(
        matches!(result, Err(Error::LeaseLost { .. })),
        "got {result:?}"
    );
    let ticks = still_running.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        still_running.load(Ordering::SeqCst),
        ticks,
        "the work was not cancelled"
    );
    Ok(())
}

/// FIFO backends grant waiters in the order they started waiting.
pub async fn fifo_waiters_are_served_in_order(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if !caps.fifo {
        return Err(NotApplicable("the backend does not promise FIFO order"));
    }
    let key = unique_key("fifo");
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..6 {
        let lock = h.client().await;
        let (key, order) = (key.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let mut lease = lock
                .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(30)))
                .await
                .expect("waiter failed");
            order.lock().expect("poisoned").push(n);
            tokio::time::sleep(Duration::from_millis(5)).await;
            lease.release().await.expect("release failed");
        }));
        // Let this waiter queue before the next starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lease.release().await.expect("release failed");
    for w in waiters {
        w.await.expect("waiter panicked");
    }
    let order = order.lock().expect("poisoned").clone();
    assert_eq!(
        order,
        (0..6).collect::<Vec<_>>(),
        "waiters served out of order"
    );
    Ok(())
}

/// Shutdown frees what a client holds, at once: its leases are marked lost and
/// released, its waiting acquisitions end and leave no place behind, releases of
/// dropped leases finish, and nothing new is granted.
pub async fn shutdown_frees_leases_and_ends_waiters(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if a.tracker().is_none() {
        return Err(NotApplicable(
            "an in-process backend tracks nothing: its locks end with the process",
        ));
    }
    let (held, busy, dropped) = (
        unique_key("shutdown-held"),
        unique_key("shutdown-busy"),
        unique_key("shutdown-dropped"),
    );
    let ttl = long_ttl(&caps);
    let mut lease = a
        .acquire(&held, Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
        .await
        .expect("acquire failed");
    let lost = lease.lost();
    let b = h.client().await;
    let mut other = b
        .acquire(&busy, Acquire::ttl(ttl))
        .await
        .expect("acquire failed");
    let waiter = {
        let (a, busy) = (a.clone(), busy.clone());
        tokio::spawn(async move { a.acquire(&busy, Acquire::ttl(ttl)).await })
    };
    // Let the waiter take its place in line.
    tokio::time::sleep(MARGIN).await;
    assert!(!waiter.is_finished(), "the waiter did not wait");
    drop(
        a.acquire(&dropped, Acquire::ttl(ttl))
            .await
            .expect("acquire failed"),
    );

    let started = Instant::now();
    let report = a.shutdown(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(report.released, 1, "{report}");
    assert!(report.is_clean(), "{report}");
    assert!(
        took < a.operation_timeout(),
        "shutdown took {took:?}: {report}"
    );
    tokio::time::timeout(MARGIN, lost)
        .await
        .expect("lost() did not fire at shutdown");
    assert_eq!(lease.lost_reason(), Some(LossReason::ShutDown));
    let ended = tokio::time::timeout(MARGIN, waiter)
        .await
        .expect("the waiter was still waiting after shutdown")
        .expect("the waiter panicked");
    assert!(
        matches!(ended, Err(Error::ShutDown { .. })),
        "the waiter ended with {ended:?}"
    );
    let err = lease.release().await.expect_err("released after shutdown");
    assert!(
        matches!(
            err,
            Error::LeaseLost {
                reason: LossReason::ShutDown,
                ..
            }
        ),
        "{err:?}"
    );
    let refused = a.try_acquire(&unique_key("shutdown-new"), ttl).await;
    assert!(
        matches!(refused, Err(Error::ShutDown { .. })),
        "granted after shutdown: {refused:?}"
    );

    // Another client finds all three keys free at once, the busy one as soon as
    // its holder lets go: no lease, place or dropped lease of `a` is left.
    let c = h.client().await;
    for key in [&held, &dropped] {
        let mut lease = c
            .try_acquire(key, ttl)
            .await
            .expect("backend failed")
            .unwrap_or_else(|| panic!("{key} still held after shutdown"));
        lease.release().await.expect("release failed");
    }
    other.release().await.expect("release failed");
    let mut next = c
        .try_acquire(&busy, ttl)
        .await
        .expect("backend failed")
        .expect("the shut-down waiter's place still blocks the line");
    next.release().await.expect("release failed");
    Ok(())
}

/// `inspect` tells who holds a key without taking it: free, then the holder with
/// its token and time left (to another client too), then free again; the holder
/// keeps its lease throughout.
pub async fn inspect_shows_the_holder_without_taking_it(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if !caps.inspect {
        return Err(NotApplicable("the backend cannot inspect a key"));
    }
    let key = unique_key("inspect");
    assert_eq!(a.holder(&key).await.expect("inspect a free key"), None);
    let ttl = long_ttl(&caps);
    let mut lease = a.acquire(&key, Acquire::ttl(ttl)).await.expect("acquire");
    let b = h.client().await;
    for lock in [&a, &b] {
        let holder = lock
            .holder(&key)
            .await
            .expect("inspect a held key")
            .expect("a held key was reported free");
        assert!(!holder.id.is_empty(), "{holder:?}");
        if caps.fencing {
            assert_eq!(holder.fence, Some(lease.fence()), "{holder:?}");
        }
        let left = holder.expires_in.expect("no time left reported");
        // A session is refreshed every third of its TTL, not at each acquisition.
        let least = match caps.expiry_scope {
            ExpiryScope::PerLease => ttl / 2,
            ExpiryScope::PerClient => ttl / 3,
        };
        assert!(left <= ttl && left > least, "{left:?} left of {ttl:?}");
    }
    // Nothing was taken, queued or disturbed.
    assert!(
        b.try_acquire(&key, ttl)
            .await
            .expect("backend failed")
            .is_none(),
        "inspect freed the key"
    );
    lease
        .extend()
        .await
        .expect("the holder could not extend after inspect");
    lease.release().await.expect("release");
    assert_eq!(a.holder(&key).await.expect("inspect a released key"), None);
    let err = a.holder("").await.expect_err("an empty key");
    assert!(err.is_invalid_input(), "{err:?}");
    Ok(())
}

/// 2, FIFO: a waiter that is gone without a word (its process died: nothing of it
/// runs any more, not even its drop) loses its place, and the waiters behind it get
/// the key; it blocks the line for a bounded time, not for ever.
pub async fn abandoned_waiter_does_not_block_the_line(h: &dyn Harness) -> Checked {
    let (a, caps) = setup(h).await;
    if !caps.fifo {
        return Err(NotApplicable("the backend does not promise FIFO order"));
    }
    if a.tracker().is_none() {
        // In one process a waiter cannot vanish without its drop running.
        return Err(NotApplicable(
            "an in-process backend's waiters cannot vanish",
        ));
    }
    if caps.expiry_scope == ExpiryScope::PerClient {
        // The vanished acquisition keeps its client alive, and so its session.
        return Err(NotApplicable(
            "a waiter's place lasts as long as its client's session",
        ));
    }
    let key = unique_key("abandoned-waiter");
    let ttl = long_ttl(&caps);
    let mut lease = a.acquire(&key, Acquire::ttl(ttl)).await.expect("acquire");
    // B queues, then vanishes: its acquisition is never polled or dropped again.
    let b = h.client().await;
    // A short TTL: a backend may keep a waiter's place as long as its lease.
    let gone_ttl = caps.fit_ttl(Duration::from_secs(3));
    let mut gone = Box::pin(b.acquire(&key, Acquire::ttl(gone_ttl)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut gone)
            .await
            .is_err(),
        "b was granted a held key"
    );
    std::mem::forget(gone);
    // C queues behind it.
    let c = h.client().await;
    let next = tokio::spawn({
        let key = key.clone();
        async move { c.acquire(&key, Acquire::ttl(ttl)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released = Instant::now();
    lease.release().await.expect("release");
    let mut next = tokio::time::timeout(Duration::from_secs(60), next)
        .await
        .expect("the waiter behind a vanished one never got the key")
        .expect("task")
        .expect("acquire");
    let took = released.elapsed();
    let bound = Duration::from_secs(8) + caps.expiry_slack(gone_ttl);
    assert!(
        took < bound,
        "the vanished waiter blocked the line for {took:?} (more than {bound:?})"
    );
    next.release().await.expect("release");
    Ok(())
}
