//! `dlock run` as a subprocess against real servers: serialization, exit codes,
//! the environment, signals, nested locks, and the lease-lost path (the whole
//! process group stopped before the lease expires).

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use dlock::{LockExt, RedisLock};
use dlock_testkit::{RedisOptions, shared_etcd_url, shared_redis_url, start_redis};
use tokio::{process::Command, time::Instant};

/// `dlock run` of `script` under a 6 s lease renewed every second, 2 s of grace.
fn short_lease_run(url: &str, key: &str, script: &str) -> tokio::process::Child {
    dlock(url)
        .args([
            "run",
            "--ttl",
            "6s",
            "--renew-every",
            "1s",
            "--grace",
            "2s",
            key,
            "-c",
            script,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_64() {
    let url = "redis://127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (&["run", "k"], "no command"),
        (
            &["run", "--ttl", "0", "k", "--", "true"],
            "--ttl must be more than 0",
        ),
        (
            &["run", "--ttl", "ten", "k", "--", "true"],
            "is not a duration",
        ),
        (
            &["run", "--ttl", "6s", "--grace", "5s", "k", "--", "true"],
            "must be less than",
        ),
        // Fits the TTL, but not with the drift and a round trip: every run would
        // be stopped before its first renewal.
        (
            &[
                "run",
                "--ttl",
                "10s",
                "--renew-every",
                "5s",
                "--grace",
                "4.9s",
                "k",
                "--",
                "true",
            ],
            "must be less than",
        ),
        (
            &["run", "--url", "memory://", "k", "--", "true"],
            "memory://",
        ),
        (
            &["run", "--url", "foo://x", "k", "--", "true"],
            "unknown scheme",
        ),
        (
            &["run", "--url", "redis://[::1", "k", "--", "true"],
            "invalid URL",
        ),
        (
            &["run", "-c", "true", "k", "--", "true"],
            "cannot be used with",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
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
    let out = output(
        Command::new(DLOCK)
            .args(["run", "k", "--", "true"])
            .env_remove("DLOCK_URL"),
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("DLOCK_URL"), "{}", stderr(&out));
    // Unreachable is not a usage error.
    let out = output(dlock(url).args(["run", "k", "--", "true"])).await;
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_environment_pass_through() {
    let url = shared_redis_url().await;
    let key = new_key();
    let out = output(
        dlock(&url)
            // Inherited values of an outer lock are replaced; DLOCK_URL passes through.
            .env("DLOCK_FENCE", "999")
            .env("DLOCK_KEY", "outer")
            .args(["run", &key, "--", "sh", "-c"])
            .arg("echo \"$DLOCK_KEY|$DLOCK_FENCE|$DLOCK_BACKEND|$DLOCK_URL\"; exit 7"),
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let line = stdout(&out);
    let fields: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(fields[0], key);
    assert!(fields[1].parse::<u64>().is_ok_and(|f| f > 999), "{line}");
    assert_eq!(fields[2], url);
    assert_eq!(fields[3], url);

    // A shell string with -c, and a child killed by a signal: 128+N.
    let out = output(dlock(&url).args(["run", &key, "-c", "kill -KILL $$"])).await;
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_127_and_frees_the_lock_at_once() {
    let url = shared_redis_url().await;
    let key = new_key();
    let out = output(dlock(&url).args(["run", &key, "--", "dlock-no-such-command"])).await;
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("command not found"),
        "{}",
        stderr(&out)
    );
    let out = output(dlock(&url).args(["run", &key, "--", "/etc/hostname"])).await;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let lock = RedisLock::connect(&url).await.expect("connect");
    let lease = lock
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .expect("try_acquire");
    assert!(lease.is_some(), "the lock was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_on_one_key_are_serialized() {
    let url = shared_redis_url().await;
    let key = new_key();
    let log = scratch("serialized");
    let script = format!(
        "echo start >> {log}; sleep 0.5; echo end >> {log}",
        log = log.display()
    );
    let mut first = dlock(&url);
    first.args(["run", &key, "-c", &script]);
    let mut second = dlock(&url);
    second.args(["run", &key, "-c", &script]);
    let (a, b) = tokio::join!(output(&mut first), output(&mut second));
    assert!(
        a.status.success() && b.status.success(),
        "{} {}",
        stderr(&a),
        stderr(&b)
    );
    let text = std::fs::read_to_string(&log).expect("the log");
    assert_eq!(text, "start\nend\nstart\nend\n", "the runs overlapped");
    let _ = std::fs::remove_file(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lock_is_the_conflict_code() {
    let url = shared_redis_url().await;
    let key = new_key();
    let lock = RedisLock::connect(&url).await.expect("connect");
    let mut held = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .expect("try_acquire")
        .expect("free");
    let out = output(dlock(&url).args(["run", "-n", &key, "--", "true"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is held"), "{}", stderr(&out));
    let out = output(dlock(&url).args(["run", "-n", "-E", "9", &key, "--", "true"])).await;
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let out = output(dlock(&url).args(["run", "-w", "0", &key, "--", "true"])).await;
    assert_eq!(out.status.code(), Some(1), "-w 0 is -n: {}", stderr(&out));
    let started = Instant::now();
    let out = output(dlock(&url).args(["run", "-w", "1s", &key, "--", "true"])).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let progress = format!("waiting for `{key}` (held by {})", held.owner());
    assert!(
        stderr(&out).contains(&progress),
        "no progress line naming the holder: {}",
        stderr(&out)
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    held.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_command_and_interrupt_a_wait() {
    let url = shared_redis_url().await;
    let key = new_key();
    let ready = scratch("signals");
    let script = format!(
        "trap 'echo got-term; exit 3' TERM; echo up > {}; sleep 30 & wait",
        ready.display()
    );
    let running = dlock(&url)
        .args(["run", &key, "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_file(&ready).await;
    signal(running.id(), rustix::process::Signal::TERM);
    let out = exited(running).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "got-term");

    // While waiting: dlock exits with 128+N, and leaves no place behind.
    let url = shared_etcd_url().await;
    let etcd = dlock::connect(&url).await.expect("connect");
    let mut held = etcd
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .expect("try_acquire")
        .expect("free");
    let waiting = dlock(&url)
        .args(["run", "--ttl", "30s", &key, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(waiting.id(), rustix::process::Signal::INT);
    let out = exited(waiting).await;
    assert_eq!(out.status.code(), Some(128 + 2), "{}", stderr(&out));
    held.release().await.expect("release");
    let next = etcd
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .expect("try_acquire");
    assert!(
        next.is_some(),
        "the interrupted waiter's place blocks the line"
    );
    let _ = std::fs::remove_file(ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_locks_show_their_own_key() {
    let url = shared_redis_url().await;
    let (outer, inner) = (new_key(), new_key());
    let out = output(
        dlock(&url)
            .args(["run", &outer, "--", DLOCK, "run", &inner, "--", "sh", "-c"])
            .arg("echo $DLOCK_KEY"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), inner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_stops_the_whole_group() {
    let url = shared_redis_url().await;
    let key = new_key();
    let pids = scratch("deleted");
    // The shell ignores SIGTERM, so only SIGKILL stops it; its background sleep
    // is the grandchild that must die too.
    let script = format!(
        "trap '' TERM; sleep 60 & echo $! > {p}; while true; do sleep 1; done",
        p = pids.display()
    );
    let running = short_lease_run(&url, &key, &script);
    let grandchild = wait_for_file(&pids).await;
    let lock = RedisLock::connect(&url).await.expect("connect");
    assert!(lock.force_release(&key).await.expect("delete"));
    let deleted = Instant::now();
    let out = exited(running).await;
    let took = deleted.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        is_dead(&grandchild),
        "the command's background process outlived the lease"
    );
    // Noticed at the next renewal (1 s), then SIGTERM, then SIGKILL half the grace later.
    assert!(
        took < Duration::from_secs(4),
        "stopped {took:?} after the deletion"
    );
    assert!(stderr(&out).contains("SIGKILL"), "{}", stderr(&out));
    let _ = std::fs::remove_file(pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_stops_the_group_before_the_lease_expires() {
    let server = start_redis(RedisOptions::default()).await;
    let url = format!("redis://127.0.0.1:{}", server.port());
    let key = new_key();
    let (pids, script) = sleeper_script("frozen");
    let ttl = Duration::from_secs(6);
    let running = short_lease_run(&url, &key, &script);
    let grandchild = wait_for_file(&pids).await;
    // No renewal can succeed from here on: the lease is valid until at most one
    // TTL after now.
    server.pause().await;
    let paused = Instant::now();
    wait_dead(&grandchild, PATIENCE, "the command was never stopped").await;
    let stopped_after = paused.elapsed();
    let out = exited(running).await;
    server.unpause().await;
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    // At most one TTL, less the grace, before SIGTERM: dead before the lease ends.
    assert!(
        stopped_after < ttl,
        "the command was stopped {stopped_after:?} after the freeze, past the {ttl:?} lease"
    );
    assert!(
        stopped_after >= Duration::from_secs(2),
        "stopped too early: {stopped_after:?}"
    );
    let _ = std::fs::remove_file(pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_dlock_kills_the_command() {
    let url = shared_redis_url().await;
    let key = new_key();
    let (pids, script) = sleeper_script("killed");
    let mut running = dlock(&url)
        .args(["run", &key, "-c", &script])
        .spawn()
        .expect("spawn");
    let grandchild = wait_for_file(&pids).await;
    running.start_kill().expect("SIGKILL dlock");
    let _ = running.wait().await;
    wait_dead(
        &grandchild,
        Duration::from_secs(5),
        "the command outlived a SIGKILLed dlock",
    )
    .await;
    let _ = std::fs::remove_file(pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_go_to_a_textfile_at_exit() {
    let url = shared_redis_url().await;
    let key = new_key();
    let textfile = scratch("metrics.prom");
    let path = textfile.to_string_lossy().into_owned();
    let out =
        output(dlock(&url).args(["run", "--metrics-textfile", &path, &key, "--", "true"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&textfile).expect("the textfile");
    for line in [
        "# TYPE dlock_acquire_total counter",
        "dlock_acquire_total{backend=\"redis\",outcome=\"acquired\"} 1",
        "dlock_release_total{backend=\"redis\",outcome=\"released\"} 1",
        "dlock_held{backend=\"redis\"} 0",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains(&key), "the key leaked into the metrics");
    let _ = std::fs::remove_file(textfile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_command_leaves_running_dies_with_it() {
    let url = shared_redis_url().await;
    let key = new_key();
    let pids = scratch("leftover");
    // The shell exits at once, leaving a background job in the group.
    let script = format!("sleep 60 & echo $! > {p}", p = pids.display());
    let out = output(dlock(&url).args(["run", &key, "-c", &script])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let leftover = wait_for_file(&pids).await;
    wait_dead(
        &leftover,
        Duration::from_secs(5),
        "a background job outlived the lock",
    )
    .await;
    let _ = std::fs::remove_file(pids);
}

/// Without `--ttl`, a backend with one fixed TTL (etcd in session mode) gets that
/// one, instead of the refusal a 30 s TTL would meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_ttl_fits_a_session() {
    let url = format!("{}/?session=10", shared_etcd_url().await);
    let key = new_key();
    let out = output(dlock(&url).args(["run", &key, "--", "sh", "-c", "echo $DLOCK_KEY"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), key);
    // An explicit TTL is never changed: refused, naming the session's.
    let out = output(dlock(&url).args(["run", "--ttl", "30s", &key, "--", "true"])).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("maximum of 10s"), "{}", stderr(&out));
}
