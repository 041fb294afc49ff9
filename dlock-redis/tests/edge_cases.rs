//! Redis edge cases: keys of another type, credentials, TLS, servers that are not
//! there or are not Redis.

use std::time::Duration;

use dlock_core::{Acquire, Error, LockExt};
use dlock_redis::{RedisConfig, RedisLock};
use dlock_testkit::{
    RedisOptions, TestCertificate, free_port, shared_redis_url, start_redis, start_redis_tls,
};
use tokio::{io::AsyncWriteExt, net::TcpListener, time::Instant};

fn key(name: &str) -> String {
    format!("dlock-edge:{name}:{}", dlock_core::OwnerId::random())
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_key_of_another_type_is_a_conflict_not_busy_forever() {
    let url = shared_redis_url().await;
    let locks = RedisLock::connect(&url).await.expect("connect");
    let k = key("hash");
    let _: () = redis::cmd("HSET")
        .arg(format!("dlock:v1:lock:{{{k}}}"))
        .arg("field")
        .arg("value")
        .query_async(&mut raw(&url).await)
        .await
        .expect("HSET");
    for result in [
        locks
            .try_acquire(&k, Duration::from_secs(5))
            .await
            .map(|_| ()),
        locks
            .acquire(
                &k,
                Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(1)),
            )
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(Error::Conflict { key, detail }) => {
                assert_eq!(key, k);
                assert!(
                    detail.contains("hash"),
                    "the error does not name the type: {detail}"
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
}

async fn password_server() -> (dlock_testkit::Server, u16) {
    let server = start_redis(RedisOptions {
        args: [
            "--requirepass",
            "s3cret",
            "--user",
            "alice",
            "on",
            ">wonderland",
            "~*",
            "&*",
            "+@all",
        ]
        .map(String::from)
        .to_vec(),
        ..RedisOptions::default()
    })
    .await;
    let port = server.port();
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_auth_errors() {
    let (_server, port) = password_server().await;
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
        format!("redis://alice:wrong@127.0.0.1:{port}"),
    ] {
        match RedisLock::connect(&url).await {
            Err(Error::Auth { source }) => {
                assert!(
                    !source.to_string().contains("wrong"),
                    "the password leaked: {source}"
                );
            }
            other => panic!("{url}: expected an auth error, got {other:?}"),
        }
    }
    // The right ones work, as the default user and as an ACL user.
    for url in [
        format!("redis://:s3cret@127.0.0.1:{port}"),
        format!("redis://alice:wonderland@127.0.0.1:{port}"),
    ] {
        let locks = RedisLock::connect(&url)
            .await
            .expect("valid credentials refused");
        let lease = locks
            .try_acquire(&key("auth"), Duration::from_secs(5))
            .await;
        assert!(lease.expect("acquire").is_some());
    }
    let config = RedisConfig::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .username("alice")
        .password("wonderland")
        .build()
        .expect("config");
    RedisLock::connect_with(config)
        .await
        .expect("builder credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_certificate_made_at_test_time() {
    let cert = TestCertificate::new("redis");
    let server = start_redis_tls(cert.dir()).await;
    let url = format!("rediss://127.0.0.1:{}", server.port());

    // Trusting the test certificate: works.
    let config = RedisConfig::builder()
        .url(&url)
        .tls_root_cert_pem(cert.pem().as_bytes())
        .build()
        .expect("config");
    assert!(config.is_tls());
    let locks = RedisLock::connect_with(config).await.expect("TLS connect");
    let mut lease = locks
        .acquire(&key("tls"), Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire over TLS");
    lease.release().await.expect("release over TLS");

    // Not trusting it: refused, quickly, as an error.
    let untrusted = RedisConfig::builder()
        .url(&url)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("config");
    let err = RedisLock::connect_with(untrusted)
        .await
        .expect_err("an untrusted certificate was accepted");
    assert!(!err.is_invalid_input(), "{err}");
    // Plain text against the TLS port is refused too.
    let plain = RedisConfig::builder()
        .url(format!("redis://127.0.0.1:{}", server.port()))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    assert!(RedisLock::connect_with(plain).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_fails_within_the_connect_timeout() {
    let limit = Duration::from_secs(2);
    let config = RedisConfig::builder()
        .url(format!("redis://127.0.0.1:{}", free_port()))
        .connect_timeout(limit)
        .build()
        .expect("config");
    let started = Instant::now();
    let err = RedisLock::connect_with(config)
        .await
        .expect_err("nothing listens there");
    assert!(
        err.is_retryable(),
        "an unreachable server should be retryable: {err:?}"
    );
    assert!(
        started.elapsed() <= limit + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_redis_is_an_error_not_a_hang() {
    // A local server that answers every connection in HTTP and hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let limit = Duration::from_secs(2);
    let config = RedisConfig::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(limit)
        .build()
        .expect("config");
    let started = Instant::now();
    let err = RedisLock::connect_with(config)
        .await
        .expect_err("HTTP is not Redis");
    assert!(!err.is_invalid_input(), "{err}");
    assert!(
        started.elapsed() <= limit + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_urls_are_refused_before_any_io() {
    for url in [
        "",
        "localhost:6379",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        "redis://:pw@h:x",
    ] {
        let err = RedisLock::connect(url).await.expect_err(url);
        assert!(err.is_invalid_input(), "{url}: {err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}
