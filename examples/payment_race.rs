//! Lost updates without a lock, and none with one, even when a holder stalls.
//!
//! A balance of $1000 takes 10 concurrent debits of $100. Without a lock, every
//! debit reads the balance before any writes it back (a barrier makes the
//! interleaving certain), so all but one update is lost. With a lock, the debits
//! run one at a time and the balance ends at $0.
//!
//! Then the same under the lock, but the first holder stalls past its TTL between
//! its read and its write (a GC pause). Written directly, its stale write lands
//! after the others and undoes their debits. Read and written through the fence
//! gate with the lease's token (`read_for_update`, then `write`), its write is
//! refused, and it debits again under a new lease: $0 again.
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

use dlock::{Acquire, DynFenceGate, DynLock, FencedRead, LockExt, OwnerId};
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

/// Where the stalled runs keep the balance: in process, written directly, or in the
/// backend's fence gate, read and written with the lease's token.
#[derive(Clone)]
pub(crate) enum Ledger {
    Direct(Account),
    Fenced {
        gate: DynFenceGate,
        resource: String,
    },
}

impl Ledger {
    pub(crate) fn direct() -> Self {
        Ledger::Direct(Account::new(START))
    }

    /// A fresh register in `gate`: a gate on a server remembers earlier runs.
    pub(crate) fn fenced(gate: DynFenceGate) -> Self {
        let resource = format!("payment-race:{}", OwnerId::random());
        Ledger::Fenced { gate, resource }
    }

    /// The balance, read as the first step of an update under `lease`'s token.
    /// `None`: a newer holder has been here, so this lease must not write.
    async fn read(&self, lease: &dlock::Lease) -> Result<Option<u64>, dlock::Error> {
        match self {
            Ledger::Direct(account) => Ok(Some(account.read())),
            Ledger::Fenced { gate, resource } => {
                match gate.read_for_update(resource, lease.fence()).await? {
                    FencedRead::Current(value) => Ok(Some(value.map_or(START, |v| {
                        String::from_utf8_lossy(&v).parse().unwrap_or(START)
                    }))),
                    FencedRead::Stale { .. } => Ok(None),
                }
            }
        }
    }

    /// Writes the balance; `false` if the gate refused the lease's token.
    async fn write(&self, lease: &dlock::Lease, balance: u64) -> Result<bool, dlock::Error> {
        match self {
            Ledger::Direct(account) => {
                account.write(balance);
                Ok(true)
            }
            Ledger::Fenced { gate, resource } => Ok(gate
                .write(resource, lease.fence(), balance.to_string().as_bytes())
                .await?
                .is_accepted()),
        }
    }

    pub(crate) async fn balance(&self) -> Result<u64, dlock::Error> {
        match self {
            Ledger::Direct(account) => Ok(account.read()),
            Ledger::Fenced { gate, resource } => Ok(gate
                .read(resource)
                .await?
                .and_then(|(_, v)| String::from_utf8_lossy(&v).parse().ok())
                .unwrap_or(START)),
        }
    }
}

/// The debits under the lock, with no keep-alive, where the first holder stalls for
/// three TTLs between its read and its write. A debit whose write the gate refuses
/// takes the lock again and starts over.
pub(crate) async fn with_lock_and_a_stall(
    locks: DynLock,
    ledger: Ledger,
) -> Result<u64, dlock::Error> {
    let ttl = locks.capabilities().fit_ttl(Duration::from_millis(200));
    let key = format!("account:{}", OwnerId::random());
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let debits: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (locks, ledger, key, stalled) =
                (locks.clone(), ledger.clone(), key.clone(), stalled.clone());
            tokio::spawn(async move {
                loop {
                    let opts = Acquire::ttl(ttl).no_keep_alive().wait(ttl * 40);
                    let lease = locks.acquire(&key, opts).await?;
                    let Some(current) = ledger.read(&lease).await? else {
                        continue;
                    };
                    if !stalled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(ttl * 3).await; // the pause: the lease runs out
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let written = ledger.write(&lease, current.saturating_sub(DEBIT)).await?;
                    drop(lease); // released, or long expired: either way, not ours now
                    if written {
                        return Ok::<(), dlock::Error>(());
                    }
                }
            })
        })
        .collect();
    for d in debits {
        d.await.expect("debit task panicked")?;
    }
    ledger.balance().await
}

#[allow(dead_code)] // tests include this file as a module and call the parts above
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let (locks, gate) = match dlock::connect_with_gate(&url).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let expected = START - DEBIT * REQUESTS as u64;
    let unlocked = without_lock().await;
    let runs = async {
        let locked = with_lock(locks.clone()).await?;
        let stalled = with_lock_and_a_stall(locks.clone(), Ledger::direct()).await?;
        let fenced = with_lock_and_a_stall(locks, Ledger::fenced(gate)).await?;
        Ok::<_, dlock::Error>((locked, stalled, fenced))
    };
    let (locked, stalled, fenced) = match runs.await {
        Ok(balances) => balances,
        Err(e) => {
            eprintln!("a run with the lock failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{REQUESTS} concurrent debits of ${DEBIT} from ${START} (backend: {url})\n");
    println!(
        "{:<34} {:>14} {:>10} {:>8}",
        "run", "final balance", "expected", "lost"
    );
    for (run, balance) in [
        ("without lock", unlocked),
        ("with lock", locked),
        ("with lock, a holder stalls", stalled),
        ("with lock + fence gate, a stall", fenced),
    ] {
        println!(
            "{:<34} {:>14} {:>10} {:>8}",
            run,
            format!("${balance}"),
            format!("${expected}"),
            format!("${}", balance - expected),
        );
    }
    println!(
        "\nA lock alone does not survive a holder that stalls past its TTL; a lock whose\n\
         token the resource checks on the read and the write does."
    );
    if locked == expected && fenced == expected {
        println!("\nwith the lock: SAFE");
        std::process::ExitCode::SUCCESS
    } else {
        println!("\nwith the lock: WRONG");
        std::process::ExitCode::FAILURE
    }
}
