//! The lock metrics, read back through metrics-util's debugging recorder. The
//! in-process backend answers without awaiting, so each case runs synchronously
//! under a recorder local to the test's thread.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use dlock_core::{Acquire, LockExt, metrics::LEASE_LOST_TOTAL};
use dlock_memory::MemoryLock;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Polls a future that completes without waiting.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-process backend waited"),
    }
}

fn counter(recorder: &DebuggingRecorder, name: &str) -> u64 {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == name)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// A lease that ran out without keep-alive and was dropped unreleased still counts
/// as lost, as does one released too late; a lease released in time does not.
#[test]
fn leases_that_expire_unextended_count_as_lost() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        let lock = MemoryLock::new();
        let short = Acquire::ttl(Duration::from_millis(5));
        let mut in_time =
            now(lock.acquire("in-time", Acquire::ttl(Duration::from_secs(5)))).expect("acquire");
        now(in_time.release()).expect("release");
        let dropped = now(lock.acquire("dropped", short)).expect("acquire");
        let mut late = now(lock.acquire("late", short)).expect("acquire");
        std::thread::sleep(Duration::from_millis(20));
        drop(dropped);
        assert!(now(late.release()).is_err(), "a late release succeeded");
    });
    assert_eq!(counter(&recorder, LEASE_LOST_TOTAL), 2);
}
