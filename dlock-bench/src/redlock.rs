//! Redlock against rslock 0.10 (what Rust users pick today) and single-node
//! dlock-redis, on the same servers, in one run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dlock::{DynLock, RedisLock, RedlockConfig, RedlockLock};
use rslock::LockManager;

use crate::measure::*;

const RSLOCK_TTL: Duration = Duration::from_secs(30);

async fn rslock_pair(manager: &LockManager, key: &str) {
    let lock = manager
        .lock(key.as_bytes(), RSLOCK_TTL)
        .await
        .expect("rslock lock");
    manager.unlock(&lock).await;
}

async fn redlock(urls: &[String], fencing: bool) -> DynLock {
    let mut builder = RedlockConfig::builder().fencing(fencing);
    for url in urls {
        builder = builder.node_url(url.as_str());
    }
    Arc::new(
        RedlockLock::connect_with(builder.build().expect("config"))
            .await
            .expect("connect"),
    )
}

/// `n` servers: the URLs given, or containers of the test image (kept alive).
async fn servers(given: Option<String>, n: usize) -> (Vec<dlock_testkit::Server>, Vec<String>) {
    if let Some(list) = given {
        let urls: Vec<String> = list
            .trim_start_matches("redlock://")
            .split(',')
            .map(|h| format!("redis://{h}"))
            .collect();
        return (Vec::new(), urls.into_iter().take(n).collect());
    }
    let starts = (0..n).map(|_| async {
        let server = dlock_testkit::start_redis(dlock_testkit::RedisOptions::default()).await;
        let url = format!("redis://127.0.0.1:{}", server.port());
        (server, url)
    });
    futures::future::join_all(starts).await.into_iter().unzip()
}

pub(crate) async fn report(config: &Config, given: Option<String>) {
    let (five_servers, all) = servers(given.clone(), 5).await;
    let urls: Vec<String> = all[..3].to_vec();
    out!(
        "dlock bench harness — backend: redlock over {} ({}), 2 worker threads\n",
        urls.len(),
        if given.is_some() {
            "the servers given"
        } else {
            "containers"
        }
    );
    let rs = LockManager::new(urls.clone());
    let off = redlock(&urls, false).await;
    let on = redlock(&urls, true).await;
    let five = redlock(&all, true).await;
    let single: DynLock = Arc::new(RedisLock::connect(&urls[0]).await.expect("connect"));
    let n = config.iterations / 40;

    let (mut r_rs, mut r_off, mut r_on, mut r_five, mut r_single) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..config.rounds {
        r_rs.push(rate(n, || rslock_pair(&rs, "bench:rslock")).await);
        r_off.push(rate(n, || acquire_release(&off, "bench:off")).await);
        r_on.push(rate(n, || acquire_release(&on, "bench:on")).await);
        r_five.push(rate(n, || acquire_release(&five, "bench:five")).await);
        r_single.push(rate(n, || acquire_release(&single, "bench:single")).await);
    }
    let (rs_rate, off_rate, on_rate, five_rate, single_rate) = (
        median(&mut r_rs),
        median(&mut r_off),
        median(&mut r_on),
        median(&mut r_five),
        median(&mut r_single),
    );
    header();
    row("rslock 0.10, 3 nodes: lock + unlock", rs_rate, None, None);
    row("dlock-redis, one of the nodes", single_rate, None, None);
    row(
        "redlock, 3 nodes, tokens off (x rslock)",
        off_rate,
        None,
        Some(off_rate / rs_rate),
    );
    row(
        "  the same, x single-node dlock-redis",
        off_rate,
        None,
        Some(off_rate / single_rate),
    );
    row(
        "redlock, 3 nodes, tokens on (x tokens off)",
        on_rate,
        None,
        Some(on_rate / off_rate),
    );
    row(
        "redlock, 5 nodes, tokens on (x 3 nodes)",
        five_rate,
        None,
        Some(five_rate / on_rate),
    );

    contended_clients(&urls, config.window).await;
    scaling("redlock", "clients", &[1, 8, 64], config.window, || {
        let urls = urls.clone();
        async move { redlock(&urls, true).await }
    })
    .await;
    frozen_node(&urls, &five_servers, given.is_some()).await;
}

/// 8 separate clients (connections) on one key: rate, p99 time to grant, and
/// acquisitions per client, for dlock and rslock.
async fn contended_clients(urls: &[String], window: Duration) {
    out!("\n8 separate clients on one key, {window:?} each:");
    separate_clients("redlock (tokens on)", 8, window, |stop| {
        let urls = urls.to_vec();
        tokio::spawn(async move {
            let lock = redlock(&urls, true).await;
            client_loop(lock, "bench:contended".to_owned(), stop).await
        })
    })
    .await;
    separate_clients("rslock 0.10", 8, window, |stop| {
        rslock_client(urls.to_vec(), "bench:contended-rs", stop)
    })
    .await;
}

/// One rslock client's loop on `key` until `stop`: its waits for a grant.
pub(crate) fn rslock_client(
    urls: Vec<String>,
    key: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let rs = LockManager::new(urls);
        let mut waits = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if let Ok(guard) = rs.acquire(key.as_bytes(), RSLOCK_TTL).await {
                waits.push(t.elapsed());
                rs.unlock(&guard.lock).await;
            }
        }
        waits
    })
}

/// One of 3 nodes frozen: p50 acquire+release, healthy and frozen, for dlock (once
/// its breaker opened) and rslock.
async fn frozen_node(urls: &[String], servers: &[dlock_testkit::Server], native: bool) {
    out!("\nOne of 3 nodes frozen:");
    let on = redlock(urls, true).await;
    let rs = LockManager::new(urls.to_vec());
    let healthy = latencies(200, || acquire_release(&on, "bench:frozen")).await;
    let rs_healthy = latencies(200, || rslock_pair(&rs, "bench:frozen-rs")).await;
    if native {
        out!("  (freeze a native node by hand: SIGSTOP its redis-server; skipped here)");
        return;
    }
    servers[0].pause().await;
    // Until the breaker opens, then measured.
    for _ in 0..20 {
        acquire_release(&on, "bench:frozen").await;
    }
    let frozen = latencies(200, || acquire_release(&on, "bench:frozen")).await;
    let rs_frozen = latencies(5, || rslock_pair(&rs, "bench:frozen-rs")).await;
    servers[0].unpause().await;
    let p50 = |l: &[Duration]| percentile(l, 0.5);
    out!(
        "  redlock: p50 {:.1?} healthy, {:.1?} frozen ({:.2}x)",
        p50(&healthy),
        p50(&frozen),
        p50(&frozen).as_secs_f64() / p50(&healthy).as_secs_f64()
    );
    out!(
        "  rslock:  p50 {:.1?} healthy, {:.1?} frozen ({:.0}x)",
        p50(&rs_healthy),
        p50(&rs_frozen),
        p50(&rs_frozen).as_secs_f64() / p50(&rs_healthy).as_secs_f64()
    );
}

/// Only the uncontended tokens-off loop on the servers given, for a profiler.
pub(crate) async fn profile(given: String, iterations: usize) {
    let (_servers, all) = servers(Some(given), 3).await;
    let lock = redlock(&all, false).await;
    let r = rate(iterations, || acquire_release(&lock, "bench:profile")).await;
    println!("{r:.0} acquire+release per second");
}
