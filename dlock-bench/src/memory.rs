//! The memory backend against a mutex-guarded HashMap.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dlock::{Acquire, Attempt, AttemptRequest, BootInstant, DynLock, LockExt, LockKey, MemoryLock};

use crate::measure::*;

/// The floor for the memory backend: what a lock table costs at the least.
pub(crate) struct Floor(pub(crate) Mutex<HashMap<String, Instant>>);

impl Floor {
    pub(crate) fn pair(&self, key: &str) {
        let mut map = self.0.lock().expect("poisoned");
        map.insert(key.to_string(), Instant::now() + TTL);
        map.remove(key);
    }
}

pub(crate) async fn report(config: &Config) {
    let lock: DynLock = Arc::new(MemoryLock::new());
    let floor = Arc::new(Floor(Mutex::new(HashMap::new())));

    out!(
        "dlock bench harness — backend: memory, {} worker threads\n",
        2
    );

    // Uncontended: floor and lock interleaved, median of the rounds.
    let mut floor_rates = Vec::new();
    let mut table_rates = Vec::new();
    let mut lock_rates = Vec::new();
    for _ in 0..config.rounds {
        table_rates.push(
            rate(config.iterations, || async {
                table_alone(&lock, "bench:uncontended")
            })
            .await,
        );
        floor_rates.push(
            rate(config.iterations, || async {
                floor.pair("bench:uncontended")
            })
            .await,
        );
        lock_rates.push(
            rate(config.iterations, || {
                acquire_release(&lock, "bench:uncontended")
            })
            .await,
        );
    }
    let floor_rate = median(&mut floor_rates);
    let table_rate = median(&mut table_rates);
    let lock_rate = median(&mut lock_rates);
    let floor_lat = latencies(config.iterations / 4, || async { floor.pair("bench:lat") }).await;
    let lock_lat = latencies(config.iterations / 4, || {
        acquire_release(&lock, "bench:lat")
    })
    .await;

    header();
    row(
        "floor: mutex HashMap insert+remove",
        floor_rate,
        Some(&floor_lat),
        None,
    );
    row(
        "  table alone: attempt + release, no lease",
        table_rate,
        None,
        Some(table_rate / floor_rate),
    );
    row(
        "uncontended acquire+release",
        lock_rate,
        Some(&lock_lat),
        Some(lock_rate / floor_rate),
    );

    // Many tasks on distinct keys.
    distinct_keys(&lock, config.window, config.rounds, "floor", {
        let floor = floor.clone();
        move |task| {
            let floor = floor.clone();
            async move { floor.pair(&format!("bench:floor:{task}")) }
        }
    })
    .await;

    // Eight tasks on one key: rate, wait and fairness.
    let one_key = contended(&lock, 8, config.window).await;
    row(
        "8 tasks, one key (acquire+release)",
        one_key.rate,
        Some(&one_key.waits),
        Some(one_key.rate / lock_rate),
    );
    out!("{:<44} {}", "  fairness", one_key.fairness());

    let handoff = handoff(&lock, config.iterations / 100, Duration::from_micros(200)).await;
    row(
        "handoff (release -> next holder)",
        0.0,
        Some(&handoff),
        None,
    );

    out!(
        "\nratios: uncontended is lock/floor (target >= 0.5); 8-task rate is vs uncontended lock;"
    );
    out!("        64 tasks is lock/floor at the same concurrency.");

    scaling("memory", "tasks", &[1, 8, 64, 256], config.window, || {
        let lock = lock.clone();
        async move { lock }
    })
    .await;
    reclaim(config.reclaim_keys).await;
    held_at_once(config.reclaim_keys).await;
}

