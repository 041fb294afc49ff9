//! The lease's edges against a backend scripted to misbehave: a release whose
//! answer is lost, and grants that always come back after their validity ended.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, Capabilities, DynLock, Error, FenceToken, InvalidInput, Lock,
    LockExt, LockKey, LossReason, OwnerId, metrics::LEASE_LOST_TOTAL,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Grants every attempt after `answer_after`; loses the answer of the first
/// release (the key is deleted, the caller hears "unavailable", or with
/// `first_release_hangs` nothing at all); with `releases_answer_held` every
/// release finds the key its own.
#[derive(Default)]
struct Scripted {
    answer_after: Duration,
    first_release_hangs: bool,
    releases_answer_held: bool,
    attempts: AtomicUsize,
    releases: AtomicUsize,
}

#[async_trait]
impl Lock for Scripted {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "scripted",
            min_ttl: Duration::from_millis(10),
            ..Capabilities::default()
        }
    }
    async fn attempt(&self, _: AttemptRequest<'_>) -> Result<Attempt, Error> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.answer_after).await;
        Ok(Attempt::Acquired {
            fence: FenceToken(1),
            valid_from: None,
        })
    }
    async fn extend(&self, _: &LockKey, _: &OwnerId, _: Duration) -> Result<(), Error> {
        Ok(())
    }
    async fn release(&self, _: &LockKey, _: &OwnerId) -> Result<bool, Error> {
        if self.releases_answer_held {
            return Ok(true);
        }
        // The first answer is lost; the key is gone from then on.
        if self.releases.fetch_add(1, Ordering::Relaxed) == 0 {
            if self.first_release_hangs {
                std::future::pending::<()>().await;
            }
            return Err(Error::unavailable("the answer was lost"));
        }
        Ok(false)
    }
}

#[tokio::test]
async fn a_release_whose_answer_is_lost_leaves_the_lease_not_valid() {
    let lock: DynLock = Arc::new(Scripted::default());
    let mut lease = lock
        .acquire("k", Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");
    let error = lease
        .release()
        .await
        .expect_err("the release's answer was lost");
    assert!(error.is_retryable(), "{error:?}");
    // The delete may have landed and the key gone to the next holder: the lease
    // must not look held for the 30 s left.
    assert!(!lease.is_valid(), "{lease:?}");
    assert_eq!(lease.lost_reason(), Some(LossReason::Unreachable));
    tokio::time::timeout(Duration::from_millis(100), lease.lost())
        .await
        .expect("lost() did not fire");
    // The work before the release ended in time: calling again confirms the key is
    // gone, and is not a lost lease.
    lease.release().await.expect("the second release");
}

#[tokio::test]
async fn grants_that_always_come_back_late_end_the_wait_with_a_typed_error() {
    let scripted = Arc::new(Scripted {
        answer_after: Duration::from_millis(40),
        ..Scripted::default()
    });
    let lock: DynLock = scripted.clone();
    let started = Instant::now();
    let answer = lock
        .acquire(
            "k",
            Acquire::ttl(Duration::from_millis(20)).wait(Duration::from_secs(30)),
        )
        .await;
    match answer {
        Err(Error::InvalidInput(InvalidInput::Option { name: "ttl", .. })) => {}
        other => panic!("expected the TTL refused as below a round trip, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(scripted.attempts.load(Ordering::Relaxed), 3);
    // What the late grants may hold is released.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(scripted.releases.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_release_dropped_before_its_answer_leaves_the_lease_not_valid() {
    // A caller's timeout (or select!) around release(): the delete may have landed
    // and the key gone to the next holder, as when the answer is lost.
    let lock: DynLock = Arc::new(Scripted {
        first_release_hangs: true,
        ..Scripted::default()
    });
    let mut lease = lock
        .acquire("k", Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");
    tokio::time::timeout(Duration::from_millis(20), lease.release())
        .await
        .expect_err("the release hangs");
    assert!(!lease.is_valid(), "{lease:?}");
    assert_eq!(lease.lost_reason(), Some(LossReason::Unreachable));
    tokio::time::timeout(Duration::from_millis(100), lease.lost())
        .await
        .expect("lost() did not fire");
    // Calling again confirms the key is gone, and is not a lost lease.
    lease.release().await.expect("the second release");
}

#[tokio::test]
async fn a_clean_release_is_no_loss_when_validity_runs_out_later() {
    // Someone still waits on lost() (a task cancelling the work, a handle) when
    // the lease is released: validity ending later is no loss (before: counted and
    // logged as an expired lease, which pages DlockLeasesLost).
    let lock: DynLock = Arc::new(Scripted {
        releases_answer_held: true,
        ..Scripted::default()
    });
    let mut lease = lock
        .acquire(
            "k",
            Acquire::ttl(Duration::from_millis(200)).no_keep_alive(),
        )
        .await
        .expect("acquire");
    let handle = lease.handle();
    let watcher = tokio::spawn(lease.lost());
    lease.release().await.expect("release");
    tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("lost() resolves once validity ran out")
        .expect("task");
    assert_eq!(handle.lost_reason(), None);
}

/// Runs `test` on a current-thread runtime under a recorder of its own; returns how
/// many leases it counted lost.
fn leases_lost_in(test: impl std::future::Future<Output = ()>) -> u64 {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test);
    });
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == LEASE_LOST_TOTAL)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("not a counter: {other:?}"),
        })
        .sum()
}

