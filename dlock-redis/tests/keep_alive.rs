//! Keep-alive at scale: many leases of one client are extended in batches (one
//! pipeline per batch, not one round trip per lease), and a batch answers for each
//! lease on its own.

use std::time::Duration;

use dlock_core::{Acquire, Lease, Lock, LockExt, LossReason, OwnerId};
use dlock_redis::RedisLock;
use dlock_testkit::{RedisOptions, start_redis};

const TTL: Duration = Duration::from_secs(2);

async fn hold_many(lock: &RedisLock, prefix: &str, n: usize) -> Vec<Lease> {
    let mut leases = Vec::with_capacity(n);
    for i in 0..n {
        let lease = lock
            .acquire(
                &format!("{prefix}:{i}"),
                Acquire::ttl(TTL).keep_alive(1.0 / 3.0),
            )
            .await
            .expect("acquire");
        leases.push(lease);
    }
    leases
}

/// How many of the keys are held on the server, read through the lock's own view
/// (so the test does not depend on the key layout).
async fn present(url: &str, prefix: &str, n: usize) -> usize {
    let lock = RedisLock::connect(url).await.expect("connect");
    let mut held = 0;
    for i in 0..n {
        if lock
            .holder(&format!("{prefix}:{i}"))
            .await
            .expect("inspect")
            .is_some()
        {
            held += 1;
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_are_kept_alive_in_a_few_batches_per_period() {
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let lock = RedisLock::connect(&url).await.expect("connect");
    let prefix = format!("dlock-ka:{}", OwnerId::random());
    let n = 2_000;
    let leases = hold_many(&lock, &prefix, n).await;
    let batches = lock.keep_alives().expect("Redis batches keep-alive");
    let (batches_before, extensions_before) = (batches.batches_sent(), batches.extensions_sent());

    // Three TTLs: without keep-alive every key would be gone twice over.
    tokio::time::sleep(TTL * 3).await;

    let lost: Vec<_> = leases.iter().filter(|l| !l.is_valid()).collect();
    assert!(
        lost.is_empty(),
        "{} of {n} leases were lost: {:?}",
        lost.len(),
        lost[0]
    );
    assert_eq!(
        present(&url, &prefix, n).await,
        n,
        "keys expired on the server"
    );
    let sent = batches.batches_sent() - batches_before;
    let extensions = batches.extensions_sent() - extensions_before;
    // Each lease is extended at least every third of the TTL (earlier when its batch
    // leaves early): 9 times or more in 3 TTLs, 8 for a lease whose window cut one.
    assert!(
        extensions >= 8 * n as u64,
        "only {extensions} extensions for {n} leases over 3 TTLs"
    );
    // One round trip per lease would be `extensions` calls; batched, each call carries
    // hundreds (at most MAX_BATCH). 20 per call on average leaves room for a loaded
    // machine's stragglers.
    assert!(
        sent * 20 <= extensions,
        "{sent} batches for {extensions} extensions: keep-alive is not batching"
    );
    eprintln!(
        "{n} leases, 3 TTLs: {extensions} extensions in {sent} batches ({:.0} per batch)",
        extensions as f64 / sent as f64
    );
    for mut lease in leases {
        lease.release().await.expect("release");
    }
    assert_eq!(present(&url, &prefix, n).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_for_each_lease_and_survives_a_script_flush() {
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let lock = RedisLock::connect(&url).await.expect("connect");
    let prefix = format!("dlock-ka:{}", OwnerId::random());
    let n = 100;
    let leases = hold_many(&lock, &prefix, n).await;

    // Scripts flushed: the next batch finds no EXTEND script and must load it again.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    // One key broken by an operator: only its lease is lost, with the reason.
    let victim = 17;
    assert!(
        lock.force_release(&format!("{prefix}:{victim}"))
            .await
            .expect("force release")
    );
    tokio::time::timeout(TTL, leases[victim].lost())
        .await
        .expect("the broken lease's loss was not noticed within its TTL");
    assert_eq!(leases[victim].lost_reason(), Some(LossReason::Gone));

    tokio::time::sleep(TTL * 2).await;
    for (i, lease) in leases.iter().enumerate() {
        assert_eq!(lease.is_valid(), i != victim, "lease {i}");
    }
    assert_eq!(present(&url, &prefix, n).await, n - 1);
}

/// A batched extension waits for its batch, which leaves up to a quarter period
/// after it boards: that wait is not the round trip the operation timeout bounds.
/// Here a quarter period (250 ms) is longer than the operation timeout (150 ms), as
/// it is with the defaults (2 s) for any TTL from 24 s up. Counting the wait against
/// the timeout failed every extension, retried after a quarter of the validity left,
/// until that quarter was short enough for the wait: the lease fell from 5 s left to
/// about 1.4 s (a 30 s TTL with the defaults: to about 8 s) before one got through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_extension_may_wait_for_its_batch_longer_than_the_operation_timeout() {
    let server = start_redis(RedisOptions::default()).await;
    let config = dlock_redis::RedisConfig::builder()
        .url(format!("redis://127.0.0.1:{}", server.port()))
        .operation_timeout(Duration::from_millis(150))
        .build()
        .expect("config");
    let lock = RedisLock::connect_with(config).await.expect("connect");
    let ttl = Duration::from_secs(6);
    let lease = lock
        .acquire(
            &format!("dlock-ka-wait:{}", OwnerId::random()),
            Acquire::ttl(ttl).keep_alive(1.0 / 6.0),
        )
        .await
        .expect("acquire");
    // Over five periods of 1 s, the validity left stays near 5 s.
    let mut least = ttl;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        least = least.min(lease.remaining());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lease.is_valid(), "the lease was lost");
    assert!(
        least > Duration::from_millis(3_500),
        "the validity left fell to {least:?} of a {ttl:?} TTL extended every second"
    );
}

/// One key of a batch that fails on the server (overwritten with a hash) costs
/// its own lease only: the batch answers each extension on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_in_a_batch_fails_its_own_lease_only() {
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let lock = RedisLock::connect(&url).await.expect("connect");
    let prefix = format!("dlock-ka-one-bad:{}", OwnerId::random());
    // Acquired back to back: due together, so they ride the same batches.
    let leases = hold_many(&lock, &prefix, 3).await;
    let bad = format!("dlock:v1:lock:{{{prefix}:0}}");
    let mut raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(&bad)
        .cmd("HSET")
        .arg(&bad)
        .arg("field")
        .arg("value")
        .query_async(&mut raw)
        .await
        .expect("overwrite");
    tokio::time::sleep(TTL * 2).await;
    assert!(
        !leases[0].is_valid(),
        "the overwritten key's lease lived on"
    );
    for lease in &leases[1..] {
        assert!(
            lease.is_valid(),
            "a good lease was lost with the bad one: {:?}",
            lease.lost_reason()
        );
    }
}
