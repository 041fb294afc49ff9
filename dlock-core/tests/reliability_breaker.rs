//! `CircuitBreaker`: every transition, on tokio's paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::reliability::{BreakerError, BreakerState, CircuitBreaker, CircuitBreakerBuilder};
use tokio::time::{Instant, advance, sleep};

use BreakerState::{Closed, HalfOpen, Open};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Log = Arc<Mutex<Vec<(BreakerState, BreakerState)>>>;

/// A breaker with a small minimum of calls, and a log of its transitions.
fn breaker(
    configure: impl FnOnce(CircuitBreakerBuilder) -> CircuitBreakerBuilder,
) -> (CircuitBreaker, Log) {
    let log = Log::default();
    let sink = Arc::clone(&log);
    let builder = CircuitBreaker::builder()
        .min_calls(4)
        .on_transition(move |_, t| sink.lock().expect("not poisoned").push((t.from, t.to)));
    let breaker = configure(builder).build().expect("valid");
    (breaker, log)
}

fn transitions(log: &Log) -> Vec<(BreakerState, BreakerState)> {
    log.lock().expect("not poisoned").clone()
}

fn record(breaker: &CircuitBreaker, successes: usize, failures: usize) {
    for _ in 0..successes {
        breaker.try_acquire_permit().expect("closed").success();
    }
    for _ in 0..failures {
        breaker.try_acquire_permit().expect("closed").failure();
    }
}

