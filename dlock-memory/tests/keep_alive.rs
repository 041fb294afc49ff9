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

/// Extensions with the lease's first TTL land late (a slow link), others at once;
/// once an extension with another TTL has landed, the link goes down.
#[derive(Clone)]
struct SlowFirstTtl {
    server: MemoryLock,
    slow_ttl: Duration,
    delay: Duration,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Lock for SlowFirstTtl {
    fn capabilities(&self) -> Capabilities {
        self.server.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        self.server.attempt(request).await
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("connection refused"));
        }
        if ttl == self.slow_ttl {
            tokio::time::sleep(self.delay).await;
            return self.server.extend(key, owner, ttl).await;
        }
        let extended = self.server.extend(key, owner, ttl).await;
        self.down.store(true, Ordering::SeqCst);
        extended
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.server.release(key, owner).await
    }
}

/// A keep-alive tick in flight with the old TTL must not land after a manual
/// `extend_with` and cut the server's expiry below what `valid_until` says (here
/// the link then fails, so no later tick repairs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_extension_is_not_overtaken_by_a_keep_alive_tick() {
    let ttl = Duration::from_millis(1000);
    let lock = SlowFirstTtl {
        server: MemoryLock::new(),
        slow_ttl: ttl,
        delay: Duration::from_millis(400),
        down: Arc::default(),
    };
    let mut lease = lock
        .acquire("k", Acquire::ttl(ttl).keep_alive(0.1))
        .await
        .expect("acquire");
    // The first tick goes out at 100 ms and lands at 500 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lease
        .extend_with(Duration::from_secs(60))
        .await
        .expect("extend_with");
    assert!(lease.remaining() > Duration::from_secs(50));
    // Past where the tick's 1 s TTL would end the server's hold (500 ms + 1 s).
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(lease.is_valid(), "the lease reads as lost");
    let other = lock
        .server
        .try_acquire("k", Duration::from_secs(1))
        .await
        .expect("try_acquire");
    assert!(
        other.is_none(),
        "another client took the key while valid_until says {:?} left",
        lease.remaining()
    );
    lease.release().await.expect("release");
}

/// `extend_with` a shorter TTL: keep-alive follows the new TTL at once rather than
/// sleeping until the old period ends, after the lease has lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_follows_a_shortened_lease() {
    let lock = MemoryLock::new();
    let mut lease = lock
        .acquire(
            "k",
            Acquire::ttl(Duration::from_secs(10)).keep_alive(1.0 / 3.0),
        )
        .await
        .expect("acquire");
    // Keep-alive is asleep until its next tick, 3.3 s away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    lease
        .extend_with(Duration::from_millis(600))
        .await
        .expect("shorten");
    // The old period would next extend at 3.3 s; the 600 ms lease needs one at 200 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(lease.is_valid(), "the shortened lease lapsed unextended");
    assert!(
        lock.try_acquire("k", Duration::from_secs(1))
            .await
            .expect("try_acquire")
            .is_none()
    );
    lease.release().await.expect("release");
}

/// Keep-alive is a tokio task: outside a tokio runtime it is refused with a typed
/// error before anything is taken, rather than a panic. Without it, the in-process
/// backend works under any executor.
#[test]
fn keep_alive_outside_a_tokio_runtime_is_a_typed_error() {
    use std::{
        future::Future,
        pin::pin,
        task::{Context, Poll, Waker},
    };
    let lock = MemoryLock::new();
    let mut cx = Context::from_waker(Waker::noop());
    let ttl = Duration::from_secs(5);
    let mut kept = pin!(lock.acquire("k", Acquire::ttl(ttl).keep_alive(1.0 / 3.0)));
    match kept.as_mut().poll(&mut cx) {
        Poll::Ready(Err(Error::InvalidInput(dlock_core::InvalidInput::Option {
            name: "keep_alive",
            ..
        }))) => {}
        other => panic!("expected a keep_alive error, got {other:?}"),
    }
    let mut plain = pin!(lock.acquire("k", Acquire::ttl(ttl)));
    match plain.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(lease)) => assert!(lease.is_valid()),
        other => panic!("expected the key to be free, got {other:?}"),
    }
}

/// Applies extensions with the short TTL on the server, then loses the answer.
#[derive(Clone)]
struct ShortExtendAnswerLost {
    server: MemoryLock,
    short: Duration,
}

#[async_trait]
impl Lock for ShortExtendAnswerLost {
    fn capabilities(&self) -> Capabilities {
        self.server.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        self.server.attempt(request).await
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.server.extend(key, owner, ttl).await?;
        if ttl == self.short {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.server.release(key, owner).await
    }
    fn operation_timeout(&self) -> Duration {
        Duration::from_millis(300)
    }
}

/// A shortening `extend_with` whose answer is lost may still have been applied:
/// the lease must not go on claiming its old, longer validity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortening_extension_with_an_unknown_outcome_shortens_validity() {
    let short = Duration::from_millis(600);
    let lock = ShortExtendAnswerLost {
        server: MemoryLock::new(),
        short,
    };
    let mut lease = lock
        .acquire("k", Acquire::ttl(Duration::from_secs(10)))
        .await
        .expect("acquire");
    let sent = BootInstant::now();
    let outcome = lease.extend_with(short).await;
    assert!(
        matches!(outcome, Err(Error::OperationTimeout { .. })),
        "{outcome:?}"
    );
    // The extension was sent a moment after `sent`; before, the lease kept 10 s.
    assert!(
        lease.valid_until() <= sent.saturating_add(short + Duration::from_millis(20)),
        "valid_until still claims {:?} after a shortening that may have landed",
        lease.remaining()
    );
}
