//! Metric names, emitted through the `metrics` facade: install any recorder
//! (Prometheus, StatsD, ...) to collect them. The lock metrics below carry a
//! `backend` label; the reliability helpers' own metrics (`dlock_bulkhead_*`,
//! `dlock_breaker_*`, see [`reliability`](crate::reliability)) carry the helper's `name`.

/// Counter: acquisitions by `outcome` (`acquired`, `busy`, `timeout`, `error`).
/// Failures are the `timeout` and `error` outcomes.
pub const ACQUIRE_TOTAL: &str = "dlock_acquire_total";
/// Counter: acquisitions that found the key held and had to wait.
pub const CONTENDED_TOTAL: &str = "dlock_contended_total";
/// Histogram, seconds: time from the start of `acquire` to the grant.
pub const ACQUIRE_WAIT_SECONDS: &str = "dlock_acquire_wait_seconds";
/// Histogram, seconds: how long leases were held, from grant to release or drop.
pub const HOLD_SECONDS: &str = "dlock_hold_seconds";
/// Counter: leases lost (expired unextended, taken, or keep-alive failing too long).
pub const LEASE_LOST_TOTAL: &str = "dlock_lease_lost_total";
/// Counter: extensions that failed without losing the lease yet (keep-alive retries).
pub const EXTEND_FAILED_TOTAL: &str = "dlock_extend_failed_total";
/// Counter: writes a fence gate refused as stale, labelled by `gate`.
pub const FENCE_REJECTED_TOTAL: &str = "dlock_fence_rejected_total";

/// Emits with a `backend` label built at compile time for the backends dlock ships,
/// so the hot path allocates and hashes nothing; other names take the general path.
/// (Names are literals here, as the macros need; the constants above document them.)
macro_rules! emit {
    ($kind:ident, $name:literal, $backend:expr $(, $k:literal => $v:literal)*; $op:ident($($arg:expr)?)) => {
        match $backend {
            "memory" => metrics::$kind!($name, "backend" => "memory" $(, $k => $v)*).$op($($arg)?),
            "redis" => metrics::$kind!($name, "backend" => "redis" $(, $k => $v)*).$op($($arg)?),
            "redlock" => metrics::$kind!($name, "backend" => "redlock" $(, $k => $v)*).$op($($arg)?),
            "etcd" => metrics::$kind!($name, "backend" => "etcd" $(, $k => $v)*).$op($($arg)?),
            other => metrics::$kind!($name, "backend" => other $(, $k => $v)*).$op($($arg)?),
        }
    };
}

/// How an acquisition ended, for [`ACQUIRE_TOTAL`].
#[derive(Clone, Copy)]
pub(crate) enum AcquireOutcome {
    Acquired,
    Busy,
    Timeout,
    Error,
}

pub(crate) fn acquire_outcome(backend: &'static str, outcome: AcquireOutcome) {
    match outcome {
        AcquireOutcome::Acquired => {
            emit!(counter, "dlock_acquire_total", backend, "outcome" => "acquired"; increment(1))
        }
        AcquireOutcome::Busy => {
            emit!(counter, "dlock_acquire_total", backend, "outcome" => "busy"; increment(1))
        }
        AcquireOutcome::Timeout => {
            emit!(counter, "dlock_acquire_total", backend, "outcome" => "timeout"; increment(1))
        }
        AcquireOutcome::Error => {
            emit!(counter, "dlock_acquire_total", backend, "outcome" => "error"; increment(1))
        }
    }
}

pub(crate) fn contended(backend: &'static str) {
    emit!(counter, "dlock_contended_total", backend; increment(1));
}

pub(crate) fn acquire_wait(backend: &'static str, seconds: f64) {
    emit!(histogram, "dlock_acquire_wait_seconds", backend; record(seconds));
}

pub(crate) fn hold(backend: &'static str, seconds: f64) {
    emit!(histogram, "dlock_hold_seconds", backend; record(seconds));
}

pub(crate) fn lease_lost(backend: &'static str) {
    emit!(counter, "dlock_lease_lost_total", backend; increment(1));
}

pub(crate) fn extend_failed(backend: &'static str) {
    emit!(counter, "dlock_extend_failed_total", backend; increment(1));
}

/// Counts a write refused by a fence gate; for gate implementations.
pub fn fence_rejected(gate: &'static str) {
    metrics::counter!(FENCE_REJECTED_TOTAL, "gate" => gate).increment(1);
}