/// Trips the breaker: four failures reach both the minimum and the threshold.
fn trip(breaker: &CircuitBreaker) {
    record(breaker, 0, 4);
    assert_eq!(breaker.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn opens_when_the_error_share_reaches_the_threshold() {
    let (breaker, log) = breaker(|b| b.min_calls(10).threshold_percent(50.0));
    record(&breaker, 5, 4);
    assert_eq!(breaker.state(), Closed, "9 calls, 44 % failed");
    record(&breaker, 0, 1);
    assert_eq!(breaker.state(), Open, "10 calls, 50 % failed");
    assert_eq!(transitions(&log), [(Closed, Open)]);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_the_threshold() {
    let (breaker, log) = breaker(|b| b.threshold_percent(50.0));
    record(&breaker, 51, 49);
    assert_eq!(breaker.state(), Closed);
    assert!(transitions(&log).is_empty());
}

#[tokio::test(start_paused = true)]
async fn below_the_minimum_of_calls_it_never_opens() {
    let (breaker, log) = breaker(|b| b.min_calls(10));
    record(&breaker, 0, 9);
    assert_eq!(
        breaker.state(),
        Closed,
        "9 failures out of 9, but fewer than 10 calls"
    );
    assert!(transitions(&log).is_empty());
}

#[tokio::test(start_paused = true)]
async fn open_refuses_at_once_without_running_the_call() {
    let (breaker, _) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(2 * SEC).await;

    let open = breaker.try_acquire_permit().expect_err("open");
    assert_eq!(open.retry_after(), Some(3 * SEC));

    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let start = Instant::now();
    let result = breaker
        .call(async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
    assert!(
        result.as_ref().is_err_and(BreakerError::is_open),
        "{result:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the call is not run");
    assert_eq!(start.elapsed(), Duration::ZERO, "no waiting");
}

#[tokio::test(start_paused = true)]
async fn half_open_after_the_reset_timeout() {
    let (breaker, log) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(5 * SEC - MS).await;
    assert_eq!(breaker.state(), Open);
    advance(MS).await;
    assert_eq!(breaker.state(), HalfOpen);
    assert_eq!(transitions(&log), [(Closed, Open), (Open, HalfOpen)]);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_one_trial_through() {
    let (breaker, _) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(5 * SEC).await;

    let trial = breaker.try_acquire_permit().expect("the trial");
    assert!(trial.is_trial());
    let second = breaker.try_acquire_permit().expect_err("only one trial");
    assert_eq!(second.retry_after(), None, "a trial is running");

    // A trial dropped without a verdict (cancelled) frees the slot for another.
    drop(trial);
    assert_eq!(breaker.state(), HalfOpen);
    assert!(
        breaker
            .try_acquire_permit()
            .expect("a new trial")
            .is_trial()
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_in_half_open_are_refused_while_the_trial_runs() {
    let (breaker, _) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(5 * SEC).await;

    let slow_trial = breaker.call(async {
        sleep(100 * MS).await;
        Ok::<_, ()>("trial")
    });
    let others = async {
        let mut refused = 0;
        for _ in 0..10 {
            if breaker.call(async { Ok::<_, ()>("other") }).await.is_err() {
                refused += 1;
            }
        }
        refused
    };
    let (trial, refused) = tokio::join!(slow_trial, others);
    assert_eq!(trial.ok(), Some("trial"));
    assert_eq!(refused, 10);
    assert_eq!(breaker.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_successful_trial_closes_with_a_fresh_window() {
    let (breaker, log) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(5 * SEC).await;
    breaker.try_acquire_permit().expect("the trial").success();

    assert_eq!(breaker.state(), Closed);
    assert_eq!(
        transitions(&log),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    record(&breaker, 0, 3);
    assert_eq!(
        breaker.state(),
        Closed,
        "the failures before the trip are forgotten"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_again_for_a_full_reset_timeout() {
    let (breaker, log) = breaker(|b| b.reset_timeout(5 * SEC));
    trip(&breaker);
    advance(5 * SEC).await;
    breaker.try_acquire_permit().expect("the trial").failure();

    assert_eq!(breaker.state(), Open);
    let open = breaker.try_acquire_permit().expect_err("open again");
    assert_eq!(open.retry_after(), Some(5 * SEC));
    assert_eq!(
        transitions(&log),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_inside_the_window_add_up() {
    let (breaker, _) = breaker(|b| b.window(10 * SEC).buckets(10));
    record(&breaker, 0, 3);
    advance(9 * SEC).await;
    record(&breaker, 0, 1);
    assert_eq!(breaker.state(), Open, "all four failures are within 10 s");
}

#[tokio::test(start_paused = true)]
async fn old_failures_age_out_of_the_window() {
    let (breaker, log) = breaker(|b| b.window(10 * SEC).buckets(10));
    record(&breaker, 0, 3);
    advance(10 * SEC).await;
    record(&breaker, 0, 1);
    assert_eq!(breaker.state(), Closed, "the first three left the window");
    record(&breaker, 0, 2);
    assert_eq!(
        breaker.state(),
        Closed,
        "three calls in the window, below the minimum"
    );
    record(&breaker, 0, 1);
    assert_eq!(breaker.state(), Open);
    assert_eq!(transitions(&log), [(Closed, Open)]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_counts_as_a_failure() {
    let (breaker, log) = breaker(|b| b.min_calls(1).call_timeout(SEC));
    let start = Instant::now();
    let result = breaker.call(std::future::pending::<Result<(), ()>>()).await;
    let Err(BreakerError::Timeout(elapsed)) = result else {
        panic!("expected a timeout, got {result:?}");
    };
    assert_eq!(elapsed.limit(), SEC);
    assert_eq!(start.elapsed(), SEC);
    assert_eq!(breaker.state(), Open);
    assert_eq!(transitions(&log), [(Closed, Open)]);
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_is_returned_and_counted() {
    let (breaker, _) = breaker(|b| b.min_calls(1));
    let result = breaker.call(async { Err::<(), _>("refused") }).await;
    assert!(
        result
            .as_ref()
            .is_err_and(|e| !e.is_open() && !e.is_timeout())
    );
    assert_eq!(
        result.err().and_then(BreakerError::into_inner),
        Some("refused")
    );
    assert_eq!(breaker.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn verdicts_from_an_earlier_phase_are_ignored() {
    let (breaker, log) = breaker(|b| b.reset_timeout(5 * SEC));
    let late = breaker.try_acquire_permit().expect("closed");
    trip(&breaker);
    advance(5 * SEC).await;
    let trial = breaker.try_acquire_permit().expect("the trial");
    late.success();
    assert_eq!(
        breaker.state(),
        HalfOpen,
        "a call let through before the trip cannot close it"
    );
    trial.failure();
    assert_eq!(
        transitions(&log),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_defaults_are_3s_timeout_50_percent_10_calls_5s_reset() {
    let breaker = CircuitBreaker::new("defaults");
    assert_eq!(breaker.call_timeout(), 3 * SEC);
    record(&breaker, 1, 8);
    assert_eq!(
        breaker.state(),
        Closed,
        "9 calls are below the minimum of 10"
    );
    record(&breaker, 1, 0);
    assert_eq!(breaker.state(), Open, "5 of 10 failed in the 10 s window");
    let open = breaker.try_acquire_permit().expect_err("open");
    assert_eq!(open.retry_after(), Some(5 * SEC));
}

#[test]
fn call_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let breaker = CircuitBreaker::new("send");
    assert_send(breaker.call(async { Ok::<_, std::io::Error>(()) }));
}
