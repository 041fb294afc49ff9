//! Redis under faults: restarts, pauses, lost notifications, flushed scripts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Admission, Attempt, AttemptRequest, BootInstant, Capabilities, Error, FenceGate, Lock,
    LockExt, LockKey, OwnerId,
};
use dlock_redis::{RedisFenceGate, RedisLock};
use dlock_testkit::{RedisOptions, free_port, shared_redis_url, start_redis};
use tokio::time::Instant;

fn key(name: &str) -> String {
    format!("dlock-faults:{name}:{}", dlock_core::OwnerId::random())
}

/// A dedicated Redis without persistence, on a fixed port so a restart keeps it.
async fn volatile_redis() -> (dlock_testkit::Server, String) {
    let port = free_port();
    let server = start_redis(RedisOptions::volatile_on(port)).await;
    (server, format!("redis://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_fires_lost_and_keeps_tokens_increasing() {
    let (server, url) = volatile_redis().await;
    let locks = RedisLock::connect(&url).await.expect("connect");
    let k = key("restart");
    let ttl = Duration::from_secs(2);
    let lease = locks
        .acquire(&k, Acquire::ttl(ttl).keep_alive(1.0 / 4.0))
        .await
        .expect("acquire");
    let before = lease.fence();

    server.stop(Duration::ZERO).await;
    server.start_again().await;

    // The key is gone with the restart: the next extension says so, or validity runs out.
    tokio::time::timeout(ttl + Duration::from_secs(2), lease.lost())
        .await
        .expect("lost() did not fire after the server restarted empty");
    let late = BootInstant::now().saturating_duration_since(lease.valid_until());
    // Slack for a timer firing late on a loaded machine.
    assert!(
        late <= Duration::from_millis(150),
        "lost() fired {late:?} after valid_until"
    );

    // The fence counter was lost too; it restarts from the server clock, above `before`.
    let after = locks
        .acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(10)))
        .await
        .expect("acquire after the restart");
    assert!(
        after.fence() > before,
        "token {} after restart, {} before",
        after.fence(),
        before
    );
}

