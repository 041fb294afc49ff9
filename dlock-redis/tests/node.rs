//! The per-node API Redlock builds on: `take`, the plain-command vote of a quorum
//! without fencing tokens, against a real server.

use std::time::Duration;

use dlock_core::{Error, LockKey, OwnerId};
use dlock_redis::{NodeGrant, RedisConfig, RedisNode};
use dlock_testkit::shared_redis_url;

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn pttl(url: &str, key: &LockKey) -> i64 {
    redis::cmd("PTTL")
        .arg(format!("dlock:v1:lock:{{{key}}}"))
        .query_async(&mut raw(url).await)
        .await
        .expect("PTTL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_grants_refuses_another_owner_and_resets_a_retry_ttl() {
    let url = shared_redis_url().await;
    let node = RedisNode::connect(RedisConfig::from_url(&url).expect("url"))
        .await
        .expect("connect");
    let key = LockKey::new(&format!("dlock-node:take:{}", OwnerId::random())).expect("key");
    let (me, other) = (OwnerId::random(), OwnerId::random());

    let first = node
        .take(&key, &me, Duration::from_secs(2))
        .await
        .expect("take");
    assert_eq!(first, NodeGrant::Granted(dlock_core::FenceToken(0)));

    // Another owner is refused, told about how long the key is still held.
    match node
        .take(&key, &other, Duration::from_secs(30))
        .await
        .expect("take")
    {
        NodeGrant::Held(Some(left)) => assert!(
            left <= Duration::from_secs(2) && left > Duration::from_millis(500),
            "held for {left:?}, set for 2 s"
        ),
        answer => panic!("another owner got {answer:?}"),
    }

    // A retry by the same owner (its first answer lost) is granted, and its TTL
    // counts from now, not from the first grant.
    let (retry, name) = node
        .take_with_connection_name(&key, &me, Duration::from_secs(30))
        .await
        .expect("take");
    assert_eq!(retry, NodeGrant::Granted(dlock_core::FenceToken(0)));
    assert_eq!(name, None, "this client never named the connection");
    let left = pttl(&url, &key).await;
    assert!(left > 20_000, "the retry left {left} ms of a 30 s TTL");

    assert!(node.release(&key, &me).await.expect("release"));
    assert_eq!(pttl(&url, &key).await, -2, "the key is gone after release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_on_a_key_of_another_type_is_a_conflict_and_changes_nothing() {
    let url = shared_redis_url().await;
    let node = RedisNode::connect(RedisConfig::from_url(&url).expect("url"))
        .await
        .expect("connect");
    let key = LockKey::new(&format!("dlock-node:hash:{}", OwnerId::random())).expect("key");
    let stored = format!("dlock:v1:lock:{{{key}}}");
    let _: () = redis::cmd("HSET")
        .arg(&stored)
        .arg("field")
        .arg("value")
        .query_async(&mut raw(&url).await)
        .await
        .expect("HSET");
    match node
        .take(&key, &OwnerId::random(), Duration::from_secs(5))
        .await
    {
        Err(Error::Conflict { key: named, .. }) => assert_eq!(named, key.as_str()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let field: String = redis::cmd("HGET")
        .arg(&stored)
        .arg("field")
        .query_async(&mut raw(&url).await)
        .await
        .expect("HGET");
    assert_eq!(field, "value");
}
