//! Metric names, emitted through the `metrics` facade (version 0.24): install any
//! recorder of that version (Prometheus, StatsD, ...) to collect them, then call
//! [`describe`] so the exporter writes their help text. The lock metrics carry a
//! `backend` label, and a `group` label for acquisitions that name one
//! ([`Acquire::group`](crate::Acquire::group)); never the key. The reliability
//! helpers' own metrics (`dlock_bulkhead_*`, `dlock_breaker_*`, see
//! [`reliability`](crate::reliability)) carry the helper's `name`.

use std::sync::Once;

/// Counter: acquisitions by `outcome` (`acquired`, `busy`, `timeout`, `error`).
/// Failures are the `timeout` and `error` outcomes.
pub const ACQUIRE_TOTAL: &str = "dlock_acquire_total";
/// Counter: acquisitions that found the key held and had to wait.
pub const CONTENDED_TOTAL: &str = "dlock_contended_total";
/// Histogram, seconds: time from the start of `acquire` to the grant.
pub const ACQUIRE_WAIT_SECONDS: &str = "dlock_acquire_wait_seconds";
/// Gauge: leases held now, from grant to release, drop or loss.
pub const HELD: &str = "dlock_held";
/// Histogram, seconds: how long leases were held, from grant to release or drop.
pub const HOLD_SECONDS: &str = "dlock_hold_seconds";
/// Counter: releases by `outcome` (`released`; `lost`, the lease was gone first;
/// `error`; `background`, a dropped lease; `shutdown`).
pub const RELEASE_TOTAL: &str = "dlock_release_total";
/// Counter: leases lost, by `reason` (`expired`, `taken`, `gone`, `unreachable`,
/// `shut_down`).
pub const LEASE_LOST_TOTAL: &str = "dlock_lease_lost_total";
/// Counter: extensions that failed without losing the lease yet (keep-alive retries).
pub const EXTEND_FAILED_TOTAL: &str = "dlock_extend_failed_total";
/// Counter: writes a fence gate refused as stale, labelled by `gate`.
pub const FENCE_REJECTED_TOTAL: &str = "dlock_fence_rejected_total";
/// Gauge: 1 while this process leads the election named by the `election` label, else 0.
pub const ELECTION_LEADER: &str = "dlock_election_leader";
/// Counter: leadership changes seen by this process, by `election` and `to`
/// (`leader`, `follower`).
pub const ELECTION_TRANSITIONS_TOTAL: &str = "dlock_election_transitions_total";

/// Registers every metric's unit and help text with the installed recorder, once.
/// The machinery calls it at the first grant; call it yourself right after
/// installing a recorder to have the help text before any lock is taken.
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            ACQUIRE_TOTAL,
            "Lock acquisitions, by outcome (acquired, busy, timeout, error)."
        );
        describe_counter!(
            CONTENDED_TOTAL,
            "Acquisitions that found the key held and waited."
        );
        describe_histogram!(
            ACQUIRE_WAIT_SECONDS,
            Unit::Seconds,
            "Time from the start of a waiting acquisition to the grant."
        );
        describe_gauge!(HELD, "Leases held now.");
        describe_histogram!(
            HOLD_SECONDS,
            Unit::Seconds,
            "How long leases were held, from grant to release or drop."
        );
        describe_counter!(
            RELEASE_TOTAL,
            "Lease releases, by outcome (released, lost, error, background, shutdown)."
        );
        describe_counter!(
            LEASE_LOST_TOTAL,
            "Leases lost, by reason (expired, taken, gone, unreachable, shut_down)."
        );
        describe_counter!(
            EXTEND_FAILED_TOTAL,
            "Lease extensions that failed before the lease was lost."
        );
        describe_counter!(
            FENCE_REJECTED_TOTAL,
            "Writes a fence gate refused because their token was stale."
        );
        describe_gauge!(
            ELECTION_LEADER,
            "1 while this process leads the election, else 0."
        );
        describe_counter!(
            ELECTION_TRANSITIONS_TOTAL,
            "Leadership changes of this process, by election and new role."
        );
    });
}

/// The labels every lock metric carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Labels {
    pub(crate) backend: &'static str,
    pub(crate) group: Option<&'static str>,
}

/// Emits with the labels: without a group, a `backend` label built at compile time
/// for the backends dlock ships, so the hot path allocates and hashes nothing;
/// with a group, or another backend name, the general path. (Names are literals
/// here, as the macros need; the constants above document them.)
macro_rules! emit {
    ($kind:ident, $name:literal, $labels:expr $(, $k:literal => $v:literal)*; $op:ident($($arg:expr)?)) => {{
        let labels: Labels = $labels;
        match (labels.group, labels.backend) {
            (None, "memory") => metrics::$kind!($name, "backend" => "memory" $(, $k => $v)*).$op($($arg)?),
            (None, "redis") => metrics::$kind!($name, "backend" => "redis" $(, $k => $v)*).$op($($arg)?),
            (None, "redlock") => metrics::$kind!($name, "backend" => "redlock" $(, $k => $v)*).$op($($arg)?),
            (None, "etcd") => metrics::$kind!($name, "backend" => "etcd" $(, $k => $v)*).$op($($arg)?),
            (None, other) => metrics::$kind!($name, "backend" => other $(, $k => $v)*).$op($($arg)?),
            (Some(group), backend) => metrics::$kind!($name, "backend" => backend, "group" => group $(, $k => $v)*).$op($($arg)?),
        }
    }};
}

