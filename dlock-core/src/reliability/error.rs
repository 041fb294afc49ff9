//! The errors of the reliability helpers: one for bad configuration, one per way a
//! guarded call can be refused.

use std::time::Duration;

/// A helper was configured with values it cannot work with. Returned by the
/// constructors, never by a call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit, duration or count that must be positive is zero.
    #[error("{what} must not be zero")]
    Zero {
        /// The setting, for example `"max_concurrent"`.
        what: &'static str,
    },

    /// A count is above what the helper can hold.
    #[error("{what} is {value}; the maximum is {max}")]
    TooLarge {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: usize,
        /// The largest accepted value.
        max: usize,
    },

    /// The backoff factor is below 1 (delays would shrink) or not finite.
    #[error("the backoff factor is {factor}; it must be finite and at least 1")]
    Factor {
        /// The factor given.
        factor: f64,
    },

    /// The maximum delay is below the base delay.
    #[error("the maximum delay {max:?} is below the base delay {base:?}")]
    MaxBelowBase {
        /// The base delay given.
        base: Duration,
        /// The maximum delay given.
        max: Duration,
    },

    /// An error-rate threshold is outside 0..=100 %.
    #[error("the error threshold is {percent} %; it must be within 0..=100")]
    Threshold {
        /// The threshold given, in percent.
        percent: f64,
    },
}

/// A call ran longer than its time limit and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {limit:?}")]
pub struct Elapsed {
    pub(crate) limit: Duration,
}

impl Elapsed {
    /// The limit that passed.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// A bulkhead refused a call at once: every running slot and every queue slot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full: {max_concurrent} calls running and {max_queued} queued")]
pub struct BulkheadFull {
    pub(crate) max_concurrent: usize,
    pub(crate) max_queued: usize,
}

impl BulkheadFull {
    /// How many calls may run at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// How many calls may wait.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }
}

/// A circuit breaker refused a call at once, without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open")]
pub struct BreakerOpen {
    pub(crate) retry_after: Option<Duration>,
}

impl BreakerOpen {
    /// How long until the breaker lets a trial call through, or `None` while a
    /// trial call is already running (half-open).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Why a call through a circuit breaker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker is open: the call was not run.
    #[error(transparent)]
    Open(#[from] BreakerOpen),

    /// The call ran longer than the breaker's call timeout and was dropped;
    /// it counted as a failure.
    #[error(transparent)]
    Timeout(#[from] Elapsed),

    /// The call itself failed; it counted as a failure.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The breaker refused the call without running it; another node or a later
    /// attempt may do better.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerError::Open(_))
    }

    /// The call ran out of time; its outcome is unknown.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BreakerError::Timeout(_))
    }

    /// The call's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            _ => None,
        }
    }
}