/// A restart that restores an older snapshot (RDB, AOF `everysec`, a promoted
/// replica) brings back a fence counter older than the tokens issued since: the
/// tokens after it must still be higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_increasing_after_a_restart_from_an_older_snapshot() {
    let port = free_port();
    let server = start_redis(RedisOptions {
        // Snapshots only when told (SAVE), into the image's writable /data.
        args: ["--dir", "/data", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec(),
        host_port: Some(port),
        ..RedisOptions::default()
    })
    .await;
    let url = format!("redis://127.0.0.1:{port}");
    let locks = RedisLock::connect(&url).await.expect("connect");
    let k = key("snapshot");
    let ttl = Duration::from_secs(5);
    let fence_of_one = |locks: RedisLock, k: String| async move {
        let mut lease = locks.acquire(&k, Acquire::ttl(ttl)).await.expect("acquire");
        lease.release().await.expect("release");
        lease.fence()
    };
    // The counter exists when the snapshot is taken, with a marker beside it.
    fence_of_one(locks.clone(), k.clone()).await;
    let mut raw = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SET")
        .arg("snapshot-marker")
        .arg("1")
        .query_async(&mut raw)
        .await
        .expect("set marker");
    let _: () = redis::cmd("SAVE")
        .query_async(&mut raw)
        .await
        .expect("SAVE");
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(fence_of_one(locks.clone(), k.clone()).await);
    }

    server.kill().await;
    server.start_again().await;

    // The fault took effect: the server came back from the snapshot (once it loaded it).
    let client = redis::Client::open(url.as_str()).expect("client");
    let give_up = Instant::now() + Duration::from_secs(10);
    let marker: Option<String> = loop {
        let answer = async {
            let mut raw = client.get_multiplexed_async_connection().await?;
            redis::cmd("GET")
                .arg("snapshot-marker")
                .query_async(&mut raw)
                .await
        };
        match answer.await {
            Ok(marker) => break marker,
            Err(e) if Instant::now() < give_up => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the server did not come back: {e}"),
        }
    };
    assert_eq!(
        marker.as_deref(),
        Some("1"),
        "the snapshot was not restored"
    );

    let locks = RedisLock::connect(&url).await.expect("connect again");
    for _ in 0..3 {
        issued.push(fence_of_one(locks.clone(), k.clone()).await);
    }
    assert!(
        issued.windows(2).all(|w| w[0] < w[1]),
        "tokens went back after the restart: {issued:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_cannot_make_the_gate_accept_a_stale_token() {
    let (server, url) = volatile_redis().await;
    let holder = RedisLock::connect(&url).await.expect("connect");
    let successor = RedisLock::connect(&url).await.expect("connect");
    let gate = RedisFenceGate::new(&successor);
    let k = key("pause");
    let ttl = Duration::from_secs(1);
    let stale = holder
        .acquire(&k, Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
        .await
        .expect("acquire");

    server.pause().await;
    // While the server is frozen the holder cannot extend: it must give the lease up in time.
    tokio::time::timeout(ttl + Duration::from_millis(500), stale.lost())
        .await
        .expect("lost() did not fire while the server was paused");
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.unpause().await;

    // Redis's clock ran on while paused: the key has expired and the successor gets it.
    let next = successor
        .acquire(
            &k,
            Acquire::ttl(Duration::from_secs(10)).wait(Duration::from_secs(10)),
        )
        .await
        .expect("the successor could not take the expired key");
    assert!(next.fence() > stale.fence());
    let order = format!("order:{k}");
    assert_eq!(
        gate.write(&order, next.fence(), b"successor")
            .await
            .expect("gate"),
        Admission::Accepted
    );
    // The stale holder wakes up and writes: refused, and the successor's value stays.
    assert_eq!(
        gate.write(&order, stale.fence(), b"stale")
            .await
            .expect("gate"),
        Admission::Stale {
            highest: next.fence()
        }
    );
    let (token, value) = gate.read(&order).await.expect("read").expect("stored");
    assert_eq!(
        (token, value.as_slice()),
        (next.fence(), b"successor".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_notification_does_not_strand_a_waiter() {
    let url = shared_redis_url().await;
    let holder = RedisLock::connect(&url).await.expect("connect");
    let waiter = RedisLock::connect(&url).await.expect("connect");
    let k = key("missed");
    let ttl = Duration::from_secs(30);
    let lease = holder
        .acquire(&k, Acquire::ttl(ttl))
        .await
        .expect("acquire");
    let waiting = {
        let k = k.clone();
        tokio::spawn(async move {
            waiter
                .acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(10)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Delete the lock behind everyone's back, publishing nothing.
    let mut raw = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("dlock:v1:lock:{{{k}}}"))
        .query_async(&mut raw)
        .await
        .expect("DEL");
    assert_eq!(deleted, 1);
    let freed = Instant::now();
    waiting
        .await
        .expect("task")
        .expect("the waiter was stranded without its notification");
    // Its safety net is a second; far below the holder's 30 s TTL.
    assert!(
        freed.elapsed() < Duration::from_secs(3),
        "took {:?}",
        freed.elapsed()
    );
    lease.leave_to_expire();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_of_another_client_without_polling() {
    a_release_wakes_another_client("").await;
}

/// Glob characters in the prefix must not corrupt the release subscription's pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_glob_characters_still_wakes_waiters() {
    a_release_wakes_another_client(r"app*?[x]\:").await;
}

async fn a_release_wakes_another_client(prefix: &str) {
    let url = shared_redis_url().await;
    let connect = || async {
        let config = dlock_redis::RedisConfig::builder()
            .url(url.as_str())
            .prefix(prefix)
            .build()
            .expect("config");
        RedisLock::connect_with(config).await.expect("connect")
    };
    let holder = connect().await;
    let waiter = connect().await;
    let k = key("notify");
    let ttl = Duration::from_secs(30);
    let mut lease = holder
        .acquire(&k, Acquire::ttl(ttl))
        .await
        .expect("acquire");
    let waiting = {
        let k = k.clone();
        tokio::spawn(async move {
            let lease = waiter
                .acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(10)))
                .await;
            (lease, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    lease.release().await.expect("release");
    let (granted, at) = waiting.await.expect("task");
    granted.expect("the waiter got the key");
    // Without the notification the waiter would sleep up to its 1 s safety net.
    let handoff = at - released;
    assert!(
        handoff < Duration::from_millis(300),
        "prefix {prefix:?}: handoff took {handoff:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again() {
    let url = shared_redis_url().await;
    let locks = RedisLock::connect(&url).await.expect("connect");
    let mut raw = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let k = key("noscript");
    let mut first = locks
        .acquire(&k, Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire");
    first.release().await.expect("release");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("flush");
    let mut second = locks
        .acquire(&k, Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire after SCRIPT FLUSH (NOSCRIPT) failed");
    assert!(second.fence() > first.fence());
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("flush");
    second.extend().await.expect("extend after SCRIPT FLUSH");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("flush");
    second.release().await.expect("release after SCRIPT FLUSH");
}

/// Applies the first attempt on the server but loses its answer, as a connection
/// dropped after the request went out would.
#[derive(Clone)]
struct FirstAnswerLost {
    inner: RedisLock,
    lost: Arc<AtomicBool>,
}

#[async_trait]
impl Lock for FirstAnswerLost {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        let outcome = self.inner.attempt(request).await;
        if !self.lost.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        outcome
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.inner.extend(key, owner, ttl).await
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.inner.release(key, owner).await
    }
    fn operation_timeout(&self) -> Duration {
        Duration::from_millis(300)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_is_recognised_by_its_owner_id() {
    let url = shared_redis_url().await;
    let inner = RedisLock::connect(&url).await.expect("connect");
    let lock = FirstAnswerLost {
        inner: inner.clone(),
        lost: Arc::default(),
    };
    let k = key("retry");
    let ttl = Duration::from_secs(10);
    let mut first = lock
        .acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(5)))
        .await
        .expect("the retry should find the lock already ours");
    // One grant, one token: the retry read back the token of the grant it found,
    // and the counter still holds that token.
    let mut raw = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let counter: String = redis::cmd("GET")
        .arg(format!("dlock:v1:fence:{{{k}}}"))
        .query_async(&mut raw)
        .await
        .expect("read the fence counter");
    assert_eq!(counter, first.fence().to_string());
    first.release().await.expect("release");
    let second = inner.acquire(&k, Acquire::ttl(ttl)).await.expect("acquire");
    assert!(second.fence() > first.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_is_waited_through() {
    // Another client's script runs past busy-reply-threshold: the server answers
    // BUSY to everyone until it ends. A waiting acquisition retries through it, as
    // through an outage (before: BUSY was a definite backend error, ending the wait).
    let (_server, url) = volatile_redis().await;
    let raw = || async {
        redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    };
    let mut admin = raw().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(100)
        .query_async(&mut admin)
        .await
        .expect("config");
    let locks = RedisLock::connect(&url).await.expect("connect");
    let mut busy = raw().await;
    let script = tokio::spawn(async move {
        let _: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async(&mut busy)
            .await;
    });
    // Until the server answers BUSY (the script runs past the threshold).
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut admin).await;
        if ping.is_err_and(|e| e.code() == Some("BUSY")) {
            break;
        }
        assert!(Instant::now() < give_up, "the server never got busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k = key("busy");
    let waiting = {
        let (locks, k) = (locks.clone(), k.clone());
        tokio::spawn(async move {
            locks
                .acquire(
                    &k,
                    Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(15)),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended_early = waiting.is_finished();
    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query_async(&mut admin)
        .await
        .expect("script kill");
    script.await.expect("script task");
    assert!(
        !ended_early,
        "the wait ended while the server was busy: {:?}",
        waiting.await
    );
    let mut lease = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("still waiting after the script ended")
        .expect("task")
        .expect("granted once the server is free");
    lease.release().await.expect("release");
}
