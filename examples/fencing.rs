//! Stale writes stopped by fencing tokens.
//!
//! Three workers process the same order. Workers 1 and 2 each take the lock, read
//! the order through the fence gate, and then stall past the lock's TTL (a GC pause,
//! a slow disk); each loses the lock while stalled. Worker 3 takes it with a newer
//! token, reads and writes. When workers 1 and 2 wake, they still believe they hold
//! the lock and write what they computed from their old read, but the fence gate
//! refuses their older tokens.
//!
//! ```text
//! cargo run --example fencing                                     # in-process
//! cargo run --example fencing --features redis -- redis://127.0.0.1:6379
//! cargo run --example fencing --features etcd -- etcd://127.0.0.1:2379
//! ```
//!
//! The lock and the gate come from one URL (`dlock::connect_with_gate`): against
//! Redis or etcd both live there, and tokens start from the server clock (Redis) or
//! the cluster's revision (etcd) rather than 1. The read is a `read_for_update`: it
//! raises the gate to the reader's token, so the stalled workers' writes are refused
//! even though each of their tokens was the highest when they read. Fencing only
//! the writes would let worker 1's write through (its token beat the last write),
//! based on a read worker 2 had already superseded.

use std::time::Duration;

use dlock::{Acquire, Admission, DynFenceGate, DynLock, FenceToken, FencedRead, LockExt, OwnerId};

/// The resource, fresh per run: a gate on a server remembers earlier runs.
pub(crate) fn order() -> String {
    format!("order:{}", OwnerId::random())
}

/// What one worker saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) worker: u32,
    pub(crate) token: FenceToken,
    pub(crate) admission: Admission,
}

/// Takes the lock, reads the order for update, stalls for `stall` TTLs, then
/// writes through the gate.
async fn worker(
    n: u32,
    locks: DynLock,
    gate: DynFenceGate,
    order: String,
    start_after: Duration,
    stall: f64,
) -> Result<Outcome, dlock::Error> {
    let ttl = locks.capabilities().fit_ttl(Duration::from_millis(300));
    tokio::time::sleep(start_after).await;
    let lease = locks
        .acquire(&order, Acquire::ttl(ttl).wait(ttl * 10))
        .await?;
    let token = lease.fence();
    println!("[Worker {n}] acquired the lock with token {token}");
    let state = match gate.read_for_update(&order, token).await? {
        FencedRead::Current(state) => state,
        FencedRead::Stale { highest } => {
            return Ok(Outcome {
                worker: n,
                token,
                admission: Admission::Stale { highest },
            });
        }
    };
    let seen = state.map_or("new".into(), |s| String::from_utf8_lossy(&s).into_owned());
    println!("[Worker {n}] read the order: {seen}");
    // The stall: no keep-alive, so the lease runs out meanwhile.
    tokio::time::sleep(ttl.mul_f64(stall)).await;
    let value = format!("processed by worker {n}");
    let admission = gate.write(&order, token, value.as_bytes()).await?;
    // Leave the (long expired) lease; dropping it cannot disturb a newer holder.
    drop(lease);
    Ok(Outcome {
        worker: n,
        token,
        admission,
    })
}

/// Runs the three workers on `order`; returns their outcomes in worker order.
pub(crate) async fn run(
    locks: DynLock,
    gate: DynFenceGate,
    order: &str,
) -> Result<Vec<Outcome>, dlock::Error> {
    let ms = Duration::from_millis;
    // Worker 1 holds from the start, worker 2 from its expiry (one TTL), worker 3
    // from worker 2's expiry (two TTLs) and writes at once; 1 and 2 wake after 3.3
    // and 2.7 TTLs, when worker 3 is done.
    let workers = [
        tokio::spawn(worker(
            1,
            locks.clone(),
            gate.clone(),
            order.into(),
            ms(0),
            3.3,
        )),
        tokio::spawn(worker(
            2,
            locks.clone(),
            gate.clone(),
            order.into(),
            ms(50),
            2.7,
        )),
        tokio::spawn(worker(
            3,
            locks.clone(),
            gate.clone(),
            order.into(),
            ms(100),
            0.0,
        )),
    ];
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.push(w.await.expect("worker panicked")?);
    }
    Ok(outcomes)
}

/// Checks the seed document's outcome: workers 1 and 2 refused as stale, worker 3
/// stored, tokens in lock order, and the gate holding worker 3's write.
pub(crate) async fn check(
    outcomes: &[Outcome],
    gate: &DynFenceGate,
    order: &str,
) -> Result<(), String> {
    let tokens: Vec<FenceToken> = outcomes.iter().map(|o| o.token).collect();
    if !tokens.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!("tokens out of lock order: {outcomes:?}"));
    }
    let highest = outcomes[2].token;
    let expected = [
        Admission::Stale { highest },
        Admission::Stale { highest },
        Admission::Accepted,
    ];
    if outcomes.iter().map(|o| o.admission).ne(expected) {
        return Err(format!("unexpected admissions: {outcomes:?}"));
    }
    match gate.read(order).await {
        Ok(Some((token, value))) if token == highest && value == b"processed by worker 3" => Ok(()),
        other => Err(format!("the gate holds {other:?}")),
    }
}

#[allow(dead_code)] // tests include this file as a module and call `run`
#[tokio::main]
async fn main() -> Result<std::process::ExitCode, dlock::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://fencing-demo".into());
    let (locks, gate) = dlock::connect_with_gate(&url).await?;
    let order = order();
    let outcomes = run(locks, gate.clone(), &order).await?;
    println!();
    for o in &outcomes {
        match o.admission {
            Admission::Stale { highest } => println!(
                "[Worker {}] ✗ Rejected with token {} (stale: the resource has seen {highest})",
                o.worker, o.token
            ),
            Admission::Accepted => {
                println!("[Worker {}] ✓ Success with token {}", o.worker, o.token)
            }
        }
    }
    if let Some((token, value)) = gate.read(&order).await? {
        println!(
            "\nstored: {:?} (token {token})",
            String::from_utf8_lossy(&value)
        );
    }
    Ok(match check(&outcomes, &gate, &order).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(wrong) => {
            eprintln!("WRONG: {wrong}");
            std::process::ExitCode::FAILURE
        }
    })
}
