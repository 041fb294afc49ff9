//! The demos against real servers: the same code as on the in-process backend,
//! chosen by URL.

#[allow(dead_code)]
#[path = "../../examples/payment_race.rs"]
mod payment_race;

#[allow(dead_code)]
#[path = "../../examples/fencing.rs"]
mod fencing;

use std::sync::Arc;

use dlock::{Admission, FenceGate, RedisFenceGate, RedisLock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_race_loses_no_update_with_a_redis_lock() {
    let url = dlock_testkit::shared_redis_url().await;
    let locks = dlock::connect(&url).await.expect("connect");
    let locked = payment_race::with_lock(locks)
        .await
        .expect("locked run failed");
    assert_eq!(locked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stalled_workers_on_redis() {
    let url = dlock_testkit::shared_redis_url().await;
    let locks = RedisLock::connect(&url).await.expect("connect");
    let gate: Arc<dyn FenceGate> = Arc::new(RedisFenceGate::new(&locks));
    let outcomes = fencing::run(Arc::new(locks), gate.clone())
        .await
        .expect("run failed");
    let tokens: Vec<u64> = outcomes.iter().map(|o| o.token.get()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{outcomes:?}");
    let highest = outcomes[2].token;
    assert_eq!(outcomes[0].admission, Admission::Stale { highest });
    assert_eq!(outcomes[1].admission, Admission::Stale { highest });
    assert_eq!(outcomes[2].admission, Admission::Accepted);
    let (token, _) = gate
        .read(fencing::ORDER)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(token, highest);
}
