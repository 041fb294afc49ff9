//! Keep-alive against a backend that becomes unreachable: the lease is kept while
//! extensions succeed and declared lost no later than `valid_until` once they stop.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, BootInstant, Capabilities, Error, Lock, LockExt, LockKey,
    OwnerId,
};
use dlock_memory::MemoryLock;

#[derive(Clone)]
struct Unplugged {
    server: MemoryLock,
    down: Arc<AtomicBool>,
    /// Extensions hang instead of failing fast, as a blackholed link does.
    hang: bool,
}

#[async_trait]
impl Lock for Unplugged {
    fn capabilities(&self) -> Capabilities {
        self.server.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        self.server.attempt(request).await
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            if self.hang {
                std::future::pending::<()>().await;
            }
            return Err(Error::unavailable("connection refused"));
        }
        self.server.extend(key, owner, ttl).await
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.server.release(key, owner).await
    }
}

/// How late a timer may fire on a loaded 2-core machine.
const LATE_MARGIN: Duration = Duration::from_millis(150);

async fn lost_once_unplugged(hang: bool) {
    let lock = Unplugged {
        server: MemoryLock::new(),
        down: Arc::default(),
        hang,
    };
    let ttl = Duration::from_millis(600);
    let lease = lock
        .acquire("k", Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
        .await
        .expect("acquire");
    // Kept alive past several TTLs while the backend answers.
    tokio::time::sleep(ttl * 2).await;
    assert!(lease.is_valid(), "keep-alive let the lease lapse");
    lock.down.store(true, Ordering::SeqCst);
    let unplugged = BootInstant::now();
    lease.lost().await;
    let fired = BootInstant::now();
    let until = lease.valid_until();
    assert!(
        until <= unplugged.saturating_add(ttl),
        "valid_until grew after unplugging"
    );
    let late = fired.saturating_duration_since(until);
    assert!(
        late <= LATE_MARGIN,
        "lost() fired {late:?} after valid_until"
    );
    // Transient failures are retried: the loss is not declared long before validity ends.
    let early = until.saturating_duration_since(fired);
    assert!(
        early <= Duration::from_millis(100),
        "lost() fired {early:?} before valid_until"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_by_valid_until_when_extensions_fail() {
    lost_once_unplugged(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_by_valid_until_when_extensions_hang() {
    lost_once_unplugged(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_extension_shortens_validity() {
    let lock = MemoryLock::new();
    let mut lease = lock
        .acquire("k", Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");
    let before = BootInstant::now();
    lease
        .extend_with(Duration::from_millis(300))
        .await
        .expect("extend");
    // The server now expires the key 300 ms from the extension: so must the lease.
    assert!(lease.valid_until() <= BootInstant::now().saturating_add(Duration::from_millis(300)));
    assert!(lease.valid_until() >= before.saturating_add(Duration::from_millis(300)));
    tokio::time::timeout(Duration::from_secs(2), lease.lost())
        .await
        .expect("lost() waited for the old, longer validity");
    let other = lock
        .acquire(
            "k",
            Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(2)),
        )
        .await;
    assert!(other.is_ok(), "the key outlived its shortened TTL");
}
