//! Helpers for the tests that run the `dlock` binary.
#![allow(dead_code, unreachable_pub)] // each test file uses some of them

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    time::Duration,
};

use dlock::OwnerId;
use tokio::{process::Command, time::Instant};

pub const DLOCK: &str = env!("CARGO_BIN_EXE_dlock");
/// A limit for any one `dlock run` in these tests.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn dlock(url: &str) -> Command {
    let mut command = Command::new(DLOCK);
    command
        .env("DLOCK_URL", url)
        .env_remove("DLOCK_KEY")
        .env_remove("DLOCK_FENCE")
        .env_remove("DLOCK_BACKEND")
        .env_remove("DLOCK_ELECTION")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

pub async fn output(command: &mut Command) -> Output {
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("dlock did not finish")
        .expect("run dlock")
}

pub fn new_key() -> String {
    format!("dlock-cli:{}", OwnerId::random())
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch file for one test.
pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dlock-cli-{name}-{}", OwnerId::random()))
}

/// A shell script that starts `sleep 60` in the background, writes its pid to a
/// scratch file (returned) and waits: the grandchild that must die with the command.
pub fn sleeper_script(name: &str) -> (PathBuf, String) {
    let pids = scratch(name);
    let script = format!("sleep 60 & echo $! > {p}; wait", p = pids.display());
    (pids, script)
}

/// Whether the process is gone (a zombie nobody reaped counts as gone).
pub fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits for a `dlock` child to exit and returns what it printed.
pub async fn exited(child: tokio::process::Child) -> Output {
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("dlock did not exit")
        .expect("wait")
}

/// Waits until `pid` is gone; fails with `what` after `limit`.
pub async fn wait_dead(pid: &str, limit: Duration, what: &str) {
    let started = Instant::now();
    while !is_dead(pid) {
        assert!(started.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_for_file(path: &PathBuf) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn signal(pid: Option<u32>, signal: rustix::process::Signal) {
    let pid = pid
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        .expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signal");
}
