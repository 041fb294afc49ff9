//! `dlock elect` as a subprocess against real servers: leaders in turn with
//! growing tokens, the observer's lines, the conflict code, bad input, a deposed
//! or frozen leader's command stopped before anyone else can lead, and a killed
//! leader replaced.

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use dlock::{ELECTION_KEY_PREFIX, RedisLock};
use dlock_testkit::{RedisOptions, shared_etcd_url, shared_redis_url, start_redis};
use tokio::{io::AsyncBufReadExt, time::Instant};

fn new_name() -> String {
    format!("dlock-cli-elect:{}", dlock::OwnerId::random())
}

/// `dlock elect` of `script` with a 4 s lease, renewed every 500 ms, stepping
/// down 2 s after the last renewal.
fn short_elect(url: &str, name: &str, value: &str, script: &str) -> tokio::process::Child {
    dlock(url)
        .args([
            "elect",
            "--ttl",
            "4s",
            "--renew-deadline",
            "2s",
            "--retry-period",
            "500ms",
            "--value",
            value,
            name,
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// The observer's next line, within `limit`.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    limit: Duration,
) -> String {
    tokio::time::timeout(limit, lines.next_line())
        .await
        .expect("the observer printed nothing")
        .expect("read")
        .expect("the observer ended")
}

async fn leaders_in_turn(url: &str) {
    let name = new_name();
    let mut observer = dlock(url)
        .args(["elect", "--observe", &name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the observer");
    let mut lines = tokio::io::BufReader::new(observer.stdout.take().expect("stdout")).lines();
    let script = "echo \"$DLOCK_ELECTION $DLOCK_FENCE\"; sleep 1";
    let first = short_elect(url, &name, "a", script);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = short_elect(url, &name, "b", script);
    let (first, second) = (exited(first).await, exited(second).await);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    let fence = |out: &std::process::Output| -> u64 {
        let line = stdout(out);
        let (election, fence) = line.trim().split_once(' ').expect("two words");
        assert_eq!(election, name);
        fence.parse().expect("a token")
    };
    assert!(
        fence(&second) > fence(&first),
        "{url}: the second leader's token did not grow"
    );
    // The observer saw both, in order, with their tokens.
    let seen = [
        next_line(&mut lines, PATIENCE).await,
        next_line(&mut lines, PATIENCE).await,
    ];
    assert_eq!(
        seen,
        [
            format!("a\t{}", fence(&first)),
            format!("b\t{}", fence(&second))
        ],
        "{url}"
    );
    signal(observer.id(), rustix::process::Signal::INT);
    let out = exited(observer).await;
    assert_eq!(out.status.code(), Some(130), "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_follow_each_other_with_growing_tokens_on_redis() {
    leaders_in_turn(&shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_follow_each_other_with_growing_tokens_on_etcd() {
    leaders_in_turn(&shared_etcd_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_leader_is_the_conflict_code() {
    let url = shared_redis_url().await;
    let name = new_name();
    let leader = short_elect(&url, &name, "a", "sleep 5");
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The election is a lock: status shows its leader, with the value.
    let out = output(dlock(&url).args(["status", &format!("dlock.election/{name}")])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).trim_end().ends_with(", value a"),
        "{}",
        stdout(&out)
    );
    let out = output(dlock(&url).args(["elect", "-n", &name, "--", "true"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another candidate leads"),
        "{}",
        stderr(&out)
    );
    let started = Instant::now();
    let out =
        output(dlock(&url).args(["elect", "-w", "500ms", "-E", "3", &name, "--", "true"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(500));
    let out = exited(leader).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_election_input_is_one_line_and_exit_64() {
    let url = "redis://127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (&["elect", "e"], "no command"),
        (
            &[
                "elect",
                "--ttl",
                "4s",
                "--renew-deadline",
                "4s",
                "e",
                "--",
                "true",
            ],
            "renew_deadline",
        ),
        (
            &["elect", "--retry-period", "10s", "e", "--", "true"],
            "retry_period",
        ),
        (
            &["elect", "--observe", "--value", "x", "e"],
            "cannot be used with",
        ),
        (
            &["elect", "--url", "memory://", "e", "--", "true"],
            "memory://",
        ),
    ];
    for (args, expected) in cases {
        let out = output(dlock(url).args(*args)).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The options are checked against the backend before any campaign: etcd's
    // TTLs are whole seconds.
    let etcd = shared_etcd_url().await;
    let out = output(dlock(&etcd).args(["elect", "--ttl", "2500ms", "e", "--", "true"])).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

/// A leader whose election key is deleted is deposed: its whole group is stopped
/// at the next renewal, dlock exits 75, and a waiting candidate leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_is_stopped_and_the_next_leads() {
    let url = shared_redis_url().await;
    let name = new_name();
    let (pids, script) = sleeper_script("deposed");
    let leader = short_elect(&url, &name, "a", &script);
    let grandchild = wait_for_file(&pids).await;
    let next = short_elect(&url, &name, "b", "echo b leads");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lock = RedisLock::connect(&url).await.expect("connect");
    assert!(
        lock.force_release(&format!("{ELECTION_KEY_PREFIX}{name}"))
            .await
            .expect("delete")
    );
    let deleted = Instant::now();
    let out = exited(leader).await;
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        is_dead(&grandchild),
        "the deposed leader's command lived on"
    );
    assert!(
        deleted.elapsed() < Duration::from_secs(4),
        "stopped {:?} after the deletion",
        deleted.elapsed()
    );
    let out = exited(next).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "b leads");
    let _ = std::fs::remove_file(pids);
}

/// With the backend frozen, no renewal succeeds: the leader's command is stopped
/// at the renew deadline, before the backend could hand the election to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_stops_the_leader_before_its_term_could_pass() {
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let name = new_name();
    let (pids, script) = sleeper_script("frozen-leader");
    let leader = short_elect(&url, &name, "a", &script);
    let grandchild = wait_for_file(&pids).await;
    server.pause().await;
    let paused = Instant::now();
    wait_dead(
        &grandchild,
        PATIENCE,
        "the leader's command was never stopped",
    )
    .await;
    let stopped_after = paused.elapsed();
    let out = exited(leader).await;
    server.unpause().await;
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    // The last renewal was sent at most 500 ms before the freeze; the renew
    // deadline is 2 s after it, the server's expiry 4 s after it.
    assert!(
        stopped_after < Duration::from_secs(4),
        "stopped {stopped_after:?} after the freeze, past the 4 s lease"
    );
    assert!(
        stopped_after >= Duration::from_millis(1000),
        "stopped too early: {stopped_after:?}"
    );
    let _ = std::fs::remove_file(pids);
}

/// SIGKILL to the leading dlock: its command dies with it, and the waiting
/// candidate leads once the TTL frees the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced() {
    let url = shared_redis_url().await;
    let name = new_name();
    let (pids, script) = sleeper_script("killed-leader");
    let mut leader = short_elect(&url, &name, "a", &script);
    let grandchild = wait_for_file(&pids).await;
    let next = short_elect(&url, &name, "b", "echo b leads");
    tokio::time::sleep(Duration::from_millis(300)).await;
    leader.start_kill().expect("SIGKILL dlock");
    let killed = Instant::now();
    let _ = leader.wait().await;
    wait_dead(
        &grandchild,
        Duration::from_secs(5),
        "the command outlived a SIGKILLed leader",
    )
    .await;
    let out = exited(next).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "b leads");
    // The TTL (4 s) after the last renewal, plus the waiter's backoff.
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "b led {:?} after the kill",
        killed.elapsed()
    );
}
