//! A request whose outcome is unknown (the answer was lost) is cleaned up with the
//! same owner id, so nothing stays held.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, Capabilities, Error, Lock, LockExt, LockKey, OwnerId,
};
use dlock_memory::MemoryLock;

/// Applies the first `lose` attempts on the server, then never answers them, as a
/// connection dropped after the request went out would.
#[derive(Clone)]
struct LostAnswers {
    server: MemoryLock,
    lose: usize,
    seen: Arc<AtomicUsize>,
}

#[async_trait]
impl Lock for LostAnswers {
    fn capabilities(&self) -> Capabilities {
        self.server.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        let outcome = self.server.attempt(request).await;
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.lose {
            std::future::pending::<()>().await;
        }
        outcome
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.server.extend(key, owner, ttl).await
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.server.release(key, owner).await
    }
    fn operation_timeout(&self) -> Duration {
        Duration::from_millis(100)
    }
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_owner_within_the_wait() {
    let server = MemoryLock::new();
    let lock = LostAnswers {
        server: server.clone(),
        lose: 1,
        seen: Arc::default(),
    };
    let lease = lock
        .acquire("k", Acquire::ttl(TTL).wait(Duration::from_secs(5)))
        .await
        .expect("the retry with the same owner id should find the key already ours");
    assert_eq!(lock.seen.load(Ordering::SeqCst), 2);
    assert_eq!(server.len(), 1);
    drop(lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_without_a_wait_limit_fails_and_frees_the_key() {
    let server = MemoryLock::new();
    let lock = LostAnswers {
        server: server.clone(),
        lose: 1,
        seen: Arc::default(),
    };
    let err = lock
        .try_acquire("k", TTL)
        .await
        .expect_err("the answer was lost");
    assert!(
        matches!(
            err,
            Error::OperationTimeout {
                operation: "acquire",
                ..
            }
        ),
        "{err:?}"
    );
    // The server did grant it; the cleanup (in the background) releases it with the
    // same owner id, long before the 60 s TTL.
    let next = server
        .acquire("k", Acquire::ttl(TTL).wait(Duration::from_secs(5)))
        .await;
    assert!(
        next.is_ok(),
        "the unknown outcome left the key held for its TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_past_the_deadline_leave_nothing_held() {
    let server = MemoryLock::new();
    let lock = LostAnswers {
        server: server.clone(),
        lose: usize::MAX,
        seen: Arc::default(),
    };
    let err = lock
        .acquire("k", Acquire::ttl(TTL).wait(Duration::from_millis(250)))
        .await
        .expect_err("every answer was lost");
    assert!(err.is_timeout(), "{err:?}");
    let next = server
        .acquire("k", Acquire::ttl(TTL).wait(Duration::from_secs(5)))
        .await;
    assert!(next.is_ok(), "the abandoned acquisition left the key held");
}
