//! Lost updates without a lock, and none with one.
//!
//! A balance of $1000 takes 10 concurrent debits of $100. Without a lock, every
//! debit reads the balance before any writes it back (a barrier makes the
//! interleaving certain), so all but one update is lost. With a lock, the debits
//! run one at a time and the balance ends at $0.
//!
//! ```text
//! cargo run --example payment_race                 # in-process backend
//! cargo run --example payment_race -- memory://    # any URL dlock::connect takes
//! ```
//!
//! Exits non-zero if the run with the lock ends anywhere but $0.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use dlock::{Acquire, DynLock, LockExt};
use tokio::sync::Barrier;

pub(crate) const START: u64 = 1000;
pub(crate) const DEBIT: u64 = 100;
pub(crate) const REQUESTS: usize = 10;

/// The shared account: stands in for a row every instance reads and writes.
#[derive(Clone, Default)]
pub(crate) struct Account(Arc<Mutex<u64>>);

impl Account {
    pub(crate) fn new(balance: u64) -> Self {
        Account(Arc::new(Mutex::new(balance)))
    }
    pub(crate) fn read(&self) -> u64 {
        *self.0.lock().expect("poisoned")
    }
    pub(crate) fn write(&self, balance: u64) {
        *self.0.lock().expect("poisoned") = balance;
    }
}

/// Read, check, write: the check-then-act race, with no lock.
pub(crate) async fn without_lock() -> u64 {
    let account = Account::new(START);
    let all_read = Arc::new(Barrier::new(REQUESTS));
    let debits: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (account, all_read) = (account.clone(), all_read.clone());
            tokio::spawn(async move {
                let current = account.read();
                all_read.wait().await; // every request has read before any writes
                if current >= DEBIT {
                    account.write(current - DEBIT);
                }
            })
        })
        .collect();
    for d in debits {
        d.await.expect("debit task panicked");
    }
    account.read()
}

/// The same debits, each under the lock on the account.
pub(crate) async fn with_lock(locks: DynLock) -> Result<u64, dlock::Error> {
    let account = Account::new(START);
    let debits: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (account, locks) = (account.clone(), locks.clone());
            tokio::spawn(async move {
                let opts = Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(30));
                locks
                    .with_lock("account:balance", opts, move |_lease| async move {
                        let current = account.read();
                        tokio::time::sleep(Duration::from_millis(5)).await; // "processing"
                        if current >= DEBIT {
                            account.write(current - DEBIT);
                        }
                    })
                    .await
            })
        })
        .collect();
    for d in debits {
        d.await.expect("debit task panicked")?;
    }
    Ok(account.read())
}

#[allow(dead_code)] // tests include this file as a module and call the parts above
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let locks = match dlock::connect(&url).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let expected = START - DEBIT * REQUESTS as u64;
    let unlocked = without_lock().await;
    let locked = match with_lock(locks).await {
        Ok(balance) => balance,
        Err(e) => {
            eprintln!("the run with the lock failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{REQUESTS} concurrent debits of ${DEBIT} from ${START} (backend: {url})\n");
    println!(
        "{:<14} {:>14} {:>10} {:>8}",
        "run", "final balance", "expected", "lost"
    );
    for (run, balance) in [("without lock", unlocked), ("with lock", locked)] {
        println!(
            "{:<14} {:>14} {:>10} {:>8}",
            run,
            format!("${balance}"),
            format!("${expected}"),
            format!("${}", balance - expected),
        );
    }
    if locked == expected {
        println!("\nwith the lock: SAFE");
        std::process::ExitCode::SUCCESS
    } else {
        println!("\nwith the lock: WRONG");
        std::process::ExitCode::FAILURE
    }
}
