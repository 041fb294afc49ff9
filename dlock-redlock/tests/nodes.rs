//! Each node its own credentials and TLS, through the builder; shared credentials
//! through the URL; and passwords that never show in an error.

use std::time::Duration;

use dlock_core::{Acquire, Error, LockExt, OwnerId};
use dlock_redis::RedisConfig;
use dlock_redlock::{RedlockConfig, RedlockLock};
use dlock_testkit::{RedisOptions, Server, TestCertificate, start_redis, start_redis_tls};

async fn with_password(password: &str) -> Server {
    start_redis(RedisOptions {
        args: vec!["--requirepass".into(), password.into()],
        ..RedisOptions::default()
    })
    .await
}

/// `connected` failed as refused credentials, and its error does not carry `password`.
fn refused_without_showing(connected: Result<RedlockLock, Error>, password: &str) {
    match connected {
        Err(e @ Error::Auth { .. }) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(password), "the password leaked: {shown}");
        }
        other => panic!("expected an auth error, got {:?}", other.map(|_| ())),
    }
}

async fn acquire_and_release(lock: &RedlockLock) {
    let key = format!("redlock-nodes:{}", OwnerId::random());
    let mut lease = lock
        .acquire(&key, Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire on every node");
    assert!(lease.fence().get() > 0);
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_with_its_own_password_or_tls() {
    let (a, b) = (with_password("pw-a").await, with_password("pw-b").await);
    let cert = TestCertificate::new("redlock");
    let c = start_redis_tls(cert.dir()).await;
    let node = |url: String, password: &str| {
        RedisConfig::builder()
            .url(url)
            .password(password)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .expect("node config")
    };
    let tls_node = RedisConfig::builder()
        .url(format!("rediss://127.0.0.1:{}", c.port()))
        .tls_root_cert_pem(cert.pem().as_bytes())
        .build()
        .expect("TLS node config");
    let config = RedlockConfig::builder()
        .node(node(format!("redis://127.0.0.1:{}", a.port()), "pw-a"))
        .node(node(format!("redis://127.0.0.1:{}", b.port()), "pw-b"))
        .node(tls_node.clone())
        .build()
        .expect("config");
    assert!(
        !format!("{config:?}").contains("pw-"),
        "a password shows in {config:?}"
    );
    let lock = RedlockLock::connect_with(config).await.expect("connect");
    acquire_and_release(&lock).await;

    // One node's password wrong: connecting fails as refused credentials, and the
    // error does not carry the password.
    let wrong = RedlockConfig::builder()
        .node(node(format!("redis://127.0.0.1:{}", a.port()), "pw-a"))
        .node(node(format!("redis://127.0.0.1:{}", b.port()), "not-pw-b"))
        .node(tls_node)
        .build()
        .expect("config");
    refused_without_showing(RedlockLock::connect_with(wrong).await, "not-pw-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_shares_its_credentials_and_hides_them() {
    let nodes = [
        with_password("shared-pw").await,
        with_password("shared-pw").await,
        with_password("shared-pw").await,
    ];
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let lock = RedlockLock::connect(&format!("redlock://:shared-pw@{}", hosts.join(",")))
        .await
        .expect("connect with the URL's password");
    acquire_and_release(&lock).await;
    let url = format!("redlock://:wrong-pw@{}", hosts.join(","));
    refused_without_showing(RedlockLock::connect(&url).await, "wrong-pw");
}

/// A TTL that leaves no validity after the drift and one node's timeout is refused
/// as too short, before any request, like any TTL out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_without_room_for_the_per_node_timeout_is_refused_before_any_request() {
    let urls = dlock_testkit::shared_redis_nodes(3).await;
    let mut builder = RedlockConfig::builder().per_node_timeout(Duration::from_secs(1));
    for url in &urls {
        builder = builder.node_url(url.as_str());
    }
    let locks = RedlockLock::connect_with(builder.build().expect("config"))
        .await
        .expect("connect");
    let min = dlock_core::Lock::capabilities(&locks).min_ttl;
    assert!(min > Duration::from_secs(1), "min_ttl {min:?}");
    let key = format!("dlock-redlock-ttl:{}", OwnerId::random());
    match locks.try_acquire(&key, Duration::from_millis(900)).await {
        Err(Error::InvalidInput(dlock_core::InvalidInput::TtlTooShort { min: said, .. })) => {
            assert_eq!(said, min);
        }
        other => panic!("expected the TTL refused as too short, got {other:?}"),
    }
    // Just above the minimum, it works.
    let mut lease = locks
        .acquire(&key, Acquire::ttl(min + Duration::from_millis(500)))
        .await
        .expect("acquire");
    lease.release().await.expect("release");
}
