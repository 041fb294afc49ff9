//! The checker in CI: each scenario for a few seconds against real servers, and
//! the checks shown able to fail on backends broken on purpose. The long runs and
//! the published table: `cargo run --release -p dlock-checker -- table`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock::{
    Admission, Attempt, AttemptRequest, Capabilities, Error, FenceGate, FenceToken, FencedRead,
    Lock, LockKey, MemoryFenceGate, MemoryLock, OwnerId,
};
use dlock_checker::scenario::{self, Backend, Fault, Plan, Row};

fn plan(backend: Backend, fault: Fault, seconds: u64) -> Plan {
    Plan {
        backend,
        fault,
        workers: 4,
        run: Duration::from_secs(seconds),
        worker_exe: env!("CARGO_BIN_EXE_dlock-checker").into(),
    }
}

/// What every row must show: the fault did something, no fenced update was lost,
/// tokens stayed unique and in order, and (unless the fault loses the server's
/// locks) the lock history fits a mutex.
fn assert_safe(row: &Row) {
    let r = &row.report;
    let name = format!("{} / {}", row.plan.backend.name(), row.plan.fault.name());
    println!("{name}: {r:?}");
    assert!(
        row.fault_took_effect,
        "{name}: the fault did nothing: {r:?}"
    );
    assert!(r.granted > 0, "{name}: nothing was granted");
    assert_eq!(r.lost_fenced, 0, "{name}: the fenced register lost updates");
    assert_eq!(
        r.fence_violations, 0,
        "{name}: tokens repeated or out of order"
    );
    // A server restarted empty forgets its locks: one Redis cannot help that.
    let forgets = matches!(
        row.plan.fault,
        Fault::ServerRestart | Fault::ServerRestartLate
    ) && row.plan.backend == Backend::Redis;
    if !forgets {
        assert_eq!(r.mutex_violations, 0, "{name}: two holders at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_with_a_holder_paused_past_its_ttl() {
    assert_safe(&scenario::run(plan(Backend::Memory, Fault::ClientPause, 4)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_a_worker_process_stopped_past_its_ttl() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::ClientPause, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_server_paused() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::ServerPause, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_server_killed_and_restarted() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::ServerRestart, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_server_restarted_after_more_than_the_ttl() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::ServerRestartLate, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_server_restarted_with_its_data() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::ServerRestartPersistent, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_link_delayed() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::LinkDelay, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_link_reset() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::LinkReset, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_link_blackholed() {
    assert_safe(&scenario::run(plan(Backend::Redis, Fault::Blackhole, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_a_worker_process_stopped_past_its_ttl() {
    assert_safe(&scenario::run(plan(Backend::Etcd, Fault::ClientPause, 10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_the_server_paused() {
    assert_safe(&scenario::run(plan(Backend::Etcd, Fault::ServerPause, 10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_the_link_blackholed() {
    assert_safe(&scenario::run(plan(Backend::Etcd, Fault::Blackhole, 10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_the_leader_of_three_killed() {
    assert_safe(&scenario::run(plan(Backend::Etcd, Fault::LeaderKill, 10)).await);
}

/// A lock broken on purpose: it grants every attempt, with increasing tokens.
#[derive(Clone, Default)]
struct GrantsEveryone {
    tokens: Arc<AtomicU64>,
}

#[async_trait]
impl Lock for GrantsEveryone {
    fn capabilities(&self) -> Capabilities {
        MemoryLock::new().capabilities()
    }
    async fn attempt(&self, _: AttemptRequest<'_>) -> Result<Attempt, Error> {
        Ok(Attempt::Acquired {
            fence: FenceToken(self.tokens.fetch_add(1, Ordering::SeqCst) + 1),
            valid_from: None,
        })
    }
    async fn extend(&self, _: &LockKey, _: &OwnerId, _: Duration) -> Result<(), Error> {
        Ok(())
    }
    async fn release(&self, _: &LockKey, _: &OwnerId) -> Result<bool, Error> {
        Ok(true)
    }
}

/// A gate broken on purpose: it fences writes but not reads.
#[derive(Default)]
struct FencesWritesOnly(MemoryFenceGate);

#[async_trait]
impl FenceGate for FencesWritesOnly {
    async fn write(&self, r: &str, t: FenceToken, v: &[u8]) -> Result<Admission, Error> {
        self.0.write(r, t, v).await
    }
    async fn read_for_update(&self, r: &str, _: FenceToken) -> Result<FencedRead, Error> {
        Ok(FencedRead::Current(self.0.read(r).await?.map(|(_, v)| v)))
    }
    async fn read(&self, r: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        self.0.read(r).await
    }
}

/// A lock that lets everyone in shows as mutex violations, overlaps and lost plain
/// updates, while the fenced register still loses nothing: the gate alone holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_lock_that_grants_twice() {
    let row = scenario::run_with(
        plan(Backend::Memory, Fault::ClientPause, 3),
        Arc::new(GrantsEveryone::default()),
        Arc::new(MemoryFenceGate::new()),
    )
    .await;
    let r = &row.report;
    println!("{r:?}");
    assert!(r.mutex_violations > 0, "{r:?}");
    assert!(r.overlaps > 0, "{r:?}");
    assert!(r.lost_plain > 0, "{r:?}");
    assert_eq!(r.lost_fenced, 0, "{r:?}");
}

/// Fencing only the writes loses updates even through the gate, and the checker
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_gate_that_fences_only_writes() {
    let row = scenario::run_with(
        plan(Backend::Memory, Fault::ClientPause, 3),
        Arc::new(GrantsEveryone::default()),
        Arc::new(FencesWritesOnly::default()),
    )
    .await;
    let r = &row.report;
    println!("{r:?}");
    assert!(r.lost_fenced > 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_with_a_worker_process_stopped_past_its_ttl() {
    assert_safe(&scenario::run(plan(Backend::Redlock, Fault::ClientPause, 6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_with_a_node_killed_and_restarted_empty() {
    let row = scenario::run(plan(Backend::Redlock, Fault::ServerRestart, 6)).await;
    assert_safe(&row);
    // With delayed restarts the restarted node cannot let a second holder in.
    assert_eq!(row.report.mutex_violations, 0);
}
