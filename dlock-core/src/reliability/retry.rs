//! Retry with exponential backoff, plain or jittered; `backon` drives the loop.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;

use super::{ConfigError, DecorrelatedJitter, FullJitter};

/// Retries after the first attempt, by default.
const DEFAULT_RETRIES: usize = 3;
/// The delay before the first retry, by default.
const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
/// How much each delay grows over the one before, by default.
const DEFAULT_FACTOR: f64 = 2.0;
/// The longest delay, by default.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// How delays are randomised, so that clients failing together do not retry together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `base * factor^n`, capped at the maximum.
    #[default]
    None,
    /// Uniform in `[0, base * factor^n]`, capped at the maximum (see [`FullJitter`]).
    Full,
    /// Uniform in `[base, previous * 3]`, capped at the maximum (see
    /// [`DecorrelatedJitter`]); the factor is not used.
    Decorrelated,
}

type OnRetry<E> = Arc<dyn Fn(usize, &E) + Send + Sync>;
type When<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// A retry policy: how often to retry a failing operation, how long to wait between
/// attempts, which errors are worth it, and whom to tell.
///
/// The default is the classic progression: the first attempt at once, then retries
/// after 1 s, 2 s and 4 s. Build other policies with [`Retry::builder`]; a policy is
/// cheap to clone and can be shared by many calls.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dlock_core::reliability::ConfigError> {
/// use std::time::Duration;
/// use dlock_core::reliability::{Jitter, Retry};
///
/// let retry = Retry::builder()
///     .retries(5)
///     .base_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(2))
///     .jitter(Jitter::Full)
///     .when(|err: &std::io::Error| err.kind() != std::io::ErrorKind::InvalidInput)
///     .on_retry(|attempt, err| eprintln!("retry {attempt} after: {err}"))
///     .build()?;
///
/// let mut calls = 0;
/// let answer = retry
///     .run(|| {
///         calls += 1;
///         let result = if calls < 3 { Err(std::io::Error::other("flaky")) } else { Ok(42) };
///         async move { result }
///     })
///     .await;
/// assert_eq!(answer.ok(), Some(42));
/// # Ok(()) }
/// ```
pub struct Retry<E> {
    retries: usize,
    base: Duration,
    factor: f64,
    max: Duration,
    jitter: Jitter,
    seed: Option<u64>,
    on_retry: Option<OnRetry<E>>,
    when: Option<When<E>>,
}

impl<E> Retry<E> {
    /// A policy to configure, starting from the defaults.
    pub fn builder() -> RetryBuilder<E> {
        RetryBuilder(Retry::default())
    }

    /// Retries after the first attempt.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// The delays this policy sleeps before each retry, in order. Each call starts a
    /// fresh sequence. The iterator is a `backon::Backoff`, so it also drives
    /// backon's own retry loops.
    pub fn delays(&self) -> Delays {
        let kind = match self.jitter {
            Jitter::None => DelaysKind::Exponential {
                base: self.base,
                factor: self.factor,
                max: self.max,
                attempt: 0,
                remaining: self.retries,
            },
            Jitter::Full => {
                let it = FullJitter::new(self.base, self.factor, self.max);
                let it = match self.seed {
                    Some(seed) => it.seed(seed),
                    None => it,
                };
                DelaysKind::Full(it.take_retries(self.retries))
            }
            Jitter::Decorrelated => {
                let it = DecorrelatedJitter::new(self.base, self.max);
                let it = match self.seed {
                    Some(seed) => it.seed(seed),
                    None => it,
                };
                DelaysKind::Decorrelated(it.take_retries(self.retries))
            }
        };
        Delays(kind)
    }

    /// Runs `op` until it succeeds, returns an error the `when` predicate refuses, or
    /// the retries are spent; then returns the last result. `op` makes a fresh future
    /// for each attempt.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        op.retry(self.delays())
            .when(|err| self.when.as_ref().is_none_or(|when| when(err)))
            .notify(|err, _delay| {
                attempt += 1;
                if let Some(hook) = &self.on_retry {
                    hook(attempt, err);
                }
            })
            .await
    }
}

