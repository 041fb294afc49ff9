//! The line of waiters on the server, where it can go wrong: an entry left without
//! a place (evicted) must not block the key, and breaking a stuck lock hands it to
//! the head of the line at once.

use std::time::Duration;

use dlock_core::{Acquire, LockExt, OwnerId};
use dlock_redis::RedisLock;
use dlock_testkit::shared_redis_url;
use tokio::time::Instant;

fn new_key() -> String {
    format!("dlock-line:{}", OwnerId::random())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_without_a_place_does_not_block_the_line() {
    let url = shared_redis_url().await;
    let key = new_key();
    // A waiter in line whose place is gone (maxmemory evicted it), as the head.
    let mut raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("dlock:v1:queue:{{{key}}}"))
        .arg(1)
        .arg(format!(
            "{}@{}",
            OwnerId::random().to_hex(),
            OwnerId::random().to_hex()
        ))
        .query_async(&mut raw)
        .await
        .expect("ZADD");
    let lock = RedisLock::connect(&url).await.expect("connect");
    let started = Instant::now();
    let mut lease = lock
        .acquire(
            &key,
            Acquire::ttl(Duration::from_secs(10)).wait(Duration::from_secs(10)),
        )
        .await
        .expect("the key stayed blocked by a waiter without a place");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_a_stuck_lock_hands_it_to_the_head_at_once() {
    let url = shared_redis_url().await;
    let key = new_key();
    let holder = RedisLock::connect(&url).await.expect("connect");
    let stuck = holder
        .acquire(&key, Acquire::ttl(Duration::from_secs(60)))
        .await
        .expect("acquire");
    let waiter = RedisLock::connect(&url).await.expect("connect");
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move {
            waiter
                .acquire(&key, Acquire::ttl(Duration::from_secs(10)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let operator = RedisLock::connect(&url).await.expect("connect");
    let broken = Instant::now();
    assert!(operator.force_release(&key).await.expect("force_release"));
    let mut lease = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the head never got the broken lock")
        .expect("task")
        .expect("acquire");
    // Woken by the hand-over, not by its own retry (every second).
    assert!(
        broken.elapsed() < Duration::from_millis(500),
        "took {:?}",
        broken.elapsed()
    );
    lease.release().await.expect("release");
    stuck.leave_to_expire();
}
