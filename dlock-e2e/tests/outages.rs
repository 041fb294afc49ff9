//! An outage, the same way on every networked backend: the server stopped, each
//! wait mode asked for a lock. One rule: a caller that does not wait gets the
//! backend's error at once; one with a wait limit gets a timeout that carries the
//! backend's error and is retryable; one that waits for ever waits through it.

use std::time::Duration;

use dlock::{Acquire, DynLock, Error, LockExt, OwnerId};
use dlock_testkit::{RedisOptions, Server, free_port, start_etcd, start_redis};
use tokio::time::Instant;

async fn check_outage(locks: DynLock, server: &Server, backend: &str) {
    let key = format!("dlock-outage:{}", OwnerId::random());
    server.stop(Duration::ZERO).await;

    // No wait: the error itself, retryable, at once.
    let started = Instant::now();
    let err = locks
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .expect_err("try_acquire on a stopped server");
    assert!(err.is_retryable(), "{backend}: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{backend}: try_acquire took {:?}",
        started.elapsed()
    );

    // A wait limit: a timeout that names the key and carries the cause.
    let started = Instant::now();
    let err = locks
        .acquire(
            &key,
            Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(2)),
        )
        .await
        .expect_err("acquire on a stopped server");
    let took = started.elapsed();
    match &err {
        Error::Timeout {
            key: named,
            cause: Some(cause),
            ..
        } => {
            assert_eq!(named, &key);
            assert!(cause.is_retryable(), "{backend}: cause {cause}");
        }
        other => panic!("{backend}: expected a timeout with its cause, got {other:?}"),
    }
    assert!(err.is_retryable(), "{backend}: {err}");
    assert!(err.to_string().contains(&key), "{backend}: {err}");
    assert!(err.to_string().contains("kept failing"), "{backend}: {err}");
    // Within the wait plus one operation timeout (and some slack for the machine).
    let bound = Duration::from_secs(2) + locks.operation_timeout() + Duration::from_secs(1);
    assert!(
        took <= bound,
        "{backend}: returned after {took:?}, beyond {bound:?}"
    );

    // For ever: still waiting while the server is down.
    let waiting = {
        let (locks, key) = (locks.clone(), key.clone());
        tokio::spawn(async move {
            locks
                .acquire(&key, Acquire::ttl(Duration::from_secs(5)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !waiting.is_finished(),
        "{backend}: a wait for ever ended during the outage: {:?}",
        waiting.await
    );
    waiting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_on_redis_follows_the_rule() {
    let port = free_port();
    let server = start_redis(RedisOptions {
        host_port: Some(port),
        ..RedisOptions::default()
    })
    .await;
    let url = format!("redis://127.0.0.1:{port}");
    let locks = dlock::connect(&url).await.expect("connect");
    check_outage(locks.clone(), &server, "redis").await;
    // The server comes back: a wait for ever, begun during the outage, is granted.
    let key = format!("dlock-outage:back:{}", OwnerId::random());
    server.stop(Duration::ZERO).await;
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move {
            locks
                .acquire(&key, Acquire::ttl(Duration::from_secs(5)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start_again().await;
    let granted = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("still waiting after the server came back")
        .expect("task");
    assert!(granted.is_ok(), "{granted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_on_etcd_follows_the_rule() {
    let server = start_etcd().await;
    let url = format!("etcd://127.0.0.1:{}", server.port());
    let locks = dlock::connect(&url).await.expect("connect");
    check_outage(locks, &server, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_a_redlock_minority_is_no_outage() {
    // One of three nodes stopped: Redlock carries on; two stopped is
    // QuorumUnavailable at once (see dlock-redlock's fault tests).
    let starts = (0..3).map(|_| start_redis(RedisOptions::default()));
    let servers = futures::future::join_all(starts).await;
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let locks = dlock::connect(&format!("redlock://{}", hosts.join(",")))
        .await
        .expect("connect");
    servers[0].stop(Duration::ZERO).await;
    let mut lease = locks
        .acquire(
            "dlock-outage:redlock",
            Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(5)),
        )
        .await
        .expect("a majority is still up");
    lease.release().await.expect("release");
}