impl<E> Default for Retry<E> {
    fn default() -> Self {
        Retry {
            retries: DEFAULT_RETRIES,
            base: DEFAULT_BASE_DELAY,
            factor: DEFAULT_FACTOR,
            max: DEFAULT_MAX_DELAY,
            jitter: Jitter::None,
            seed: None,
            on_retry: None,
            when: None,
        }
    }
}

// Manual impls: the hooks are shared, and `E` need not be `Clone` or `Debug`.
impl<E> Clone for Retry<E> {
    fn clone(&self) -> Self {
        Retry {
            on_retry: self.on_retry.clone(),
            when: self.when.clone(),
            ..*self
        }
    }
}

impl<E> fmt::Debug for Retry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("retries", &self.retries)
            .field("base_delay", &self.base)
            .field("factor", &self.factor)
            .field("max_delay", &self.max)
            .field("jitter", &self.jitter)
            .field("seed", &self.seed)
            .field("on_retry", &self.on_retry.is_some())
            .field("when", &self.when.is_some())
            .finish()
    }
}

/// Configures a [`Retry`]; [`build`](Self::build) checks the values.
pub struct RetryBuilder<E>(Retry<E>);

impl<E> Clone for RetryBuilder<E> {
    fn clone(&self) -> Self {
        RetryBuilder(self.0.clone())
    }
}

impl<E> fmt::Debug for RetryBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryBuilder").field(&self.0).finish()
    }
}

impl<E> RetryBuilder<E> {
    /// Retries after the first attempt (default 3). Zero means one attempt, no retry.
    pub fn retries(mut self, retries: usize) -> Self {
        self.0.retries = retries;
        self
    }

    /// The delay before the first retry (default 1 s); must not be zero.
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.0.base = base;
        self
    }

    /// How much each delay grows over the one before (default 2); at least 1.
    pub fn factor(mut self, factor: f64) -> Self {
        self.0.factor = factor;
        self
    }

    /// The longest delay (default 10 s); not below the base delay.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.0.max = max;
        self
    }

    /// How delays are randomised (default: not at all).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.0.jitter = jitter;
        self
    }

    /// A fixed seed for the jitter, for reproducible runs; by default each
    /// [`Retry::delays`] draws a seed from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = Some(seed);
        self
    }

    /// Called before each retry with the retry's number (from 1) and the error that
    /// caused it.
    pub fn on_retry(mut self, hook: impl Fn(usize, &E) + Send + Sync + 'static) -> Self {
        self.0.on_retry = Some(Arc::new(hook));
        self
    }

    /// Retries only errors for which `predicate` is true; others are returned at once.
    /// By default every error is retried.
    pub fn when(mut self, predicate: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.0.when = Some(Arc::new(predicate));
        self
    }

    /// Checks the values and returns the policy.
    pub fn build(self) -> Result<Retry<E>, ConfigError> {
        let r = &self.0;
        if r.base.is_zero() {
            return Err(ConfigError::Zero { what: "base_delay" });
        }
        if !r.factor.is_finite() || r.factor < 1.0 {
            return Err(ConfigError::Factor { factor: r.factor });
        }
        if r.max < r.base {
            return Err(ConfigError::MaxBelowBase {
                base: r.base,
                max: r.max,
            });
        }
        Ok(self.0)
    }
}

/// The delays of a [`Retry`] policy, one per retry; see [`Retry::delays`].
#[derive(Clone, Debug)]
pub struct Delays(DelaysKind);

#[derive(Clone, Debug)]
enum DelaysKind {
    Exponential {
        base: Duration,
        factor: f64,
        max: Duration,
        attempt: i32,
        remaining: usize,
    },
    Full(FullJitter),
    Decorrelated(DecorrelatedJitter),
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match &mut self.0 {
            DelaysKind::Exponential {
                base,
                factor,
                max,
                attempt,
                remaining,
            } => {
                *remaining = remaining.checked_sub(1)?;
                // In nanoseconds, so whole factors give exact delays (1 s, 2 s, 4 s).
                let nanos = base.as_nanos() as f64 * factor.powi(*attempt);
                *attempt = attempt.saturating_add(1);
                Some(if nanos < max.as_nanos() as f64 {
                    Duration::from_nanos(nanos.round() as u64)
                } else {
                    *max
                })
            }
            DelaysKind::Full(it) => it.next(),
            DelaysKind::Decorrelated(it) => it.next(),
        }
    }
}
