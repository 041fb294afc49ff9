//! The bench harness: one table per backend and run, every figure next to the floor
//! measured in the same run (numbers from a shared 2-core machine are noisy; compare
//! only within one run). Built with the `redis` and `etcd` features by default.
//!
//! ```text
//! cargo run --release -p dlock-bench                          # memory backend
//! cargo run --release -p dlock-bench -- --quick               # shorter runs
//! cargo run --release -p dlock-bench -- --redis               # starts a test container
//! cargo run --release -p dlock-bench -- --redis redis://127.0.0.1:6379
//! cargo run --release -p dlock-bench -- --etcd                # starts a test container
//! cargo run --release -p dlock-bench -- --redlock             # starts 5 test containers
//! cargo run --release -p dlock-bench -- --redlock redlock://127.0.0.1:7001,127.0.0.1:7002,...(5)
//! cargo run --release -p dlock-bench -- --memory --redis URL --etcd URL --report docs/performance.md
//!                                                              # several backends, and the report
//! cargo run --release -p dlock-bench -- --profile-uncontended # one memory loop, for perf
//! cargo run --release -p dlock-bench -- --profile-floor       # the floor's loop alone, to compare
//! ```

use std::{sync::Arc, time::Duration};

use dlock::{DynLock, MemoryLock};

#[cfg(feature = "etcd")]
mod etcd;
mod measure;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redlock")]
mod redlock;
mod report;

use measure::{Config, acquire_release, rate};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
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
    if args.iter().any(|a| a == "--profile-floor") {
        // The floor's loop alone: a profiler's count of its work, next to the lock's.
        let floor = memory::Floor(std::sync::Mutex::new(std::collections::HashMap::new()));
        runtime.block_on(async {
            let r = rate(config.iterations * 10, || async {
                floor.pair("bench:profile")
            })
            .await;
            println!("{r:.0} floor pairs per second");
        });
        return;
    }
    if args.iter().any(|a| a == "--profile-uncontended") {
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
    #[cfg(feature = "redis")]
    if let Some(at) = args.iter().position(|a| a == "--cpu-redis") {
        // Where the CPU of an acquire+release goes, client and server (a server on
        // this machine only: its CPU is read from /proc).
        let url = args.get(at + 1).cloned().unwrap_or_else(|| {
            eprintln!("--cpu-redis needs a URL: --cpu-redis redis://127.0.0.1:6379");
            std::process::exit(2);
        });
        runtime.block_on(redis::cpu_probe(&url, Duration::from_secs(2)));
        return;
    }
    #[cfg(feature = "redlock")]
    if let Some(at) = args.iter().position(|a| a == "--profile-redlock") {
        // Only Redlock's uncontended loop (tokens off), for a profiler.
        let urls = args.get(at + 1).cloned().unwrap_or_else(|| {
            eprintln!("--profile-redlock needs a URL: --profile-redlock redlock://h:p,h:p,h:p");
            std::process::exit(2);
        });
        runtime.block_on(redlock::profile(urls, config.iterations / 10));
        return;
    }
    // A URL after the flag, or none: then the harness starts a test container.
    let url_after = |flag: &str, scheme: &str| {
        let at = args.iter().position(|a| a == flag)?;
        Some(args.get(at + 1).filter(|u| u.starts_with(scheme)).cloned())
    };
    let report = args
        .iter()
        .position(|a| a == "--report")
        .map(|at| match args.get(at + 1) {
            Some(path) if !path.starts_with("--") => std::path::PathBuf::from(path),
            _ => {
                eprintln!("--report needs a path: --report docs/performance.md");
                std::process::exit(2);
            }
        });
    let (etcd, redlock, redis) = (
        url_after("--etcd", "etcd"),
        url_after("--redlock", "redlock"),
        url_after("--redis", "redis"),
    );
    // Memory runs when asked for, or when no other backend is.
    let memory = args.iter().any(|a| a == "--memory")
        || (etcd.is_none() && redlock.is_none() && redis.is_none());
    let mut sections = Vec::new();
    let mut section = |name: &str, run: &mut dyn FnMut()| {
        let start = printed_len();
        run();
        let text = measure::PRINTED.lock().unwrap_or_else(|p| p.into_inner())[start..].to_owned();
        sections.push((name.to_owned(), text));
    };
    if memory {
        section("Memory", &mut || runtime.block_on(memory::report(&config)));
    }
    if let Some(url) = redis {
        section("Redis", &mut || run_redis(&runtime, &config, url.clone()));
    }
    if let Some(urls) = redlock {
        section("Redlock", &mut || {
            run_redlock(&runtime, &config, urls.clone())
        });
    }
    if let Some(url) = etcd {
        section("etcd", &mut || run_etcd(&runtime, &config, url.clone()));
    }
    if let Some(path) = report {
        let command = std::iter::once("cargo run --release -p dlock-bench --".to_owned())
            .chain(args.iter().skip(1).cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let points = measure::POINTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = report::write(&path, &command, &sections, &points) {
            eprintln!("dlock-bench: {e}");
            std::process::exit(1);
        }
        eprintln!("dlock-bench: wrote {}", path.display());
    }
}

fn printed_len() -> usize {
    measure::PRINTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
}

#[cfg(feature = "etcd")]
fn run_etcd(runtime: &tokio::runtime::Runtime, config: &Config, url: Option<String>) {
    runtime.block_on(etcd::report(config, url));
}

#[cfg(not(feature = "etcd"))]
fn run_etcd(_: &tokio::runtime::Runtime, _: &Config, _: Option<String>) {
    eprintln!(
        "--etcd needs the `etcd` feature: cargo run --release -p dlock-bench --features etcd -- --etcd"
    );
    std::process::exit(2);
}

#[cfg(feature = "redlock")]
fn run_redlock(runtime: &tokio::runtime::Runtime, config: &Config, urls: Option<String>) {
    runtime.block_on(redlock::report(config, urls));
}

#[cfg(not(feature = "redlock"))]
fn run_redlock(_: &tokio::runtime::Runtime, _: &Config, _: Option<String>) {
    eprintln!(
        "--redlock needs the `redlock` feature: cargo run --release -p dlock-bench --features redlock -- --redlock"
    );
    std::process::exit(2);
}

#[cfg(feature = "redis")]
fn run_redis(runtime: &tokio::runtime::Runtime, config: &Config, url: Option<String>) {
    runtime.block_on(redis::report(config, url));
}

#[cfg(not(feature = "redis"))]
fn run_redis(_: &tokio::runtime::Runtime, _: &Config, _: Option<String>) {
    eprintln!(
        "--redis needs the `redis` feature: cargo run --release -p dlock-bench --features redis -- --redis"
    );
    std::process::exit(2);
}
