//! `dlock status` against real servers: free and held, as text and JSON, on
//! Redis and etcd, and it takes nothing.

use std::{process::Output, time::Duration};

use dlock::{LockExt, OwnerId};
use dlock_testkit::{shared_etcd_url, shared_redis_url};
use tokio::process::Command;

async fn status(url: &str, args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_dlock"))
            .env("DLOCK_URL", url)
            .arg("status")
            .args(args)
            .output(),
    )
    .await
    .expect("dlock status did not finish")
    .expect("run dlock status")
}

async fn shows_free_and_held(url: &str) {
    let key = format!("dlock-cli-status:{}", OwnerId::random());
    let out = status(url, &[&key]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{key}: free")
    );
    let out = status(url, &["--json", &key]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{{\"key\":\"{key}\",\"held\":false}}")
    );

    let lock = dlock::connect(url).await.expect("connect");
    let mut lease = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .expect("try_acquire")
        .expect("free");
    let out = status(url, &[&key]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("held, fence {}", lease.fence())),
        "{text}"
    );
    assert!(
        text.contains("expires in 2") || text.contains("expires in 3"),
        "{text}"
    );
    let out = status(url, &["--json", &key]).await;
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        json.contains(&format!("\"fence\":{}", lease.fence())),
        "{json}"
    );
    assert!(json.contains("\"held\":true"), "{json}");

    // Inspecting took nothing: the holder still holds and can extend.
    assert!(lease.is_valid());
    lease.extend().await.expect("extend after status");
    let other = dlock::connect(url).await.expect("connect");
    assert!(
        other
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .expect("try_acquire")
            .is_none()
    );
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_redis() {
    shows_free_and_held(&shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_etcd() {
    shows_free_and_held(&shared_etcd_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_refuses_what_cannot_work() {
    let out = status("memory://", &["k"]).await;
    assert_eq!(out.status.code(), Some(64));
    let out = status("redis://127.0.0.1:1", &["k"]).await;
    assert_eq!(out.status.code(), Some(69));
    let out = status("redis://127.0.0.1:1", &[""]).await;
    assert_eq!(
        out.status.code(),
        Some(69),
        "connect fails before the key is read"
    );
}
