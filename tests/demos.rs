//! The demos end as the seed document says they do.

#[allow(dead_code)]
#[path = "../examples/payment_race.rs"]
mod payment_race;

#[allow(dead_code)]
#[path = "../examples/fencing.rs"]
mod fencing;

use std::sync::Arc;

use dlock::{Admission, FenceGate, MemoryFenceGate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_race_loses_updates_without_a_lock_and_none_with_one() {
    let unlocked = payment_race::without_lock().await;
    // Every debit read $1000 before any wrote: each wrote $900.
    assert_eq!(unlocked, 900);
    let locks = dlock::connect("memory://payment-race-test")
        .await
        .expect("connect");
    let locked = payment_race::with_lock(locks)
        .await
        .expect("locked run failed");
    assert_eq!(locked, 0);
}

/// Runs the fencing demo and checks the seed document's outcome: workers 1 and 2
/// rejected as stale, worker 3 stored, tokens in lock order. Returns the tokens.
async fn fencing_outcome(locks: dlock::DynLock, gate: Arc<dyn FenceGate>) -> Vec<u64> {
    let outcomes = fencing::run(locks, gate.clone()).await.expect("run failed");
    let tokens: Vec<u64> = outcomes.iter().map(|o| o.token.get()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{outcomes:?}");
    let highest = outcomes[2].token;
    assert_eq!(outcomes[0].admission, Admission::Stale { highest });
    assert_eq!(outcomes[1].admission, Admission::Stale { highest });
    assert_eq!(outcomes[2].admission, Admission::Accepted);
    let (token, value) = gate
        .read(fencing::ORDER)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (token, value.as_slice()),
        (highest, b"processed by worker 3".as_slice())
    );
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stalled_workers() {
    let locks = dlock::connect("memory://fencing-test")
        .await
        .expect("connect");
    let tokens = fencing_outcome(locks, Arc::new(MemoryFenceGate::new())).await;
    // A fresh in-process table counts from 1, as in the seed document.
    assert_eq!(tokens, [1, 2, 3]);
}