/// Resident memory per lease held, with `n` distinct keys held at once through the
/// public API, without keep-alive, counting the caller's `Lease` values (target
/// 320 B).
async fn held_at_once(n: usize) {
    let lock: DynLock = Arc::new(MemoryLock::new());
    // Warms the allocator and the runtime, so their first growth is not counted.
    hold_batch(&lock, "warm-up-held", n / 10).await;
    let keys: Vec<String> = (0..n).map(|i| format!("bench:held:{i}")).collect();
    let mut leases = Vec::with_capacity(n);
    let before = resident_bytes();
    for key in &keys {
        leases.push(lock.acquire(key, Acquire::ttl(TTL)).await.expect("acquire"));
    }
    let after = resident_bytes();
    out!(
        "
held at once: {n} distinct keys, {:.0} B of resident memory per lease (the key strings made beforehand; target 320 B)",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    drop(leases);
}

/// What the backend itself costs, without the lease around it: the key, an owner,
/// the two clock readings a lease needs (when the attempt was sent, and whether it
/// was still valid at release), and the table's attempt and release. The gap between
/// this row and the full one is the lease machinery (validation, metrics, validity,
/// lost signal, release on drop).
fn table_alone(lock: &DynLock, key: &str) {
    let key = LockKey::new(key).expect("key");
    let owner = lock.new_owner();
    let sent = BootInstant::now();
    let request = AttemptRequest {
        key: &key,
        owner: &owner,
        ttl: TTL,
        queue: false,
        sent,
        woken: false,
    };
    let answer = lock.attempt_now(request).expect("an in-process answer");
    assert!(matches!(answer, Ok(Attempt::Acquired { .. })));
    let held = lock
        .release_now(&key, &owner)
        .expect("an in-process answer");
    assert!(held.expect("release") && BootInstant::now() < sent.saturating_add(TTL));
}

/// Holding and freeing many distinct keys must leave no growth behind. A first batch
/// warms the allocator and the runtime (their first growth is not ours); then a
/// million keys go through one by one and three fresh batches are held at once and
/// freed, and resident memory must come back to where it was after the warm-up.
async fn reclaim(keys: usize) {
    let lock = MemoryLock::new();
    let dynamic: DynLock = Arc::new(lock.clone());
    let batch = keys / 10;
    hold_batch(&dynamic, "warm-up", batch).await;
    let before = resident_bytes();
    for i in 0..keys {
        let mut lease = dynamic
            .acquire(&format!("bench:reclaim:{i}"), Acquire::ttl(TTL))
            .await
            .expect("acquire");
        lease.release().await.expect("release");
    }
    let after_one_by_one = resident_bytes();
    let entries_after_one_by_one = lock.len();
    let mut peaks = Vec::new();
    let mut table_peak = 0;
    for round in 0..3 {
        let (rss, entries) = hold_batch(&dynamic, &format!("round-{round}"), batch).await;
        peaks.push(format!("{:.1}", mib(rss)));
        table_peak = table_peak.max(entries);
    }
    let after = resident_bytes();
    let growth = |now: u64| (now as f64 / before as f64 - 1.0) * 100.0;
    out!(
        "\nreclaim (resident memory from /proc/self/statm, after a warm-up batch: {:.1} MiB)",
        mib(before)
    );
    out!(
        "  {keys} distinct keys held and freed one by one: table {entries_after_one_by_one} entries, {:.1} MiB ({:+.1}%)",
        mib(after_one_by_one),
        growth(after_one_by_one)
    );
    out!(
        "  3 x {batch} keys held at once and freed: table {table_peak} entries at peak, {} after; peaks {} MiB; {:.1} MiB after ({:+.1}%)",
        lock.len(),
        peaks.join(" / "),
        mib(after),
        growth(after)
    );
    out!(
        "  (freed small blocks stay with the allocator, reused by the next batch: compare the peaks)"
    );
}

/// Holds `n` fresh keys at once, then frees them; returns resident memory and table
/// entries at the peak.
async fn hold_batch(lock: &DynLock, name: &str, n: usize) -> (u64, usize) {
    let mut leases = Vec::with_capacity(n);
    for i in 0..n {
        leases.push(
            lock.acquire(&format!("bench:reclaim-{name}:{i}"), Acquire::ttl(TTL))
                .await
                .expect("acquire"),
        );
    }
    let peak = (resident_bytes(), leases.len());
    for mut lease in leases {
        lease.release().await.expect("release");
    }
    peak
}
