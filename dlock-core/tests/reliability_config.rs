//! Bad settings are refused at construction with a typed `ConfigError`, never a panic.

use std::time::Duration;

use dlock_core::reliability::{Bulkhead, CircuitBreaker, ConfigError, Jitter, Retry};

const SEC: Duration = Duration::from_secs(1);

fn retry(
    f: impl FnOnce(
        dlock_core::reliability::RetryBuilder<()>,
    ) -> dlock_core::reliability::RetryBuilder<()>,
) -> Result<(), ConfigError> {
    f(Retry::builder()).build().map(drop)
}

fn breaker(
    f: impl FnOnce(
        dlock_core::reliability::CircuitBreakerBuilder,
    ) -> dlock_core::reliability::CircuitBreakerBuilder,
) -> Result<(), ConfigError> {
    f(CircuitBreaker::builder()).build().map(drop)
}

#[test]
fn every_bad_setting_gets_its_error() {
    use ConfigError::*;
    let zero = |what| Zero { what };
    let cases: Vec<(&str, Result<(), ConfigError>, ConfigError)> = vec![
        (
            "bulkhead: no concurrency",
            Bulkhead::new(0, 10).map(drop),
            zero("max_concurrent"),
        ),
        (
            "bulkhead: beyond the semaphore",
            Bulkhead::new(usize::MAX, 0).map(drop),
            TooLarge {
                what: "max_concurrent",
                value: usize::MAX,
                max: tokio::sync::Semaphore::MAX_PERMITS,
            },
        ),
        (
            "retry: zero base delay",
            retry(|r| r.base_delay(Duration::ZERO)),
            zero("base_delay"),
        ),
        (
            "retry: shrinking factor",
            retry(|r| r.factor(0.5)),
            Factor { factor: 0.5 },
        ),
        (
            "retry: negative factor",
            retry(|r| r.factor(-2.0)),
            Factor { factor: -2.0 },
        ),
        (
            "retry: infinite factor",
            retry(|r| r.factor(f64::INFINITY)),
            Factor {
                factor: f64::INFINITY,
            },
        ),
        (
            "retry: max below base",
            retry(|r| r.base_delay(2 * SEC).max_delay(SEC).jitter(Jitter::Full)),
            MaxBelowBase {
                base: 2 * SEC,
                max: SEC,
            },
        ),
        (
            "breaker: zero call timeout",
            breaker(|b| b.call_timeout(Duration::ZERO)),
            zero("call_timeout"),
        ),
        (
            "breaker: negative threshold",
            breaker(|b| b.threshold_percent(-1.0)),
            Threshold { percent: -1.0 },
        ),
        (
            "breaker: threshold over 100",
            breaker(|b| b.threshold_percent(100.5)),
            Threshold { percent: 100.5 },
        ),
        (
            "breaker: zero reset timeout",
            breaker(|b| b.reset_timeout(Duration::ZERO)),
            zero("reset_timeout"),
        ),
        (
            "breaker: zero window",
            breaker(|b| b.window(Duration::ZERO)),
            zero("window"),
        ),
        (
            "breaker: zero buckets",
            breaker(|b| b.buckets(0)),
            zero("buckets"),
        ),
        (
            "breaker: zero minimum of calls",
            breaker(|b| b.min_calls(0)),
            zero("min_calls"),
        ),
        (
            "breaker: too many buckets",
            breaker(|b| b.buckets(1001)),
            TooLarge {
                what: "buckets",
                value: 1001,
                max: 1000,
            },
        ),
        (
            "breaker: buckets narrower than a nanosecond",
            breaker(|b| b.window(Duration::from_nanos(5)).buckets(6)),
            TooLarge {
                what: "buckets",
                value: 6,
                max: 5,
            },
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, Err(want), "{name}");
    }

    // NaN equals nothing, so match on the variant.
    assert!(matches!(retry(|r| r.factor(f64::NAN)), Err(Factor { .. })));
    assert!(matches!(
        breaker(|b| b.threshold_percent(f64::NAN)),
        Err(Threshold { .. })
    ));
}

#[test]
fn the_edges_of_the_valid_ranges_are_accepted() {
    assert!(Bulkhead::new(1, 0).is_ok());
    assert!(retry(|r| r.retries(0).factor(1.0).base_delay(SEC).max_delay(SEC)).is_ok());
    assert!(breaker(|b| b.threshold_percent(0.0).min_calls(1).buckets(1)).is_ok());
    assert!(breaker(|b| b.threshold_percent(100.0).buckets(1000)).is_ok());
    assert!(
        breaker(|b| b
            .call_timeout(Duration::MAX)
            .reset_timeout(Duration::MAX)
            .window(Duration::MAX))
        .is_ok()
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let err = Bulkhead::new(0, 1).map(drop).expect_err("refused");
    assert_eq!(err.to_string(), "max_concurrent must not be zero");
    let err = retry(|r| r.base_delay(2 * SEC).max_delay(SEC)).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "the maximum delay 1s is below the base delay 2s"
    );
}

#[tokio::test(start_paused = true)]
async fn extreme_but_valid_settings_do_not_panic() {
    // A reset timeout too long to add to the clock keeps the breaker open for good.
    let breaker = CircuitBreaker::builder()
        .min_calls(1)
        .reset_timeout(Duration::MAX)
        .window(Duration::MAX)
        .build()
        .expect("valid");
    breaker.try_acquire_permit().expect("closed").failure();
    let open = breaker.try_acquire_permit().expect_err("open");
    assert!(open.retry_after().is_some());

    // Unbounded growth saturates at the cap.
    let retry = Retry::<()>::builder()
        .retries(5000)
        .factor(10.0)
        .max_delay(Duration::MAX)
        .build()
        .expect("valid");
    assert!(retry.delays().all(|d| d >= SEC));
}
