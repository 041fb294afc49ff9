//! A worker process for the shutdown tests, written as the operations guide tells
//! users to: the work holds (or waits for) a lock in a task, and `main` waits for
//! SIGINT and then shuts the lock down before returning.
//!
//! `dlock-e2e-worker URL KEY TTL_SECS shutdown|return`: with `return`, `main`
//! returns without calling `shutdown`, to show what a dropped lease does then.
//! It prints `ready` once SIGINT is handled, `held FENCE` once it holds the
//! lock, and what ended the work.

use std::{process::ExitCode, time::Duration};

use dlock::{Acquire, LockExt};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, key, ttl, mode] = args.as_slice() else {
        eprintln!("usage: dlock-e2e-worker URL KEY TTL_SECS shutdown|return");
        return ExitCode::from(64);
    };
    let Ok(ttl) = ttl.parse::<u64>().map(Duration::from_secs) else {
        eprintln!("TTL_SECS must be a whole number of seconds");
        return ExitCode::from(64);
    };
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("cannot handle SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lock = match dlock::connect(url).await {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("connect: {e}");
            return ExitCode::from(69);
        }
    };
    println!("ready");
    let work = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move {
            match lock
                .acquire(&key, Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
                .await
            {
                Ok(lease) => {
                    println!("held {}", lease.fence());
                    lease.lost().await;
                    println!("lost: {:?}", lease.lost_reason());
                }
                Err(e) => println!("ended: {e}"),
            }
        })
    };
    interrupt.recv().await;
    if mode == "shutdown" {
        let report = lock.shutdown(Duration::from_secs(5)).await;
        println!("shutdown: {report}");
        let _ = work.await;
    }
    ExitCode::SUCCESS
}
