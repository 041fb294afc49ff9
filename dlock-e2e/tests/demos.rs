//! The demos against real servers: the same code as on the in-process backend,
//! chosen by URL, with the lock and its fence gate from one `connect_with_gate`.

#[allow(dead_code)]
#[path = "../../examples/payment_race.rs"]
mod payment_race;

#[allow(dead_code)]
#[path = "../../examples/fencing.rs"]
mod fencing;

#[allow(dead_code)]
#[path = "../../examples/keep_alive.rs"]
mod keep_alive;

#[allow(dead_code)]
#[path = "../../examples/swap_backend.rs"]
mod swap_backend;

#[allow(dead_code)]
#[path = "../../examples/leader.rs"]
mod leader;

/// The leader demo: three candidates in turn, tokens growing, the frozen leader's
/// late write refused, and the observer seeing every leader.
async fn leader_on(url: &str) {
    let (terms, seen) = leader::run(url).await.expect("run failed");
    leader::check(&terms).unwrap_or_else(|wrong| panic!("{url}: {wrong}"));
    let expected: Vec<String> = terms
        .iter()
        .map(|t| format!("candidate-{}", t.candidate))
        .collect();
    assert_eq!(seen, expected, "{url}: the observer missed a leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_in_process() {
    leader_on("memory://leader-demo-test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_on_redis() {
    leader_on(&dlock_testkit::shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_on_etcd() {
    leader_on(&dlock_testkit::shared_etcd_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_on_redlock() {
    leader_on(&dlock_testkit::shared_redlock_url(3).await).await;
}

async fn keep_alive_on(url: &str) {
    let lock = dlock::connect(url).await.expect("connect");
    let key = format!("dlock-demo-keep-alive:{}", dlock::OwnerId::random());
    let (long, failing, lost) = keep_alive::run(lock, &key).await.expect("run failed");
    assert_eq!(long, Ok(12), "{url}");
    assert_eq!(failing, Err(keep_alive::StepFailed(3)), "{url}");
    assert!(
        matches!(
            lost,
            dlock::Error::LeaseLost {
                reason: dlock::LossReason::Expired,
                ..
            }
        ),
        "{url}: {lost:?}"
    );
}

async fn swap_backend_on(url: &str) {
    let (lock, gate) = swap_backend::open(url).await.expect("connect");
    let charges = swap_backend::run(lock, gate, 10).await.expect("run failed");
    assert_eq!(charges, vec![1; 10], "{url}: not every order charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_on_redis() {
    keep_alive_on(&dlock_testkit::shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_on_etcd() {
    keep_alive_on(&dlock_testkit::shared_etcd_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_backend_on_every_backend() {
    for url in [
        "memory://swap-backend-test".to_owned(),
        dlock_testkit::shared_redis_url().await,
        dlock_testkit::shared_etcd_url().await,
        dlock_testkit::shared_redlock_url(3).await,
    ] {
        swap_backend_on(&url).await;
    }
}

async fn payment_race_on(url: &str) {
    let (locks, gate) = dlock::connect_with_gate(url).await.expect("connect");
    let locked = payment_race::with_lock(locks.clone())
        .await
        .expect("locked run failed");
    assert_eq!(locked, 0, "{url}: the lock let a debit through twice");
    let stalled =
        payment_race::with_lock_and_a_stall(locks.clone(), payment_race::Ledger::direct())
            .await
            .expect("stalled run failed");
    assert!(
        stalled > 0,
        "{url}: the stalled holder's write lost nothing"
    );
    let fenced = payment_race::with_lock_and_a_stall(locks, payment_race::Ledger::fenced(gate))
        .await
        .expect("fenced run failed");
    assert_eq!(fenced, 0, "{url}: the gate let a stale write through");
}

async fn fencing_on(url: &str) {
    let (locks, gate) = dlock::connect_with_gate(url).await.expect("connect");
    let order = fencing::order();
    let outcomes = fencing::run(locks, gate.clone(), &order)
        .await
        .expect("run failed");
    fencing::check(&outcomes, &gate, &order)
        .await
        .unwrap_or_else(|wrong| panic!("{url}: {wrong}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_race_on_redis() {
    payment_race_on(&dlock_testkit::shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_race_on_etcd() {
    payment_race_on(&dlock_testkit::shared_etcd_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stalled_workers_on_redis() {
    fencing_on(&dlock_testkit::shared_redis_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stalled_workers_on_etcd() {
    fencing_on(&dlock_testkit::shared_etcd_url().await).await;
}
