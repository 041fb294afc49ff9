//! The one error type of dlock, with the questions callers branch on.

use std::time::Duration;

/// A boxed error from a backend's client library, kept for downcasting.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong when taking, keeping or giving up a lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused before any I/O.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),

    /// The wait limit passed before the lock could be taken: it was held all
    /// along, or the backend kept failing, and then `cause` is its last error (and
    /// [`is_retryable`](Error::is_retryable) says whether trying later may help).
    #[error("timed out after waiting {waited:?} for the lock on `{key}`{}", Cause(.cause))]
    Timeout {
        /// The lock key.
        key: String,
        /// How long the caller waited.
        waited: Duration,
        /// The backend's last error, if the wait ended while it was failing.
        cause: Option<Box<Error>>,
    },

    /// One backend operation took longer than its timeout; its outcome is unknown.
    #[error("backend operation `{operation}` timed out after {after:?}")]
    OperationTimeout {
        /// The operation that timed out (`acquire`, `extend`, `release`, ...).
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
    },

    /// The lease is no longer held; `reason` says why: it expired, was taken by
    /// another holder, was deleted, the backend stayed unreachable until it ran out,
    /// or [`shutdown`](crate::LockExt::shutdown) released it.
    #[error("the lease on `{key}` was lost: {reason}")]
    LeaseLost {
        /// The lock key.
        key: String,
        /// Why.
        reason: LossReason,
    },

    /// The lock was shut down ([`shutdown`](crate::LockExt::shutdown)): it takes
    /// no new leases, and waiting acquisitions end with this.
    #[error("the lock was shut down; `{key}` was not acquired")]
    ShutDown {
        /// The lock key.
        key: String,
    },

    /// The lease was already released; it can be neither extended nor released again.
    #[error("the lease on `{key}` was already released")]
    LeaseReleased {
        /// The lock key.
        key: String,
    },

    /// The backend could not be reached (connection refused, reset, DNS, ...).
    #[error("backend unavailable: {source}")]
    Unavailable {
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The backend refused the credentials (wrong or missing password, no permission).
    #[error("backend refused the credentials: {source}")]
    Auth {
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The backend refused the operation because of what it found at the key
    /// (for example a Redis key of another type).
    #[error("conflict at `{key}`: {detail}")]
    Conflict {
        /// The lock key.
        key: String,
        /// What the backend found.
        detail: String,
    },

    /// A bulkhead in front of the backend refused the call at once: too many
    /// operations were in flight. Retry later.
    #[error("backend overloaded: {0}")]
    Overloaded(#[from] crate::reliability::BulkheadFull),

    /// Any other backend failure.
    #[error("backend error: {source}")]
    Backend {
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The backend does not offer this optional operation (see its
    /// [`Capabilities`](crate::Capabilities)).
    #[error("the `{backend}` backend does not support `{operation}`")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },

    /// So many nodes of a quorum backend (Redlock) are down, refusing, or behind an
    /// open circuit breaker that no quorum is possible: a definite answer, not
    /// retried within the caller's wait. Carries each failed node's error. Nodes
    /// that were only slow (timed out) are a retryable [`Error::Unavailable`]
    /// instead.
    #[error("no quorum possible: {} of the nodes failed ({})", .failures.len(), NodeFailures(.failures))]
    QuorumUnavailable {
        /// How many nodes a quorum needs.
        needed: usize,
        /// Each failed node (its address, without credentials) and its error.
        failures: Vec<(String, Error)>,
    },
}

/// Why a lease was lost: what [`Error::LeaseLost`] and
/// [`Lease::lost_reason`](crate::Lease::lost_reason) report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LossReason {
    /// `valid_until` passed with no extension: keep-alive was off, or no extension
    /// was due in time.
    Expired,
    /// The backend says another holder has the key.
    Taken,
    /// The backend no longer has the key: deleted, flushed, its lease revoked, or
    /// expired on the server before the extension arrived.
    Gone,
    /// Extensions kept failing to reach the backend until `valid_until` passed, or
    /// a release's outcome is unknown (it may have landed, and the key gone on):
    /// the lease is no longer valid, though the work before the release was.
    Unreachable,
    /// [`shutdown`](crate::LockExt::shutdown) released it.
    ShutDown,
}

impl LossReason {
    /// A short label for logs and metrics: `expired`, `taken`, `gone`,
    /// `unreachable` or `shut_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Expired => "expired",
            LossReason::Taken => "taken",
            LossReason::Gone => "gone",
            LossReason::Unreachable => "unreachable",
            LossReason::ShutDown => "shut_down",
        }
    }
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossReason::Expired => "it expired before it was extended",
            LossReason::Taken => "another holder has the key",
            LossReason::Gone => "the backend no longer has the key",
            LossReason::Unreachable => "the backend could not be reached to extend it in time",
            LossReason::ShutDown => "the lock was shut down",
        })
    }
}

