//! Shutting down frees the locks, on every networked backend, in a real process:
//! a worker interrupted with SIGINT that calls `shutdown` frees its key at once;
//! one that only returns from `main` leaves the key held until its TTL (the drop's
//! background release dies with the runtime); and a worker interrupted while it
//! waits leaves no place in line behind.

use std::{process::Stdio, time::Duration};

use dlock::{Acquire, LockExt, OwnerId};
use dlock_testkit::{shared_etcd_url, shared_redis_url, shared_redlock_url};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    time::Instant,
};

/// Long enough that a key freed "at once" cannot have been freed by its TTL.
const TTL_SECS: u64 = 20;
/// How long a freed key may take to be granted to the next process, on a loaded
/// 2-core machine: far below the TTL.
const AT_ONCE: Duration = Duration::from_secs(3);
/// How long a worker may take to print what it is expected to print.
const PATIENCE: Duration = Duration::from_secs(30);

struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Worker {
    async fn start(url: &str, key: &str, mode: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dlock-e2e-worker"))
            .args([url, key, &TTL_SECS.to_string(), mode])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the worker");
        let stdout = child.stdout.take().expect("the worker's stdout");
        let mut worker = Worker {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        };
        worker.expect("ready").await;
        worker
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    async fn expect(&mut self, prefix: &str) -> String {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read the worker") {
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
            panic!(
                "the worker exited before `{prefix}`; it printed {:?}",
                self.seen
            )
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .unwrap_or_else(|_| panic!("no `{prefix}` from the worker within {PATIENCE:?}"))
    }

    fn interrupt(&self) {
        let pid = self.child.id().expect("the worker's pid");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
    }

    async fn exits_cleanly(mut self) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the worker did not exit after SIGINT")
            .expect("wait for the worker");
        assert!(status.success(), "the worker exited with {status}");
    }
}

fn new_key() -> String {
    format!("dlock-shutdown:{}", OwnerId::random())
}

fn ttl() -> Acquire {
    Acquire::ttl(Duration::from_secs(TTL_SECS))
}

async fn sigint_with_shutdown_frees_the_key_at_once(url: &str) {
    let key = new_key();
    let mut worker = Worker::start(url, &key, "shutdown").await;
    worker.expect("held").await;
    let other = dlock::connect(url).await.expect("connect");
    assert!(
        other
            .try_acquire(&key, Duration::from_secs(TTL_SECS))
            .await
            .expect("try_acquire")
            .is_none(),
        "{url}: the worker's key was free while it held it"
    );

    let interrupted = Instant::now();
    worker.interrupt();
    let mut lease = other
        .acquire(&key, ttl().wait(Duration::from_secs(TTL_SECS / 2)))
        .await
        .expect("the interrupted worker's key was not freed");
    let freed_after = interrupted.elapsed();
    eprintln!("{url}: the key was granted {freed_after:?} after SIGINT (TTL {TTL_SECS} s)");
    assert!(
        freed_after < AT_ONCE,
        "{url}: granted {freed_after:?} after SIGINT"
    );
    let lost = worker.expect("lost").await;
    assert_eq!(lost, "lost: Some(ShutDown)");
    let report = worker.expect("shutdown").await;
    assert!(report.contains(" 1 released"), "{report}");
    worker.exits_cleanly().await;
    lease.release().await.expect("release");
}

async fn returning_from_main_leaves_the_key_held(url: &str) {
    let key = new_key();
    let mut worker = Worker::start(url, &key, "return").await;
    worker.expect("held").await;
    worker.interrupt();
    worker.exits_cleanly().await;
    // The process is gone, and its dropped lease was never released.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = dlock::connect(url).await.expect("connect");
    assert!(
        other
            .try_acquire(&key, Duration::from_secs(TTL_SECS))
            .await
            .expect("try_acquire")
            .is_none(),
        "{url}: without shutdown the key was freed; update the docs"
    );
}

async fn sigint_while_waiting_leaves_no_place(url: &str) {
    let key = new_key();
    let holder = dlock::connect(url).await.expect("connect");
    let mut held = holder.acquire(&key, ttl()).await.expect("acquire");
    let mut worker = Worker::start(url, &key, "shutdown").await;
    // Let it take its place in line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.interrupt();
    let ended = worker.expect("ended").await;
    assert!(ended.contains("shut down"), "{ended}");
    let report = worker.expect("shutdown").await;
    assert!(
        report.contains(" 0 background operations unfinished"),
        "{report}"
    );
    worker.exits_cleanly().await;
    held.release().await.expect("release");
    let next = dlock::connect(url).await.expect("connect");
    let mut lease = next
        .try_acquire(&key, Duration::from_secs(TTL_SECS))
        .await
        .expect("try_acquire")
        .unwrap_or_else(|| {
            panic!("{url}: the interrupted waiter's place still blocks the line ({report})")
        });
    lease.release().await.expect("release");
}

macro_rules! on_every_backend {
    ($($backend:ident => $url:expr;)*) => {$(
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sigint_with_shutdown_frees_the_key_at_once() {
                super::sigint_with_shutdown_frees_the_key_at_once(&$url).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn returning_from_main_leaves_the_key_held() {
                super::returning_from_main_leaves_the_key_held(&$url).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sigint_while_waiting_leaves_no_place() {
                super::sigint_while_waiting_leaves_no_place(&$url).await;
            }
        }
    )*};
}

on_every_backend! {
    redis => shared_redis_url().await;
    etcd => shared_etcd_url().await;
    redlock => shared_redlock_url(3).await;
}
