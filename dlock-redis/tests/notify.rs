//! Release notices reach only the waiter a release hands the key to: none when
//! nobody waits, none to idle clients, one message to the waiter's own client.

use std::time::Duration;

use dlock_core::{Acquire, LockExt, OwnerId};
use dlock_redis::RedisLock;
use dlock_testkit::{RedisOptions, start_redis};
use futures::StreamExt;
use tokio::time::Instant;

async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_are_announced_only_to_waiting_clients() {
    // A server of its own: the pattern count below must be this test's alone.
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let raw = redis::Client::open(url.as_str()).expect("url");
    let mut conn = raw
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // A spy on every release channel.
    let mut spy = raw.get_async_pubsub().await.expect("pubsub");
    spy.psubscribe("dlock:v1:*").await.expect("psubscribe");
    let mut published = spy.into_on_message();

    let holder = RedisLock::connect(&url).await.expect("connect");
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(RedisLock::connect(&url).await.expect("connect"));
    }
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut conn)
        .await
        .expect("NUMPAT");
    assert_eq!(
        numpat, 1,
        "clients hold pattern subscriptions: every release would reach them all"
    );

    let key = format!("dlock-notify:{}", OwnerId::random());
    let channel = format!("dlock:v1:released:{{{key}}}");
    let ttl = Duration::from_secs(30);
    let mut lease = holder
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire");
    lease.release().await.expect("release");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), published.next())
            .await
            .is_err(),
        "a release with nobody waiting was published"
    );

    // One waiter, in another client: only its client subscribes, and it is woken.
    let lease = holder
        .acquire(&key, Acquire::ttl(ttl))
        .await
        .expect("acquire");
    let waiter = idle.pop().expect("a client");
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move {
            let mut lease = waiter
                .acquire(&key, Acquire::ttl(ttl))
                .await
                .expect("acquire");
            lease.release().await.expect("release");
            waiter
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        numsub(&mut conn, &channel).await,
        0,
        "a waiter in line subscribed to the key: every waiting client would get every release"
    );
    let released = Instant::now();
    let mut lease = lease;
    lease.release().await.expect("release");
    let waiter = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiter was not woken")
        .expect("task");
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "the waiter took {:?}: it waited for a timer, not the notice",
        released.elapsed()
    );
    // One message, on the waiter's client's own channel; nothing else.
    let notice = tokio::time::timeout(Duration::from_secs(1), published.next())
        .await
        .expect("the hand-over to the waiter was not published")
        .expect("spy");
    assert!(
        notice.get_channel_name().starts_with("dlock:v1:client:{"),
        "{}",
        notice.get_channel_name()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), published.next())
            .await
            .is_err(),
        "more than one notice for one hand-over"
    );
    drop((waiter, idle));
}

/// The connection that carries hand-over notices reconnects by itself only a few
/// times; after an outage longer than that (here the server stopped for 1.5 s)
/// it must still come back, or every handoff waits for the waiter's 1 s timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_are_notified_again_after_a_long_outage() {
    let port = dlock_testkit::free_port();
    let server = start_redis(RedisOptions::volatile_on(port)).await;
    let url = format!("redis://127.0.0.1:{port}");
    let (a, b) = (
        RedisLock::connect(&url).await.expect("connect"),
        RedisLock::connect(&url).await.expect("connect"),
    );
    server.stop(Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.start_again().await;
    // Both clients' request connections are back once a request gets through.
    for lock in [&a, &b] {
        let give_up = Instant::now() + Duration::from_secs(20);
        while lock
            .try_acquire(
                &format!("dlock-notify-probe:{}", OwnerId::random()),
                Duration::from_secs(1),
            )
            .await
            .is_err()
        {
            assert!(Instant::now() < give_up, "the server never answered again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Within one probe period, the notice connection is back as well.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ttl = Duration::from_secs(30);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let key = format!("dlock-notify-outage:{}", OwnerId::random());
        let mut held = a.acquire(&key, Acquire::ttl(ttl)).await.expect("acquire");
        let waiter = {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move {
                let lease = b
                    .acquire(&key, Acquire::ttl(ttl).wait(Duration::from_secs(10)))
                    .await
                    .expect("the waiter was not granted");
                (Instant::now(), lease)
            })
        };
        // Queued, and asleep until its turn (its timer is 1 s while the key is held).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let released = Instant::now();
        held.release().await.expect("release");
        let (granted, _lease) = waiter.await.expect("task");
        let handoff = granted.saturating_duration_since(released);
        if handoff > Duration::from_millis(400) {
            slow.push(handoff);
        }
    }
    assert!(
        slow.is_empty(),
        "handoffs waited for the waiter's timer, not a notice: {slow:?}"
    );
}
