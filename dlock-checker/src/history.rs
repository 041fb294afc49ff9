//! The history: every operation as an invoke and its outcome, one JSON line per
//! event, stamped with `CLOCK_MONOTONIC` so events of several processes on one
//! kernel compare (`Instant` cannot be compared across processes).

use serde::{Deserialize, Serialize};

/// Nanoseconds on this kernel's monotonic clock.
pub fn now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or_default() * 1_000_000_000
        + u64::try_from(t.tv_nsec).unwrap_or_default()
}

/// One event of one worker's acquisition `acq` (numbered per worker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, on [`now`]'s clock.
    pub t: u64,
    /// The worker.
    pub worker: u32,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// Which register an operation touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    /// Read and written directly, trusting the lock alone.
    Plain,
    /// Read for update and written through the fence gate with the lease's token.
    Fenced,
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored.
    Ok,
    /// Refused by the gate: a newer token had been there.
    Stale,
    /// Failed, or its outcome is unknown.
    Failed,
}

/// The events, as the checker logs them. `acq` is the worker's acquisition number;
/// the other fields are as named.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// An acquisition was started.
    AcquireInvoke { acq: u64, ttl_ms: u64 },
    /// Granted, with this token.
    AcquireOk { acq: u64, fence: u64 },
    /// Definitely not granted (busy, refused).
    AcquireFail { acq: u64, error: String },
    /// Outcome unknown (timed out, connection lost): may or may not have been granted.
    AcquireUnknown { acq: u64, error: String },
    /// The critical section began (after the grant).
    Enter { acq: u64 },
    /// A register was read; `stale` if the gate refused the read.
    Read {
        acq: u64,
        register: Register,
        value: Option<u64>,
        stale: bool,
    },
    /// A register was written with `value`.
    Write {
        acq: u64,
        register: Register,
        value: u64,
        outcome: Outcome,
    },
    /// The critical section ended (before the release was sent).
    Exit { acq: u64 },
    /// The release was sent.
    ReleaseInvoke { acq: u64 },
    /// The release ended: `held` false if the lease had been lost.
    ReleaseDone { acq: u64, held: bool },
    /// The orchestrator started or ended a fault.
    Fault { fault: String, started: bool },
    /// The orchestrator observed what a fault did (a restart, a leader change).
    Observed { what: String },
}
