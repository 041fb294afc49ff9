//! Stale writes stopped by fencing tokens.
//!
//! Three workers process the same order. Workers 1 and 2 each take the lock and
//! then stall past its TTL (a GC pause, a slow disk); each loses the lock while
//! stalled. Worker 3 takes it with token 3 and writes. When workers 1 and 2 wake,
//! they still believe they hold the lock and write, but the fence gate refuses
//! their older tokens.
//!
//! ```text
//! cargo run --example fencing                                     # in-process
//! cargo run --example fencing --features redis -- redis://127.0.0.1:6379
//! ```
//!
//! Against Redis the lock and the gate both live in Redis (`RedisFenceGate`, one Lua
//! script), and tokens start from the server clock rather than 1.

use std::{sync::Arc, time::Duration};

use dlock::{Acquire, Admission, DynLock, FenceGate, FenceToken, LockExt, MemoryFenceGate};

pub(crate) const ORDER: &str = "order:123";
const TTL: Duration = Duration::from_millis(300);

/// What one worker saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) worker: u32,
    pub(crate) token: FenceToken,
    pub(crate) admission: Admission,
}

/// Takes the lock, stalls for `stall`, then writes through the gate.
async fn worker(
    n: u32,
    locks: DynLock,
    gate: Arc<dyn FenceGate>,
    start_after: Duration,
    stall: Duration,
) -> Result<Outcome, dlock::Error> {
    tokio::time::sleep(start_after).await;
    let lease = locks
        .acquire(ORDER, Acquire::ttl(TTL).wait(Duration::from_secs(10)))
        .await?;
    let token = lease.fence();
    println!("[Worker {n}] acquired the lock with token {token}");
    // The stall: no keep-alive, so the lease runs out meanwhile.
    tokio::time::sleep(stall).await;
    let value = format!("processed by worker {n}");
    let admission = gate.write(ORDER, token, value.as_bytes()).await?;
    // Leave the (long expired) lease; dropping it cannot disturb a newer holder.
    drop(lease);
    Ok(Outcome {
        worker: n,
        token,
        admission,
    })
}

/// Runs the three workers; returns their outcomes in worker order.
pub(crate) async fn run(
    locks: DynLock,
    gate: Arc<dyn FenceGate>,
) -> Result<Vec<Outcome>, dlock::Error> {
    let ms = Duration::from_millis;
    // Worker 1 holds from 0 ms, worker 2 from its expiry (~300 ms), worker 3 from
    // worker 2's expiry (~600 ms) and writes at once; 1 and 2 wake at 1000/1100 ms.
    let workers = [
        tokio::spawn(worker(1, locks.clone(), gate.clone(), ms(0), ms(1000))),
        tokio::spawn(worker(2, locks.clone(), gate.clone(), ms(50), ms(800))),
        tokio::spawn(worker(3, locks.clone(), gate.clone(), ms(100), ms(0))),
    ];
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.push(w.await.expect("worker panicked")?);
    }
    Ok(outcomes)
}

/// The lock and its gate for a URL: both in memory, or both in Redis.
pub(crate) async fn backend(url: &str) -> Result<(DynLock, Arc<dyn FenceGate>), dlock::Error> {
    #[cfg(feature = "redis")]
    if url.starts_with("redis") {
        let locks = dlock::RedisLock::connect(url).await?;
        let gate = dlock::RedisFenceGate::new(&locks);
        return Ok((Arc::new(locks), Arc::new(gate)));
    }
    Ok((dlock::connect(url).await?, Arc::new(MemoryFenceGate::new())))
}

#[allow(dead_code)] // tests include this file as a module and call `run`
#[tokio::main]
async fn main() -> Result<(), dlock::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://fencing-demo".into());
    let (locks, gate) = backend(&url).await?;
    let outcomes = run(locks, gate.clone()).await?;
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
    if let Some((token, value)) = gate.read(ORDER).await? {
        println!(
            "\nstored: {:?} (token {token})",
            String::from_utf8_lossy(&value)
        );
    }
    Ok(())
}
