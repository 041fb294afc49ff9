//! `Retry`: exact backoff on the paused clock, the hook, the predicate, and the
//! spread of jittered retries over many clients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::reliability::{Jitter, Retry};
use futures::future::join_all;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Runs `retry` against an operation that fails with the given errors in turn, then
/// succeeds; returns the result and the offset of each attempt from the start.
async fn run_failing(
    retry: &Retry<String>,
    errors: &[&str],
) -> (Result<usize, String>, Vec<Duration>) {
    let start = Instant::now();
    let mut attempts = Vec::new();
    let result = retry
        .run(|| {
            let n = attempts.len();
            attempts.push(start.elapsed());
            let result = match errors.get(n) {
                Some(err) => Err(err.to_string()),
                None => Ok(n + 1),
            };
            async move { result }
        })
        .await;
    (result, attempts)
}

#[tokio::test(start_paused = true)]
async fn the_default_is_immediate_then_1_2_4_seconds() {
    let retry = Retry::default();
    let (result, attempts) = run_failing(&retry, &["a", "b", "c", "d", "e"]).await;

    assert_eq!(
        result,
        Err("d".to_string()),
        "the last error after 3 retries"
    );
    assert_eq!(attempts, [Duration::ZERO, SEC, 3 * SEC, 7 * SEC]);
    let delays: Vec<_> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(delays, [SEC, 2 * SEC, 4 * SEC]);
}

#[tokio::test(start_paused = true)]
async fn success_stops_retrying() {
    let (result, attempts) = run_failing(&Retry::default(), &["a"]).await;
    assert_eq!(result, Ok(2));
    assert_eq!(attempts, [Duration::ZERO, SEC]);
}

#[test]
fn delays_follow_base_factor_and_cap() {
    let retry = Retry::<()>::builder()
        .retries(6)
        .base_delay(100 * MS)
        .factor(3.0)
        .max_delay(SEC)
        .build()
        .expect("valid");
    let delays: Vec<_> = retry.delays().collect();
    assert_eq!(
        delays,
        [100 * MS, 300 * MS, 900 * MS, SEC, SEC, SEC],
        "exponential, then capped"
    );
    assert_eq!(
        Retry::<()>::default().delays().collect::<Vec<_>>(),
        [SEC, 2 * SEC, 4 * SEC]
    );
}

#[tokio::test(start_paused = true)]
async fn a_custom_progression_sleeps_exactly_its_delays() {
    let retry = Retry::builder()
        .retries(4)
        .base_delay(250 * MS)
        .factor(2.0)
        .max_delay(SEC)
        .build()
        .expect("valid");
    let (result, attempts) = run_failing(&retry, &["a"; 9]).await;
    assert!(result.is_err());
    let delays: Vec<_> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(delays, [250 * MS, 500 * MS, SEC, SEC]);
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_attempt() {
    let retry = Retry::builder().retries(0).build().expect("valid");
    let (result, attempts) = run_failing(&retry, &["a", "b"]).await;
    assert_eq!(result, Err("a".to_string()));
    assert_eq!(attempts, [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn on_retry_gets_the_retry_number_and_the_error_before_each_retry() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let start = Instant::now();
    let retry = Retry::builder()
        .on_retry(move |attempt, err: &String| {
            let mut seen = seen.lock().expect("not poisoned");
            seen.push((attempt, err.clone(), start.elapsed()));
        })
        .build()
        .expect("valid");

    let (result, _) = run_failing(&retry, &["e1", "e2", "e3"]).await;

    assert_eq!(result, Ok(4), "the third retry succeeds");
    let calls = calls.lock().expect("not poisoned").clone();
    assert_eq!(
        calls,
        [
            (1, "e1".to_string(), Duration::ZERO),
            (2, "e2".to_string(), SEC),
            (3, "e3".to_string(), 3 * SEC),
        ],
        "called right after each failure, before the sleep"
    );
}

#[tokio::test(start_paused = true)]
async fn the_predicate_stops_retrying_at_once() {
    let hooks = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&hooks);
    let retry = Retry::builder()
        .when(|err: &String| err != "fatal")
        .on_retry(move |_, _| *counted.lock().expect("not poisoned") += 1)
        .build()
        .expect("valid");

    let (result, attempts) = run_failing(&retry, &["transient", "fatal", "transient"]).await;

    assert_eq!(result, Err("fatal".to_string()));
    assert_eq!(
        attempts,
        [Duration::ZERO, SEC],
        "no sleep after the fatal error"
    );
    assert_eq!(
        *hooks.lock().expect("not poisoned"),
        1,
        "only the retried error"
    );
}

#[test]
fn a_seed_makes_jitter_reproducible() {
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let retry = Retry::<()>::builder()
            .retries(8)
            .jitter(jitter)
            .seed(42)
            .build()
            .expect("valid");
        let first: Vec<_> = retry.delays().collect();
        assert_eq!(first.len(), 8);
        assert_eq!(first, retry.delays().collect::<Vec<_>>(), "{jitter:?}");
    }
}

/// 100 clients, each with its own seed, fail at the same instant; returns when each
/// one's first retry started, as offsets from that instant.
async fn first_retries(jitter: Jitter) -> Vec<Duration> {
    let start = Instant::now();
    let clients = (0..100u64).map(|seed| async move {
        let retry = Retry::builder()
            .retries(1)
            .base_delay(SEC)
            .max_delay(10 * SEC)
            .jitter(jitter)
            .seed(seed)
            .build()
            .expect("valid");
        let mut attempts = Vec::new();
        let _ = retry
            .run(|| {
                attempts.push(start.elapsed());
                async { Err::<(), ()>(()) }
            })
            .await;
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0], Duration::ZERO, "all fail at the same instant");
        attempts[1]
    });
    join_all(clients).await
}

/// The retries cover `low..=high`: none outside, most of its width spanned, and no
/// tenth of it holding more than a quarter of the clients.
fn assert_spread(retries: &[Duration], low: Duration, high: Duration) {
    let width = high - low;
    assert!(
        retries.iter().all(|r| (low..=high).contains(r)),
        "{retries:?}"
    );
    let min = retries.iter().min().copied().unwrap_or_default();
    let max = retries.iter().max().copied().unwrap_or_default();
    assert!(
        max - min >= width.mul_f64(0.8),
        "span {:?} of {width:?}",
        max - min
    );

    let mut buckets = [0usize; 10];
    for r in retries {
        let i = ((*r - low).as_secs_f64() / width.as_secs_f64() * 10.0) as usize;
        buckets[i.min(9)] += 1;
    }
    assert!(buckets.iter().all(|&n| n <= 25), "clustered: {buckets:?}");
}

#[tokio::test(start_paused = true)]
async fn without_jitter_all_clients_retry_together() {
    let retries = first_retries(Jitter::None).await;
    assert!(retries.iter().all(|&r| r == SEC), "the thundering herd");
}

#[tokio::test(start_paused = true)]
async fn full_jitter_spreads_first_retries_over_zero_to_base() {
    let retries = first_retries(Jitter::Full).await;
    assert_spread(&retries, Duration::ZERO, SEC);
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_spreads_first_retries_over_base_to_three_base() {
    let retries = first_retries(Jitter::Decorrelated).await;
    assert_spread(&retries, SEC, 3 * SEC);
}

#[test]
fn run_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let retry = Retry::<std::io::Error>::default();
    assert_send(retry.run(|| async { Ok::<_, std::io::Error>(()) }));
}