/// How an acquisition ended, for [`ACQUIRE_TOTAL`].
#[derive(Clone, Copy)]
pub(crate) enum AcquireOutcome {
    Acquired,
    Busy,
    Timeout,
    Error,
}

// Label values are literals in every arm below, so the common path builds its
// metric key at compile time: a value computed at run time costs an allocation
// per call, which on the in-process backend is a third of an acquisition.

pub(crate) fn acquire_outcome(labels: Labels, outcome: AcquireOutcome) {
    match outcome {
        AcquireOutcome::Acquired => {
            emit!(counter, "dlock_acquire_total", labels, "outcome" => "acquired"; increment(1))
        }
        AcquireOutcome::Busy => {
            emit!(counter, "dlock_acquire_total", labels, "outcome" => "busy"; increment(1))
        }
        AcquireOutcome::Timeout => {
            emit!(counter, "dlock_acquire_total", labels, "outcome" => "timeout"; increment(1))
        }
        AcquireOutcome::Error => {
            emit!(counter, "dlock_acquire_total", labels, "outcome" => "error"; increment(1))
        }
    }
}

pub(crate) fn contended(labels: Labels) {
    emit!(counter, "dlock_contended_total", labels; increment(1));
}

pub(crate) fn acquire_wait(labels: Labels, seconds: f64) {
    emit!(histogram, "dlock_acquire_wait_seconds", labels; record(seconds));
}

/// A lease granted (`+1`) or ended (`-1`).
pub(crate) fn held(labels: Labels, change: f64) {
    emit!(gauge, "dlock_held", labels; increment(change));
}

pub(crate) fn hold(labels: Labels, seconds: f64) {
    emit!(histogram, "dlock_hold_seconds", labels; record(seconds));
}

/// How a release ended, for [`RELEASE_TOTAL`].
#[derive(Clone, Copy)]
pub(crate) enum ReleaseOutcome {
    Released,
    Lost,
    Error,
    Background,
    Shutdown,
}

pub(crate) fn release(labels: Labels, outcome: ReleaseOutcome) {
    match outcome {
        ReleaseOutcome::Released => {
            emit!(counter, "dlock_release_total", labels, "outcome" => "released"; increment(1))
        }
        ReleaseOutcome::Lost => {
            emit!(counter, "dlock_release_total", labels, "outcome" => "lost"; increment(1))
        }
        ReleaseOutcome::Error => {
            emit!(counter, "dlock_release_total", labels, "outcome" => "error"; increment(1))
        }
        ReleaseOutcome::Background => {
            emit!(counter, "dlock_release_total", labels, "outcome" => "background"; increment(1))
        }
        ReleaseOutcome::Shutdown => {
            emit!(counter, "dlock_release_total", labels, "outcome" => "shutdown"; increment(1))
        }
    }
}

pub(crate) fn lease_lost(labels: Labels, reason: crate::LossReason) {
    use crate::LossReason::*;
    match reason {
        Expired => {
            emit!(counter, "dlock_lease_lost_total", labels, "reason" => "expired"; increment(1))
        }
        Taken => {
            emit!(counter, "dlock_lease_lost_total", labels, "reason" => "taken"; increment(1))
        }
        Gone => emit!(counter, "dlock_lease_lost_total", labels, "reason" => "gone"; increment(1)),
        Unreachable => {
            emit!(counter, "dlock_lease_lost_total", labels, "reason" => "unreachable"; increment(1))
        }
        ShutDown => {
            emit!(counter, "dlock_lease_lost_total", labels, "reason" => "shut_down"; increment(1))
        }
    }
}

pub(crate) fn extend_failed(labels: Labels) {
    emit!(counter, "dlock_extend_failed_total", labels; increment(1));
}

/// Counts a write refused by a fence gate; for gate implementations.
pub fn fence_rejected(gate: &'static str) {
    metrics::counter!(FENCE_REJECTED_TOTAL, "gate" => gate).increment(1);
}

/// Records this process's role in the election `name`; for election implementations.
pub fn election_role(name: &str, leader: bool) {
    let election = name.to_owned();
    metrics::gauge!(ELECTION_LEADER, "election" => election.clone()).set(if leader {
        1.0
    } else {
        0.0
    });
    let to = if leader { "leader" } else { "follower" };
    metrics::counter!(ELECTION_TRANSITIONS_TOTAL, "election" => election, "to" => to).increment(1);
}
