//! Measurement: rates, latencies, many tasks, contention, handoff, the table.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dlock::{Acquire, DynLock, LockExt};

pub(crate) const TTL: Duration = Duration::from_secs(30);

/// Everything printed so far, for the generated report (`--report`).
pub(crate) static PRINTED: Mutex<String> = Mutex::new(String::new());

/// Prints a line and keeps it for the report.
macro_rules! out {
    () => { $crate::measure::print_line(String::new()) };
    ($($arg:tt)*) => { $crate::measure::print_line(format!($($arg)*)) };
}
pub(crate) use out;

pub(crate) fn print_line(line: String) {
    println!("{line}");
    let mut printed = PRINTED.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(printed, "{line}");
}

/// One point of the scaling runs, for the report's plots.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) backend: &'static str,
    /// "one key" or "distinct keys".
    pub(crate) shape: &'static str,
    pub(crate) clients: usize,
    pub(crate) rate: f64,
    pub(crate) p99: Duration,
}

/// The scaling points measured so far.
pub(crate) static POINTS: Mutex<Vec<Point>> = Mutex::new(Vec::new());

/// How long and how often to measure.
pub(crate) struct Config {
    /// Iterations of one single-task run.
    pub(crate) iterations: usize,
    /// Interleaved runs of floor and lock; the median is reported.
    pub(crate) rounds: usize,
    /// Length of each many-task run.
    pub(crate) window: Duration,
    /// Distinct keys in the reclaim run.
    pub(crate) reclaim_keys: usize,
}

pub(crate) async fn acquire_release(lock: &DynLock, key: &str) {
    let mut lease = lock.acquire(key, Acquire::ttl(TTL)).await.expect("acquire");
    lease.release().await.expect("release");
}

pub(crate) async fn rate<F, Fut>(n: usize, mut op: F) -> f64
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

pub(crate) async fn latencies<F, Fut>(n: usize, mut op: F) -> Vec<Duration>
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

/// Latencies of `op`, each run after sleeping `pause` (not counted): the unit a
/// handoff compares with, since its release also comes after an idle connection
/// (on this VM a request after a pause costs about twice one right after another).
pub(crate) async fn latencies_after_pause<F, Fut>(
    n: usize,
    pause: Duration,
    mut op: F,
) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        tokio::time::sleep(pause).await;
        let start = Instant::now();
        op().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

pub(crate) struct ManyTasks {
    pub(crate) rate: f64,
}

pub(crate) async fn many_tasks<F, Fut>(tasks: usize, window: Duration, op: F) -> ManyTasks
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

pub(crate) struct Contended {
    pub(crate) rate: f64,
    pub(crate) waits: Vec<Duration>,
    pub(crate) max: u64,
    pub(crate) min: u64,
}

impl Contended {
    /// How evenly the tasks were served: "busiest/least busy task = a / b = r".
    pub(crate) fn fairness(&self) -> String {
        format!(
            "busiest/least busy task = {} / {} = {:.2}x",
            self.max,
            self.min,
            self.max as f64 / self.min.max(1) as f64
        )
    }
}

/// The handoff (`rounds` of it, each release after the waiter had `queue_up` to
/// queue) next to one `unit` of the raw client made after the same pause, printed as
/// two rows and the handoff's ratios to the hot and the paused `unit`.
pub(crate) async fn report_handoff<F, Fut>(
    lock: &DynLock,
    rounds: usize,
    queue_up: Duration,
    unit: &str,
    hot: &[Duration],
    raw_unit: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let handoff = handoff(lock, rounds, queue_up).await;
    let after_pause = latencies_after_pause(rounds, queue_up, raw_unit).await;
    row(
        &format!(
            "floor: one {unit} after a {} ms pause",
            queue_up.as_millis()
        ),
        0.0,
        Some(&after_pause),
        None,
    );
    row(
        "handoff (release -> next holder)",
        0.0,
        Some(&handoff),
        None,
    );
    let p50 = |xs: &[Duration]| percentile(xs, 0.5).as_secs_f64();
    out!(
        "{:<44} handoff p50 / one {unit} p50 = {:.1}x; / one {unit} after the same pause = {:.1}x",
        "",
        p50(&handoff) / p50(hot),
        p50(&handoff) / p50(&after_pause),
    );
}

pub(crate) async fn contended(lock: &DynLock, tasks: usize, window: Duration) -> Contended {
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
/// Release to next grant, with one waiter already queued. `queue_up` must cover the
/// waiter's first attempt and its wake-up setup (a few round trips on a networked
/// backend): a release that overtakes them measures the waiter's join, not the handoff.
pub(crate) async fn handoff(lock: &DynLock, rounds: usize, queue_up: Duration) -> Vec<Duration> {
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
        tokio::time::sleep(queue_up).await;
        let released = Instant::now();
        held.release().await.expect("release");
        let granted = waiter.await.expect("waiter");
        samples.push(granted.saturating_duration_since(released));
    }
    samples.sort();
    samples
}

pub(crate) fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn row(name: &str, rate: f64, lat: Option<&[Duration]>, ratio: Option<f64>) {
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
    out!("{name:<44} {fmt_rate:>14} {p50:>10} {p99:>10} {ratio:>8}");
}

/// The table's header.
pub(crate) fn header() {
    out!(
        "{:<44} {:>14} {:>10} {:>10} {:>8}",
        "scenario",
        "rate (ops/s)",
        "p50",
        "p99",
        "ratio"
    );
}

