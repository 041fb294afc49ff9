//! The demos end as the seed document says they do.

#[allow(dead_code)]
#[path = "../examples/payment_race.rs"]
mod payment_race;

#[allow(dead_code)]
#[path = "../examples/fencing.rs"]
mod fencing;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_race_a_stalled_holder_loses_updates_unless_the_gate_fences_its_read() {
    let (locks, gate) = dlock::connect_with_gate("memory://payment-race-stall-test")
        .await
        .expect("connect");
    let direct = payment_race::Ledger::direct();
    let stalled = payment_race::with_lock_and_a_stall(locks.clone(), direct)
        .await
        .expect("stalled run failed");
    assert!(stalled > 0, "the stalled holder's write lost nothing");
    let fenced = payment_race::with_lock_and_a_stall(locks, payment_race::Ledger::fenced(gate))
        .await
        .expect("fenced run failed");
    assert_eq!(fenced, 0);
}

/// Runs the fencing demo and checks its outcome; returns the tokens.
async fn fencing_outcome(locks: dlock::DynLock, gate: dlock::DynFenceGate) -> Vec<u64> {
    let order = fencing::order();
    let outcomes = fencing::run(locks, gate.clone(), &order)
        .await
        .expect("run failed");
    fencing::check(&outcomes, &gate, &order)
        .await
        .unwrap_or_else(|wrong| panic!("{wrong}"));
    outcomes.iter().map(|o| o.token.get()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stalled_workers() {
    let (locks, gate) = dlock::connect_with_gate("memory://fencing-test")
        .await
        .expect("connect");
    let tokens = fencing_outcome(locks, gate).await;
    // A fresh in-process table counts from 1, as in the seed document.
    assert_eq!(tokens, [1, 2, 3]);
}