/// Formats a timeout's cause as `: the backend failed: ...`, or nothing.
struct Cause<'a>(&'a Option<Box<Error>>);

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(cause) => write!(f, "; the backend kept failing: {cause}"),
            None => Ok(()),
        }
    }
}

/// Formats a quorum's node failures as `node: error; node: error`.
struct NodeFailures<'a>(&'a [(String, Error)]);

impl std::fmt::Display for NodeFailures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (node, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{node}: {error}")?;
        }
        Ok(())
    }
}

impl Error {
    /// Wraps a client library error as "backend unreachable".
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            source: source.into(),
        }
    }

    /// A lease lost for `reason`.
    pub fn lease_lost(key: impl Into<String>, reason: LossReason) -> Self {
        Error::LeaseLost {
            key: key.into(),
            reason,
        }
    }

    /// Wraps any other client library error.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            source: source.into(),
        }
    }

    /// The lease was lost (expired, taken, or not extended in time).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. })
    }

    /// A wait limit or an operation timeout passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::OperationTimeout { .. })
    }

    /// The input was refused before any I/O; retrying the same call cannot succeed.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidInput(_))
    }

    /// Retrying the same call later may succeed (the backend was unreachable or
    /// slow, or a wait ended while it was).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::OperationTimeout { .. } | Error::Unavailable { .. } | Error::Overloaded(_) => {
                true
            }
            Error::Timeout {
                cause: Some(cause), ..
            } => cause.is_retryable(),
            _ => false,
        }
    }
}

/// Input refused before any I/O, one variant per rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A lock key must not be empty.
    #[error("the key is empty")]
    EmptyKey,
    /// A lock key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    #[error("the key is {len} bytes long; the maximum is {max}")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A TTL of zero.
    #[error("the TTL is zero")]
    ZeroTtl,
    /// A TTL below the backend's minimum.
    #[error("the TTL {ttl:?} is below this backend's minimum of {min:?}")]
    TtlTooShort {
        /// The TTL asked for.
        ttl: Duration,
        /// The backend's minimum.
        min: Duration,
    },
    /// A TTL above the backend's maximum, or so large that clock arithmetic overflows.
    #[error("the TTL {ttl:?} is above this backend's maximum of {max:?}")]
    TtlTooLong {
        /// The TTL asked for.
        ttl: Duration,
        /// The largest TTL accepted.
        max: Duration,
    },
    /// A TTL that is not a whole multiple of the backend's granularity.
    #[error("the TTL {ttl:?} is not a multiple of this backend's granularity of {granularity:?}")]
    TtlGranularity {
        /// The TTL asked for.
        ttl: Duration,
        /// The backend's granularity.
        granularity: Duration,
    },
    /// A keep-alive fraction outside the open interval (0, 1), or so close to 1 that
    /// the first extension would come after the lease's validity (TTL less drift).
    #[error("the keep-alive fraction {0} is outside (0, 1), or leaves no time to extend")]
    KeepAliveFraction(f64),
    /// A wait limit of zero; use `try_acquire` (or `Wait::No`) to not wait.
    #[error("the wait limit is zero; use try_acquire to not wait")]
    ZeroWait,
    /// Any other option out of range.
    #[error("invalid option `{name}`: {reason}")]
    Option {
        /// The option's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A URL that cannot be parsed or names no supported backend.
    #[error("invalid URL `{url}`: {reason}")]
    Url {
        /// The URL, with any password hidden.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}
