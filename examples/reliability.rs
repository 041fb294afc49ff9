//! The reliability helpers against a flaky in-process service, as a timeline.
//!
//! 1. Retry: the service fails 60 % of requests; each request is retried with
//!    exponential backoff and full jitter until it gets through.
//! 2. Circuit breaker: the service goes down completely. The breaker opens and
//!    refuses calls at once; each trial call after the reset timeout fails and
//!    re-opens it, until the service recovers and a trial closes it again.
//! 3. Bulkhead: ten calls arrive together at a bulkhead of 3 running + 2 queued;
//!    five are served, five are shed at once.
//!
//! No network; it takes about two seconds.
//!
//! ```text
//! cargo run --example reliability
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dlock_core::reliability::{BreakerError, Bulkhead, CircuitBreaker, ConfigError, Jitter, Retry};
use tokio::time::{Instant, sleep};

static START: OnceLock<Instant> = OnceLock::new();

/// Prints one line of the timeline: milliseconds since the start, then the event.
macro_rules! event {
    ($($arg:tt)*) => {
        println!(
            "[{:>5} ms] {}",
            START.get_or_init(Instant::now).elapsed().as_millis(),
            format_args!($($arg)*)
        )
    };
}

/// The service's only failure.
#[derive(Debug)]
struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// A local service that fails a configurable share of requests, after some latency.
/// Seeded, so each run fails the same requests.
struct FlakyService {
    failure_percent: AtomicU32,
    latency: Duration,
    rng: Mutex<u64>,
}

impl FlakyService {
    fn new(failure_percent: u32, latency: Duration, seed: u64) -> Self {
        FlakyService {
            failure_percent: AtomicU32::new(failure_percent),
            latency,
            rng: Mutex::new(seed),
        }
    }

    fn set_failure_percent(&self, percent: u32) {
        self.failure_percent.store(percent, Ordering::Relaxed);
    }

    async fn call(&self, request: u32) -> Result<u32, Unavailable> {
        sleep(self.latency).await;
        let roll = self.next_random() % 100;
        if roll < u64::from(self.failure_percent.load(Ordering::Relaxed)) {
            Err(Unavailable)
        } else {
            Ok(request * 10)
        }
    }

    // SplitMix64: enough randomness for a demo, and no extra dependency.
    fn next_random(&self) -> u64 {
        let mut state = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

async fn retry_with_backoff(service: &FlakyService) -> Result<(), ConfigError> {
    event!("== retry: 60 % of requests fail; up to 5 retries, 50 ms doubling, full jitter");
    let retry = Retry::builder()
        .retries(5)
        .base_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(800))
        .jitter(Jitter::Full)
        .seed(7)
        .on_retry(|attempt, err: &Unavailable| event!("   retry {attempt} after: {err}"))
        .build()?;
    for request in 1..=3 {
        event!("request {request}");
        match retry.run(|| service.call(request)).await {
            Ok(answer) => event!("request {request}: ok, answer {answer}"),
            Err(err) => event!("request {request}: gave up: {err}"),
        }
    }
    Ok(())
}

async fn circuit_breaker(service: &FlakyService) -> Result<(), ConfigError> {
    event!("== circuit breaker: the service goes down for 700 ms, then recovers");
    let breaker = CircuitBreaker::builder()
        .name("flaky")
        .window(Duration::from_secs(1))
        .min_calls(5)
        .threshold_percent(50.0)
        .reset_timeout(Duration::from_millis(250))
        .call_timeout(Duration::from_millis(200))
        .on_transition(|name, t| event!("   breaker {name}: {} -> {}", t.from, t.to))
        .build()?;

    service.set_failure_percent(100);
    let outage = Instant::now();
    let (mut recovered, mut served) = (false, 0);
    for request in 1..=40 {
        if !recovered && outage.elapsed() >= Duration::from_millis(700) {
            service.set_failure_percent(0);
            recovered = true;
            event!("   (the service is back)");
        }
        match breaker.call(service.call(request)).await {
            Ok(_) => {
                event!("call {request}: ok");
                served += 1;
                if served == 3 {
                    break;
                }
            }
            Err(BreakerError::Open(open)) => match open.retry_after() {
                Some(wait) => event!(
                    "call {request}: refused at once, trial in {} ms",
                    wait.as_millis()
                ),
                None => event!("call {request}: refused at once, a trial is running"),
            },
            Err(err) => event!("call {request}: failed: {err}"),
        }
        sleep(Duration::from_millis(40)).await;
    }
    Ok(())
}

async fn bulkhead(service: &FlakyService) -> Result<(), ConfigError> {
    event!("== bulkhead: 10 calls at once; 3 may run, 2 may wait");
    service.set_failure_percent(0);
    let bulkhead = Bulkhead::with_name("flaky", 3, 2)?;
    let calls = (1..=10).map(|request| {
        let bulkhead = &bulkhead;
        async move {
            match bulkhead.call(service.call(request)).await {
                Ok(_) => event!("call {request}: served"),
                Err(full) => event!("call {request}: shed ({full})"),
            }
        }
    });
    let report = async {
        sleep(Duration::from_millis(10)).await;
        event!(
            "   gauges: {} in flight, {} queued",
            bulkhead.in_flight(),
            bulkhead.queued()
        );
    };
    futures::join!(futures::future::join_all(calls), report);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), ConfigError> {
    START.get_or_init(Instant::now);
    let service = FlakyService::new(60, Duration::from_millis(20), 55);
    retry_with_backoff(&service).await?;
    circuit_breaker(&service).await?;
    bulkhead(&service).await?;
    Ok(())
}
