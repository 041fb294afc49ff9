//! The bench harness: one table per run, every figure next to the floor measured in
//! the same run (numbers from a shared 2-core machine are noisy; compare only within
//! one run).
//!
//! ```text
//! cargo bench --bench harness              # all scenarios, memory backend
//! cargo bench --bench harness -- --quick   # shorter runs
//! cargo bench --bench harness -- --profile-uncontended   # one loop, for perf
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dlock::{Acquire, DynLock, LockExt, MemoryLock};

const TTL: Duration = Duration::from_secs(30);

struct Config {
    /// Iterations of one single-task run.
    iterations: usize,
    /// Interleaved runs of floor and lock; the median is reported.
    rounds: usize,
    /// Length of each many-task run.
    window: Duration,
    /// Distinct keys in the reclaim run.
    reclaim_keys: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let config = if quick {
        Config {
            iterations: 20_000,
            rounds: 3,
            window: Duration::from_millis(300),
            reclaim_keys: 100_000,
        }
    } else {
        Config {
            iterations: 200_000,
            rounds: 5,
            window: Duration::from_secs(1),
            reclaim_keys: 1_000_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--profile-uncontended") {
        // Only the uncontended loop, for a profiler.
        let lock: DynLock = Arc::new(MemoryLock::new());
        runtime.block_on(async {
            let r = rate(config.iterations * 10, || {
                acquire_release(&lock, "bench:profile")
            })
            .await;
            println!("{r:.0} acquire+release per second");
        });
        return;
    }
    runtime.block_on(memory_report(&config));
}

/// The floor for the memory backend: what a lock table costs at the least.
struct Floor(Mutex<HashMap<String, Instant>>);

impl Floor {
    fn pair(&self, key: &str) {
        let mut map = self.0.lock().expect("poisoned");
        map.insert(key.to_string(), Instant::now() + TTL);
        map.remove(key);
    }
}

async fn memory_report(config: &Config) {
    let lock: DynLock = Arc::new(MemoryLock::new());
    let floor = Arc::new(Floor(Mutex::new(HashMap::new())));

    println!(
        "dlock bench harness — backend: memory, {} worker threads\n",
        2
    );

    // Uncontended: floor and lock interleaved, median of the rounds.
    let mut floor_rates = Vec::new();
    let mut lock_rates = Vec::new();
    for _ in 0..config.rounds {
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
    let lock_rate = median(&mut lock_rates);
    let floor_lat = latencies(config.iterations / 4, || async { floor.pair("bench:lat") }).await;
    let lock_lat = latencies(config.iterations / 4, || {
        acquire_release(&lock, "bench:lat")
    })
    .await;

    println!(
        "{:<44} {:>14} {:>10} {:>10} {:>8}",
        "scenario", "rate (ops/s)", "p50", "p99", "ratio"
    );
    row(
        "floor: mutex HashMap insert+remove",
        floor_rate,
        Some(&floor_lat),
        None,
    );
    row(
        "uncontended acquire+release",
        lock_rate,
        Some(&lock_lat),
        Some(lock_rate / floor_rate),
    );

    // Many tasks on distinct keys.
    let floor64 = many_tasks(64, config.window, {
        let floor = floor.clone();
        move |task| {
            let floor = floor.clone();
            async move { floor.pair(&format!("bench:floor:{task}")) }
        }
    })
    .await;
    let lock64 = many_tasks(64, config.window, {
        let lock = lock.clone();
        move |task| {
            let lock = lock.clone();
            async move { acquire_release(&lock, &format!("bench:distinct:{task}")).await }
        }
    })
    .await;
    row("floor: 64 tasks, distinct keys", floor64.rate, None, None);
    row(
        "64 tasks, distinct keys",
        lock64.rate,
        None,
        Some(lock64.rate / floor64.rate),
    );

    // Eight tasks on one key: rate, wait and fairness.
    let one_key = contended(&lock, 8, config.window).await;
    row(
        "8 tasks, one key (acquire+release)",
        one_key.rate,
        Some(&one_key.waits),
        Some(one_key.rate / lock_rate),
    );
    println!(
        "{:<44} busiest/least busy task = {} / {} = {:.2}x",
        "  fairness",
        one_key.max,
        one_key.min,
        one_key.max as f64 / one_key.min.max(1) as f64
    );

    let handoff = handoff(&lock, config.iterations / 100).await;
    row(
        "handoff (release -> next holder)",
        0.0,
        Some(&handoff),
        None,
    );

    println!(
        "\nratios: uncontended is lock/floor (target >= 0.5); 8-task rate is vs uncontended lock;"
    );
    println!("        64 tasks is lock/floor at the same concurrency.");

    reclaim(config.reclaim_keys).await;
}

async fn acquire_release(lock: &DynLock, key: &str) {
    let mut lease = lock.acquire(key, Acquire::ttl(TTL)).await.expect("acquire");
    lease.release().await.expect("release");
}

async fn rate<F, Fut>(n: usize, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..n {
        op().await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn latencies<F, Fut>(n: usize, mut op: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        op().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

struct ManyTasks {
    rate: f64,
}

async fn many_tasks<F, Fut>(tasks: usize, window: Duration, op: F) -> ManyTasks
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + window;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    op(task).await;
                    done += 1;
                    if done.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                done
            })
        })
        .collect();
    let start = Instant::now();
    let mut total = 0;
    for h in handles {
        total += h.await.expect("task");
    }
    ManyTasks {
        rate: total as f64 / start.elapsed().as_secs_f64(),
    }
}