#[test]
fn a_release_in_doubt_is_no_loss_even_with_lost_awaited() {
    // Someone awaits lost() as a release's answer is lost: validity ends there,
    // but the work before ended in time, so nothing counts a lost lease (before:
    // the waiter counted it, paging DlockLeasesLost).
    let lost = leases_lost_in(async {
        let lock: DynLock = Arc::new(Scripted::default());
        let mut lease = lock
            .acquire("k", Acquire::ttl(Duration::from_secs(30)))
            .await
            .expect("acquire");
        let watcher = tokio::spawn(lease.lost());
        lease.release().await.expect_err("the answer was lost");
        watcher.await.expect("lost() resolves once validity ended");
        lease.release().await.expect("the confirming release");
    });
    assert_eq!(lost, 0);
}

#[test]
fn a_release_sent_after_validity_ran_out_is_a_lost_lease_even_if_it_fails() {
    // The lease ran out before the release went out: lost, whatever the release's
    // answer (before: a retryable error, which `with_lock` passed on as if the
    // work had finished in time).
    let lost = leases_lost_in(async {
        let lock: DynLock = Arc::new(Scripted::default());
        let mut lease = lock
            .acquire("k", Acquire::ttl(Duration::from_millis(20)))
            .await
            .expect("acquire");
        tokio::time::sleep(Duration::from_millis(40)).await;
        match lease.release().await {
            Err(Error::LeaseLost { reason, .. }) => assert_eq!(reason, LossReason::Expired),
            other => panic!("expected LeaseLost, got {other:?}"),
        }
    });
    assert_eq!(lost, 1);
}

#[test]
fn a_release_dropped_after_validity_ran_out_is_a_lost_lease() {
    // A caller's timeout around a release that hangs, sent while valid but given
    // up after validity ended: lost, as a late answer would say (before: "in
    // doubt", and the next release answered Ok, the loss never counted).
    let lost = leases_lost_in(async {
        let lock: DynLock = Arc::new(Scripted {
            first_release_hangs: true,
            ..Scripted::default()
        });
        let mut lease = lock
            .acquire("k", Acquire::ttl(Duration::from_millis(100)))
            .await
            .expect("acquire");
        tokio::time::timeout(Duration::from_millis(200), lease.release())
            .await
            .expect_err("the release hangs");
        match lease.release().await {
            Err(Error::LeaseLost { reason, .. }) => assert_eq!(reason, LossReason::Expired),
            other => panic!("expected LeaseLost, got {other:?}"),
        }
    });
    assert_eq!(lost, 1);
}
