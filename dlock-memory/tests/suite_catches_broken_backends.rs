//! The suite can fail: backends broken on purpose must be caught by the cases
//! that guard the broken rule.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, Capabilities, DynLock, Error, FenceToken, Lock, LockKey, OwnerId,
    conformance::{Harness, failing_cases},
};
use dlock_memory::MemoryLock;

#[derive(Clone, Copy)]
enum Fault {
    /// Grants every attempt, ignoring an existing holder.
    IgnoresHolder,
    /// Issues the same token every time.
    FlatTokens,
}

#[derive(Clone)]
struct Broken {
    inner: MemoryLock,
    fault: Fault,
}

#[async_trait]
impl Lock for Broken {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn attempt(&self, req: AttemptRequest<'_>) -> Result<Attempt, Error> {
        let outcome = self.inner.attempt(req).await?;
        Ok(match (self.fault, outcome) {
            (Fault::IgnoresHolder, Attempt::Busy { .. }) => Attempt::Acquired {
                fence: FenceToken(u64::MAX),
                valid_from: None,
            },
            (Fault::FlatTokens, Attempt::Acquired { .. }) => Attempt::Acquired {
                fence: FenceToken(1),
                valid_from: None,
            },
            (_, outcome) => outcome,
        })
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        match self.fault {
            // A holder it granted over another one is not in the table: pretend it is.
            Fault::IgnoresHolder => Ok(()),
            Fault::FlatTokens => self.inner.extend(key, owner, ttl).await,
        }
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.inner
            .release(key, owner)
            .await
            .map(|held| held || matches!(self.fault, Fault::IgnoresHolder))
    }
}

struct BrokenHarness {
    lock: Broken,
}

#[async_trait]
impl Harness for BrokenHarness {
    async fn client(&self) -> DynLock {
        Arc::new(self.lock.clone())
    }

    async fn delete_key(&self, key: &str) {
        self.lock.inner.force_release(key);
    }
}

async fn failures(fault: Fault) -> Vec<&'static str> {
    let harness = BrokenHarness {
        lock: Broken {
            inner: MemoryLock::new(),
            fault,
        },
    };
    failing_cases(Arc::new(harness)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_a_backend_that_ignores_the_holder() {
    let failed = failures(Fault::IgnoresHolder).await;
    for case in [
        "try_acquire_on_held_key_is_none",
        "mutual_exclusion_under_contention",
        "acquire_deadline_is_honoured",
    ] {
        assert!(
            failed.contains(&case),
            "{case} passed on a backend that ignores holders; failed: {failed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_a_backend_whose_tokens_do_not_increase() {
    let failed = failures(Fault::FlatTokens).await;
    for case in [
        "fence_tokens_increase",
        "fence_tokens_increase_across_client_restart",
        "fence_tokens_follow_lock_order",
    ] {
        assert!(
            failed.contains(&case),
            "{case} passed on a backend with flat tokens; failed: {failed:?}"
        );
    }
    // Exclusion still holds there, so the exclusion cases must pass: the suite
    // blames the right rule.
    assert!(
        !failed.contains(&"mutual_exclusion_under_contention"),
        "failed: {failed:?}"
    );
}

/// The check of the check: the same harness over a correct lock fails no case.
struct Correct(MemoryLock);

#[async_trait]
impl Harness for Correct {
    async fn client(&self) -> DynLock {
        Arc::new(self.0.clone())
    }

    async fn delete_key(&self, key: &str) {
        self.0.force_release(key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_memory_backend_fails_no_case() {
    let failed = failing_cases(Arc::new(Correct(MemoryLock::new()))).await;
    assert!(failed.is_empty(), "failed: {failed:?}");
}