/// 64 tasks on distinct keys, through `floor` (given the task's number) and through
/// the lock, interleaved over `rounds`; prints the medians and their ratio.
pub(crate) async fn distinct_keys<F, Fut>(
    lock: &DynLock,
    window: Duration,
    rounds: usize,
    floor_name: &str,
    floor: F,
) where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (mut floor_rates, mut lock_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        floor_rates.push(many_tasks(64, window, floor.clone()).await.rate);
        let lock64 = many_tasks(64, window, {
            let lock = lock.clone();
            move |task| {
                let lock = lock.clone();
                async move { acquire_release(&lock, &format!("bench:distinct:{task}")).await }
            }
        })
        .await;
        lock_rates.push(lock64.rate);
    }
    let (floor_rate, lock_rate) = (median(&mut floor_rates), median(&mut lock_rates));
    row(
        &format!("{floor_name}: 64 tasks, distinct keys"),
        floor_rate,
        None,
        None,
    );
    row(
        "64 tasks, distinct keys",
        lock_rate,
        None,
        Some(lock_rate / floor_rate),
    );
}

/// What a run of separate clients measured.
pub(crate) struct ClientsRun {
    pub(crate) rate: f64,
    pub(crate) waits: Vec<Duration>,
    pub(crate) least: usize,
    pub(crate) most: usize,
    pub(crate) mean: f64,
}

/// Runs `clients` loops (built by `client` from its number and the stop flag, each
/// returning its waits for a grant) for `window`, then until each has stopped.
pub(crate) async fn clients_run<F>(clients: usize, window: Duration, client: F) -> ClientsRun
where
    F: Fn(usize, Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|i| client(i, Arc::clone(&stop))).collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut waits = Vec::new();
    let mut per_client = Vec::new();
    for t in tasks {
        let w = t.await.expect("client");
        per_client.push(w.len());
        waits.extend(w);
    }
    waits.sort();
    let total: usize = per_client.iter().sum();
    ClientsRun {
        // Over the window and the drain after it: waiters granted after the stop
        // count, and so does the time they took.
        rate: total as f64 / start.elapsed().as_secs_f64(),
        waits,
        least: per_client.iter().copied().min().unwrap_or_default(),
        most: per_client.iter().copied().max().unwrap_or_default(),
        mean: total as f64 / clients as f64,
    }
}

/// N separate clients on one key for `window`: each client's loop runs in its own
/// task (built by `client`, which gets the stop flag and returns the client's waits
/// for a grant); prints the rate, p50 and p99 wait, acquisitions per client, and
/// the least busy client against the mean.
pub(crate) async fn separate_clients<F>(who: &str, clients: usize, window: Duration, client: F)
where
    F: Fn(Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>>,
{
    let run = clients_run(clients, window, |_, stop| client(stop)).await;
    out!(
        "  {who:<22} {clients:>3} clients {:>8.0}/s  p50 {:>9.1?}  p99 {:>9.1?}  per client {}..{}  least/mean {:.2}",
        run.rate,
        percentile(&run.waits, 0.5),
        percentile(&run.waits, 0.99),
        run.least,
        run.most,
        run.least as f64 / run.mean.max(1.0)
    );
}

/// One client's loop until `stop`: acquire `key` (waiting up to 5 s), release; its
/// waits for a grant.
pub(crate) async fn client_loop(
    lock: DynLock,
    key: String,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut waits = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let opts = Acquire::ttl(TTL).wait(Duration::from_secs(5));
        if let Ok(mut lease) = lock.acquire(&key, opts).await {
            waits.push(asked.elapsed());
            let _ = lease.release().await;
        }
        // An in-process lock answers without awaiting: yield, or the loops hold
        // both worker threads and the stop flag is never set.
        if waits.len().is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    waits
}

/// How each figure grows with clients: for each count, that many clients (locks
/// made by `connect`, all connected before the clock starts) on one key, then on a
/// key each, for `window`. Rates are next to the one-client rate of the same run.
pub(crate) async fn scaling<C, Fut>(
    backend: &'static str,
    unit: &str,
    counts: &[usize],
    window: Duration,
    connect: C,
) where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = DynLock>,
{
    out!("\nScaling: {unit} on one key and on distinct keys, {window:?} each");
    out!(
        "  {:<14} {:>7} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "shape",
        unit,
        "rate (/s)",
        "p50 wait",
        "p99 wait",
        "least/mean",
        "x 1 client"
    );
    for shape in ["one key", "distinct keys"] {
        let mut alone = None;
        for &clients in counts {
            let mut locks = Vec::with_capacity(clients);
            for _ in 0..clients {
                locks.push(connect().await);
            }
            let run = clients_run(clients, window, |i, stop| {
                let key = match shape {
                    "one key" => "bench:scale".to_owned(),
                    _ => format!("bench:scale:{i}"),
                };
                tokio::spawn(client_loop(locks[i].clone(), key, stop))
            })
            .await;
            let alone = *alone.get_or_insert(run.rate);
            let p99 = percentile(&run.waits, 0.99);
            out!(
                "  {shape:<14} {clients:>7} {:>10.0} {:>10.1?} {:>10.1?} {:>12.2} {:>9.2}x",
                run.rate,
                percentile(&run.waits, 0.5),
                p99,
                run.least as f64 / run.mean.max(1.0),
                run.rate / alone
            );
            POINTS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Point {
                    backend,
                    shape,
                    clients,
                    rate: run.rate,
                    p99,
                });
        }
    }
}