struct Contended {
    rate: f64,
    waits: Vec<Duration>,
    max: u64,
    min: u64,
}

async fn contended(lock: &DynLock, tasks: usize, window: Duration) -> Contended {
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let lock = lock.clone();
            tokio::spawn(async move {
                let mut waits = Vec::new();
                while Instant::now() < deadline {
                    let asked = Instant::now();
                    let mut lease = lock
                        .acquire(
                            "bench:one-key",
                            Acquire::ttl(TTL).wait(Duration::from_secs(10)),
                        )
                        .await
                        .expect("acquire");
                    waits.push(asked.elapsed());
                    lease.release().await.expect("release");
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::new();
    let mut counts = Vec::new();
    for h in handles {
        let w = h.await.expect("task");
        counts.push(w.len() as u64);
        waits.extend(w);
    }
    let elapsed = start.elapsed().as_secs_f64();
    waits.sort();
    Contended {
        rate: waits.len() as f64 / elapsed,
        waits,
        max: counts.iter().copied().max().unwrap_or(0),
        min: counts.iter().copied().min().unwrap_or(0),
    }
}

/// Release by one task to the grant of the next, which is already waiting.
async fn handoff(lock: &DynLock, rounds: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let key = format!("bench:handoff:{round}");
        let mut held = lock
            .acquire(&key, Acquire::ttl(TTL))
            .await
            .expect("acquire");
        let waiter = {
            let lock = lock.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut lease = lock
                    .acquire(&key, Acquire::ttl(TTL))
                    .await
                    .expect("acquire");
                let granted = Instant::now();
                lease.release().await.expect("release");
                granted
            })
        };
        // Let the waiter queue up before releasing.
        tokio::time::sleep(Duration::from_micros(200)).await;
        let released = Instant::now();
        held.release().await.expect("release");
        let granted = waiter.await.expect("waiter");
        samples.push(granted.saturating_duration_since(released));
    }
    samples.sort();
    samples
}

/// Holding and freeing many distinct keys must leave no growth behind.
async fn reclaim(keys: usize) {
    let lock = MemoryLock::new();
    let dynamic: DynLock = Arc::new(lock.clone());
    let before = resident_bytes();
    for i in 0..keys {
        let mut lease = dynamic
            .acquire(&format!("bench:reclaim:{i}"), Acquire::ttl(TTL))
            .await
            .expect("acquire");
        lease.release().await.expect("release");
    }
    let held_batch = keys / 10;
    let mut leases = Vec::with_capacity(held_batch);
    for i in 0..held_batch {
        leases.push(
            dynamic
                .acquire(&format!("bench:reclaim-held:{i}"), Acquire::ttl(TTL))
                .await
                .expect("acquire"),
        );
    }
    let peak = resident_bytes();
    let table_at_peak = lock.len();
    for mut lease in leases {
        lease.release().await.expect("release");
    }
    let after = resident_bytes();
    println!(
        "\nreclaim: {keys} keys held and freed one by one, then {held_batch} held at once and freed"
    );
    println!(
        "  table entries: {table_at_peak} at peak, {} after; resident memory: {:.1} MiB before, {:.1} MiB at peak, {:.1} MiB after ({:+.1}%)",
        lock.len(),
        mib(before),
        mib(peak),
        mib(after),
        (after as f64 / before as f64 - 1.0) * 100.0
    );
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, rate: f64, lat: Option<&[Duration]>, ratio: Option<f64>) {
    let fmt_rate = if rate > 0.0 {
        format!("{rate:.0}")
    } else {
        "-".into()
    };
    let (p50, p99) = match lat {
        Some(l) => (
            format!("{:.1?}", percentile(l, 0.5)),
            format!("{:.1?}", percentile(l, 0.99)),
        ),
        None => ("-".into(), "-".into()),
    };
    let ratio = ratio.map_or("-".into(), |r| format!("{r:.2}x"));
    println!("{name:<44} {fmt_rate:>14} {p50:>10} {p99:>10} {ratio:>8}");
}
