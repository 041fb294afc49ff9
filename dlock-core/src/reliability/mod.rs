//! Reliability helpers, used by the lock machinery and offered to applications.
//!
//! Each helper lives in its own file and has its own typed errors:
//!
//! - [`timeout()`]: run a future with a time limit; on expiry the future is dropped
//!   and the caller gets [`Elapsed`]. A thin layer over `tokio::time::timeout`.
//! - [`Retry`]: retry a failing operation with exponential backoff (by default
//!   immediate, then 1 s, 2 s, 4 s), an `on_retry` hook, a `when` predicate for the
//!   errors worth retrying, and optional [`Jitter`]. The loop is `backon`'s
//!   (`Retryable`), well tested and cancel-safe; we supply the delays. backon's own
//!   jitter adds a random share to each delay, which is neither full nor decorrelated
//!   jitter, so [`FullJitter`] and [`DecorrelatedJitter`] are written here as plain
//!   iterators of delays, which is all a `backon::Backoff` is.
//! - [`Bulkhead`]: at most N calls at once, a bounded queue, and rejection at once
//!   with [`BulkheadFull`] beyond it; gauges of calls in flight and queued. Built on
//!   `tokio::sync::Semaphore`, which is fair (queued callers are served in order and
//!   newcomers cannot overtake them) and cancel-safe; the queue bound is a counter
//!   beside it.
//! - [`CircuitBreaker`]: closed, open and half-open, over a time-based rolling window
//!   of outcomes. Written by hand: it is small, and we need three things together
//!   that we did not find in one crate: tokio's clock (so tests run on the paused
//!   clock), exactly one trial call when half-open, and a way to ask "may I call this
//!   server now?" without wrapping a future, for a Redlock client that keeps one
//!   breaker per server ([`CircuitBreaker::try_acquire_permit`]).
//!
//! All timing uses `tokio::time`, so tests run on tokio's paused clock.
//! Configuration is checked when a helper is built and refused with a
//! [`ConfigError`]; calls never panic on bad settings.

mod breaker;
mod bulkhead;
mod error;
mod jitter;
mod retry;
mod timeout;

pub use breaker::{
    BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL, BreakerPermit, BreakerState, CircuitBreaker,
    CircuitBreakerBuilder, Transition,
};
pub use bulkhead::{
    BULKHEAD_IN_FLIGHT, BULKHEAD_QUEUED, BULKHEAD_REJECTED_TOTAL, Bulkhead, BulkheadPermit,
};
pub use error::{BreakerError, BreakerOpen, BulkheadFull, ConfigError, Elapsed};
pub use jitter::{DecorrelatedJitter, FullJitter};
pub use retry::{Delays, Jitter, Retry, RetryBuilder};
pub use timeout::timeout;
