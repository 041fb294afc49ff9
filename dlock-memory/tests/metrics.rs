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

type Entry = (
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

struct Snapshot(Vec<Entry>);

impl Snapshot {
    /// Every value of a metric, by its labels rendered `k=v,...`.
    fn values(&self, name: &str) -> Vec<(String, &DebugValue)> {
        self.0
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .map(|(key, _, _, value)| {
                let mut labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                labels.sort();
                (labels.join(","), value)
            })
            .collect()
    }
}

/// The held gauge follows the leases; releases and losses carry their outcome
/// and reason; a named group becomes a label; no label ever carries the key.
#[test]
fn held_gauge_release_outcomes_and_groups() {
    use dlock_core::metrics::{HELD, RELEASE_TOTAL};
    let recorder = DebuggingRecorder::new();
    let secret_key = "customer-4711-order";
    metrics::with_local_recorder(&recorder, || {
        let lock = MemoryLock::new();
        let opts = Acquire::ttl(Duration::from_secs(5)).group("payments");
        let mut a = now(lock.acquire(secret_key, opts)).expect("acquire");
        let b =
            now(lock.acquire("other", Acquire::ttl(Duration::from_millis(5)))).expect("acquire");
        now(a.release()).expect("release");
        std::thread::sleep(Duration::from_millis(20));
        drop(b);
    });
    // One snapshot only: taking one resets what it read.
    let snapshot = Snapshot(recorder.snapshotter().snapshot().into_vec());
    let held = snapshot.values(HELD);
    assert_eq!(held.len(), 2, "one gauge per label set: {held:?}");
    assert!(
        held.iter()
            .all(|(_, v)| matches!(v, DebugValue::Gauge(g) if g.into_inner() == 0.0)),
        "leases left on the gauge: {held:?}"
    );
    let releases = snapshot.values(RELEASE_TOTAL);
    assert!(
        releases.iter().any(
            |(l, v)| l == "backend=memory,group=payments,outcome=released"
                && matches!(v, DebugValue::Counter(1))
        ),
        "{releases:?}"
    );
    assert!(
        releases
            .iter()
            .any(|(l, _)| l == "backend=memory,outcome=background"),
        "{releases:?}"
    );
    let lost = snapshot.values(LEASE_LOST_TOTAL);
    assert!(
        lost.iter()
            .any(|(l, _)| l == "backend=memory,reason=expired"),
        "{lost:?}"
    );
    for (key, ..) in &snapshot.0 {
        for label in key.key().labels() {
            assert!(
                !label.value().contains("4711"),
                "the key leaked into {key:?}"
            );
        }
    }
}
