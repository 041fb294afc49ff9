//! Session mode against a real etcd: one lease for all of a client's locks, its
//! TTL the only one accepted, locks that outlive their TTL while the client lives
//! and go together when it goes, and an operator break that spares the others.

use std::time::Duration;

use dlock_core::{Acquire, Error, ExpiryScope, InvalidInput, Lock, LockExt, OwnerId};
use dlock_etcd::{EtcdConfig, EtcdLock};
use dlock_testkit::shared_etcd_url;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

/// A session-mode client and a raw etcd client, on a prefix of their own.
async fn session_client() -> (EtcdLock, etcd_client::Client, String) {
    let url = shared_etcd_url().await;
    let prefix = format!("dlock-session-{}/", OwnerId::random());
    let lock = EtcdLock::connect(&format!("{url}/{prefix}?session=2"))
        .await
        .expect("connect");
    let raw = etcd_client::Client::connect([url.replace("etcd://", "http://")], None)
        .await
        .expect("connect");
    (lock, raw, prefix)
}

/// The leases of the keys under `prefix`, one per key.
async fn leases_under(raw: &mut etcd_client::Client, prefix: &str) -> Vec<i64> {
    let answer = raw
        .get(
            format!("{prefix}v2/lock/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    answer.kvs().iter().map(|kv| kv.lease()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lock_of_a_client_shares_one_lease() {
    let (lock, mut raw, prefix) = session_client().await;
    let caps = lock.capabilities();
    assert_eq!(caps.expiry_scope, ExpiryScope::PerClient);
    assert_eq!((caps.min_ttl, caps.max_ttl), (TTL, TTL));
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(
            lock.acquire(&format!("k{i}"), Acquire::ttl(TTL))
                .await
                .expect("acquire"),
        );
    }
    for i in 0..20 {
        let mut lease = lock
            .acquire(&format!("short{i}"), Acquire::ttl(TTL))
            .await
            .expect("acquire");
        lease.release().await.expect("release");
    }
    let leases = leases_under(&mut raw, &prefix).await;
    assert_eq!(leases.len(), 5, "{leases:?}");
    assert!(leases.windows(2).all(|w| w[0] == w[1]), "{leases:?}");
    // Held past three TTLs by the session alone (no keep-alive of their own: the
    // leases say they expired, but their keys stay while the client lives).
    drop(held);
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(
            lock.acquire(&format!("kept{i}"), Acquire::ttl(TTL).no_keep_alive())
                .await
                .expect("acquire"),
        );
    }
    tokio::time::sleep(TTL * 3).await;
    let other = EtcdLock::connect(&format!("{}/{prefix}", shared_etcd_url().await))
        .await
        .expect("connect");
    for i in 0..3 {
        let again = other
            .try_acquire(&format!("kept{i}"), Duration::from_secs(5))
            .await
            .expect("try");
        assert!(again.is_none(), "kept{i} was free while its client lived");
    }
    // The client goes: every lock it held goes with it, within a TTL and etcd's
    // expiry slack.
    for lease in kept {
        lease.leave_to_expire();
    }
    drop(lock);
    let gone_by = Instant::now() + TTL + caps.expiry_slack_fixed + Duration::from_secs(2);
    while !leases_under(&mut raw, &prefix).await.is_empty() {
        assert!(
            Instant::now() < gone_by,
            "the dropped client's keys outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        other
            .try_acquire(&format!("kept{i}"), Duration::from_secs(5))
            .await
            .expect("try")
            .expect("free once its client went");
    }
}

/// Shutdown ends the session: a lock left to expire, whose key would otherwise
/// stay as long as the client, goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_session() {
    let (lock, mut raw, prefix) = session_client().await;
    let kept = lock
        .acquire("kept", Acquire::ttl(TTL))
        .await
        .expect("acquire");
    let left = lock
        .acquire("left", Acquire::ttl(TTL))
        .await
        .expect("acquire");
    left.leave_to_expire();
    assert_eq!(leases_under(&mut raw, &prefix).await.len(), 2);
    let report = lock.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.released, 1, "{report}");
    assert!(!kept.is_valid());
    let keys = leases_under(&mut raw, &prefix).await;
    assert!(keys.is_empty(), "keys after shutdown: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sessions_ttl_is_accepted() {
    let (lock, _, _) = session_client().await;
    let err = lock
        .acquire("other-ttl", Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect_err("a TTL other than the session's was accepted");
    assert!(
        matches!(err, Error::InvalidInput(InvalidInput::TtlTooLong { .. })),
        "{err:?}"
    );
    for (url, wants) in [
        ("etcd://127.0.0.1:2379/?session=1", "at least 2 s"),
        ("etcd://127.0.0.1:2379/?session=abc", "whole seconds"),
        ("etcd://127.0.0.1:2379/?sesion=5", "unknown option"),
    ] {
        let err = EtcdConfig::from_url(url).expect_err(url);
        assert!(err.to_string().contains(wants), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_break_ends_one_lock_and_spares_the_others() {
    let (lock, _, prefix) = session_client().await;
    let kept = || Acquire::ttl(TTL).keep_alive(1.0 / 3.0);
    let broken = lock.acquire("broken", kept()).await.expect("acquire");
    let spared = lock.acquire("spared", kept()).await.expect("acquire");
    let admin = EtcdLock::connect(&format!("{}/{prefix}", shared_etcd_url().await))
        .await
        .expect("connect");
    assert!(admin.force_release("broken").await.expect("force release"));
    // Keep-alive finds the key gone within a TTL.
    tokio::time::timeout(TTL + Duration::from_secs(1), broken.lost())
        .await
        .expect("the broken lock was not lost");
    tokio::time::sleep(TTL).await;
    assert!(spared.is_valid(), "{:?}", spared.lost_reason());
    assert!(
        admin
            .try_acquire("spared", Duration::from_secs(5))
            .await
            .expect("try")
            .is_none(),
        "the break ended the client's other lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_dropped_outside_the_runtime_is_released() {
    // Dropped on a plain thread, with no runtime to spawn its release on: the
    // client lives on, and with it the session, so only a release frees the key
    // (before: held for the client's whole life).
    let (lock, _raw, prefix) = session_client().await;
    let url = shared_etcd_url().await;
    let other = EtcdLock::connect(&format!("{url}/{prefix}?session=2"))
        .await
        .expect("connect");
    let lease = lock
        .acquire("dropped-off-runtime", Acquire::ttl(TTL))
        .await
        .expect("acquire");
    std::thread::spawn(move || drop(lease))
        .join()
        .expect("thread");
    let mut next = other
        .acquire("dropped-off-runtime", Acquire::ttl(TTL).wait(TTL * 3))
        .await
        .expect("the dropped lease was released while its client lives");
    next.release().await.expect("release");
    drop(lock);
}
