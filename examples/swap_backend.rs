//! One piece of application code, with its fencing, on every backend: only the URL
//! changes.
//!
//! ```text
//! cargo run --example swap_backend                                  # memory://
//! cargo run --example swap_backend --features full -- redis://127.0.0.1:6379 \
//!     etcd://127.0.0.1:2379 redlock://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
//! ```
//!
//! Four workers race to charge the same orders. Each charge runs under the order's
//! lock, and the balance is changed through the fence gate with the lease's token,
//! so a holder that stalls past its lease cannot write. Every order is charged
//! exactly once, whichever backend the URL names.

use std::{sync::Arc, time::Duration};

use dlock::{Acquire, DynFenceGate, DynLock, FenceGateExt, LockExt};

/// The application: charge `order` once. `Ok(true)` if this call charged it.
pub(crate) async fn charge_once(
    lock: &DynLock,
    gate: &DynFenceGate,
    order: &str,
    amount: u64,
) -> Result<bool, dlock::Error> {
    let gate = Arc::clone(gate);
    let (resource, order) = (format!("charged:{order}"), order.to_owned());
    let ttl = lock.capabilities().fit_ttl(Duration::from_secs(5));
    lock.with_lock(&order, Acquire::ttl(ttl), move |lease| async move {
        let mut charged_now = false;
        let admission = gate
            .update(&resource, &lease, |seen| match seen {
                // Already charged: write the same back.
                Some(done) => done.to_vec(),
                None => {
                    charged_now = true;
                    amount.to_string().into_bytes()
                }
            })
            .await?;
        // A stale token means another holder got in first: nothing was written.
        Ok::<_, dlock::Error>(charged_now && admission.is_accepted())
    })
    .await?
}

/// Four workers charge `orders` orders concurrently; returns how many charges
/// each order got (1 each, on every backend).
pub(crate) async fn run(
    lock: DynLock,
    gate: DynFenceGate,
    orders: usize,
) -> Result<Vec<usize>, dlock::Error> {
    let run_id = dlock::OwnerId::random();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (lock, gate) = (lock.clone(), gate.clone());
        workers.push(tokio::spawn(async move {
            let mut charged = Vec::new();
            for n in 0..orders {
                let order = format!("order:{run_id}:{n}");
                if charge_once(&lock, &gate, &order, 100).await? {
                    charged.push(n);
                }
            }
            Ok::<_, dlock::Error>(charged)
        }));
    }
    let mut charges = vec![0; orders];
    for worker in workers {
        for n in worker.await.expect("a worker panicked")? {
            charges[n] += 1;
        }
    }
    Ok(charges)
}

/// The lock and gate for `url`. Redlock keeps no resource data of its own: its
/// tokens go to your store's fence column; here an in-process gate stands in.
pub(crate) async fn open(url: &str) -> Result<(DynLock, DynFenceGate), dlock::Error> {
    let (lock, gate) = dlock::connect_with_gate(url).await?;
    if lock.capabilities().name == "redlock" {
        return Ok((lock, Arc::new(dlock::MemoryFenceGate::new())));
    }
    Ok((lock, gate))
}

#[allow(dead_code)] // tests include this file as a module and call `run`
#[tokio::main]
async fn main() -> Result<std::process::ExitCode, dlock::Error> {
    let mut urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        urls.push("memory://swap-backend-demo".into());
    }
    let mut all_once = true;
    for url in &urls {
        let (lock, gate) = open(url).await?;
        let charges = run(lock, gate, 10).await?;
        let once = charges.iter().all(|&c| c == 1);
        all_once &= once;
        println!(
            "{:<8} {} orders, charges per order {:?}: {}",
            dlock::redact_url(url).split("://").next().unwrap_or("?"),
            charges.len(),
            charges,
            if once { "each exactly once" } else { "WRONG" }
        );
    }
    Ok(if all_once {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
