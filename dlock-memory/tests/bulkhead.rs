//! A bulkhead in front of a backend bounds its acquisition attempts, and only them.

use std::time::Duration;

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, Bulkheaded, Capabilities, Error, Lock, LockExt, LockKey,
    OwnerId, reliability::Bulkhead,
};
use dlock_memory::MemoryLock;
use tokio::time::Instant;

/// The memory backend with a slow network in front of its attempts only.
#[derive(Clone)]
struct SlowAttempts(MemoryLock);

#[async_trait]
impl Lock for SlowAttempts {
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.attempt(request).await
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.0.extend(key, owner, ttl).await
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.0.release(key, owner).await
    }
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_refuses_attempts_at_once_but_never_holders() {
    let bulkhead = Bulkhead::with_name("test", 2, 0).expect("valid");
    let locks = Bulkheaded::new(SlowAttempts(MemoryLock::new()), bulkhead.clone());
    let mut held = locks
        .acquire("held", Acquire::ttl(TTL))
        .await
        .expect("acquire");

    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let locks = locks.clone();
            tokio::spawn(async move { locks.try_acquire(&format!("k{i}"), TTL).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bulkhead.in_flight(), 2);

    // The two running attempts fill the bulkhead; the holder extends and releases anyway.
    let started = Instant::now();
    held.extend().await.expect("extend behind a full bulkhead");
    held.release()
        .await
        .expect("release behind a full bulkhead");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "holder waited {:?}",
        started.elapsed()
    );

    let mut granted = 0;
    let mut refused = 0;
    for a in attempts {
        match a.await.expect("task") {
            Ok(Some(_)) => granted += 1,
            Err(Error::Overloaded(full)) => {
                assert_eq!(full.max_concurrent(), 2);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((granted, refused), (2, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_acquire_holds_no_slot() {
    let bulkhead = Bulkhead::with_name("test", 1, 0).expect("valid");
    let locks = Bulkheaded::new(MemoryLock::new(), bulkhead.clone());
    let mut held = locks
        .acquire("k", Acquire::ttl(TTL))
        .await
        .expect("acquire");
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .acquire("k", Acquire::ttl(TTL).wait(Duration::from_secs(10)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bulkhead.in_flight(), 0, "a sleeping waiter holds a slot");
    // The single slot is free for others while the waiter waits.
    let other = locks.try_acquire("other", TTL).await.expect("not refused");
    assert!(other.is_some());
    held.release().await.expect("release");
    waiter.await.expect("task").expect("the waiter got the key");
}
