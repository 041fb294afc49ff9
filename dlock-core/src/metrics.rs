//! Metric names, emitted through the `metrics` facade: install any recorder
//! (Prometheus, StatsD, ...) to collect them. Every metric carries a `backend` label.

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

pub(crate) fn acquire_outcome(backend: &'static str, outcome: &'static str) {
    metrics::counter!(ACQUIRE_TOTAL, "backend" => backend, "outcome" => outcome).increment(1);
}

pub(crate) fn contended(backend: &'static str) {
    metrics::counter!(CONTENDED_TOTAL, "backend" => backend).increment(1);
}

pub(crate) fn acquire_wait(backend: &'static str, seconds: f64) {
    metrics::histogram!(ACQUIRE_WAIT_SECONDS, "backend" => backend).record(seconds);
}

pub(crate) fn hold(backend: &'static str, seconds: f64) {
    metrics::histogram!(HOLD_SECONDS, "backend" => backend).record(seconds);
}

pub(crate) fn lease_lost(backend: &'static str) {
    metrics::counter!(LEASE_LOST_TOTAL, "backend" => backend).increment(1);
}

pub(crate) fn extend_failed(backend: &'static str) {
    metrics::counter!(EXTEND_FAILED_TOTAL, "backend" => backend).increment(1);
}

/// Counts a write refused by a fence gate; for gate implementations.
pub fn fence_rejected(gate: &'static str) {
    metrics::counter!(FENCE_REJECTED_TOTAL, "gate" => gate).increment(1);
}
