//! Options for taking a lock: a struct with a builder and sensible defaults.

use std::time::Duration;

use crate::{Capabilities, InvalidInput};

/// How long `acquire` waits for a held lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Wait {
    /// Try once; a held lock is a [`Timeout`](crate::Error::Timeout) of zero.
    No,
    /// Wait at most this long (plus one operation timeout for a request in flight).
    For(Duration),
    /// Wait until the lock is free.
    #[default]
    Forever,
}

/// Options for one acquisition: the TTL, how long to wait, keep-alive.
///
/// ```
/// use std::time::Duration;
/// use dlock_core::Acquire;
///
/// let opts = Acquire::ttl(Duration::from_secs(10))
///     .wait(Duration::from_secs(5))
///     .keep_alive(1.0 / 3.0);
/// assert_eq!(opts.ttl_value(), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Acquire {
    ttl: Duration,
    wait: Wait,
    keep_alive: KeepAlive,
    group: Option<&'static str>,
}

/// Keep-alive as chosen: left to the call's default, off, or on at a fraction.
#[derive(Clone, Copy, PartialEq, Debug)]
enum KeepAlive {
    Unset,
    Off,
    Every(f64),
}

/// The keep-alive fraction used by [`with_lock`](crate::LockExt::with_lock) when none is set:
/// extend after a third of the TTL, so two attempts fit before it runs out.
pub const DEFAULT_KEEP_ALIVE: f64 = 1.0 / 3.0;

impl Acquire {
    /// Hold for at most `ttl` unless extended; wait forever; no keep-alive.
    pub fn ttl(ttl: Duration) -> Self {
        Acquire {
            ttl,
            wait: Wait::Forever,
            keep_alive: KeepAlive::Unset,
            group: None,
        }
    }

    /// Labels this acquisition's metrics (and its lease's) with `group`, for
    /// example `"payments"`: a name you choose from a small, fixed set, so metrics
    /// can be split by purpose. Never the key: keys are unbounded.
    pub fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// The metrics group, if one was named.
    pub fn group_value(&self) -> Option<&'static str> {
        self.group
    }

    /// Wait at most `limit` for a held lock.
    pub fn wait(mut self, limit: Duration) -> Self {
        self.wait = Wait::For(limit);
        self
    }

    /// Sets how to wait ([`Wait::No`], [`Wait::For`], [`Wait::Forever`]).
    pub fn wait_mode(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Extend the lease automatically each time `fraction` of the TTL has passed
    /// since the last extension; must be in (0, 1).
    pub fn keep_alive(mut self, fraction: f64) -> Self {
        self.keep_alive = KeepAlive::Every(fraction);
        self
    }

    /// No automatic extension (the default for `acquire`, not for `with_lock`).
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = KeepAlive::Off;
        self
    }

    /// The TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }

    /// The wait mode.
    pub fn wait_value(&self) -> Wait {
        self.wait
    }

    /// The keep-alive fraction, if keep-alive is on.
    pub fn keep_alive_value(&self) -> Option<f64> {
        match self.keep_alive {
            KeepAlive::Every(f) => Some(f),
            KeepAlive::Unset | KeepAlive::Off => None,
        }
    }

    /// Turns keep-alive on at `fraction` unless it was set either way.
    pub(crate) fn keep_alive_unless_set(mut self, fraction: f64) -> Self {
        if self.keep_alive == KeepAlive::Unset {
            self.keep_alive = KeepAlive::Every(fraction);
        }
        self
    }

    /// Checks every option against the backend's capabilities, before any I/O.
    pub fn validate(&self, caps: &Capabilities) -> Result<(), InvalidInput> {
        validate_ttl(self.ttl, caps)?;
        if let KeepAlive::Every(f) = self.keep_alive {
            // The first extension must come before validity (the TTL less drift) ends.
            let usable = 1.0 - caps.drift(self.ttl).as_secs_f64() / self.ttl.as_secs_f64();
            if !(f > 0.0 && f < 1.0 && f < usable) {
                return Err(InvalidInput::KeepAliveFraction(f));
            }
        }
        if self.wait == Wait::For(Duration::ZERO) {
            return Err(InvalidInput::ZeroWait);
        }
        Ok(())
    }
}

/// The longest TTL any backend accepts: far beyond any real lease, and far below
/// where adding it to a clock reading (`Instant`, the lease clock) could overflow.
pub const MAX_REPRESENTABLE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks a TTL against the backend's limits and against clock overflow.
pub fn validate_ttl(ttl: Duration, caps: &Capabilities) -> Result<(), InvalidInput> {
    if ttl.is_zero() {
        return Err(InvalidInput::ZeroTtl);
    }
    if ttl < caps.min_ttl {
        return Err(InvalidInput::TtlTooShort {
            ttl,
            min: caps.min_ttl,
        });
    }
    if ttl > caps.max_ttl.min(MAX_REPRESENTABLE_TTL) {
        return Err(InvalidInput::TtlTooLong {
            ttl,
            max: caps.max_ttl.min(MAX_REPRESENTABLE_TTL),
        });
    }
    let g = caps.ttl_granularity;
    if !g.is_zero() && !ttl.as_nanos().is_multiple_of(g.as_nanos()) {
        return Err(InvalidInput::TtlGranularity {
            ttl,
            granularity: g,
        });
    }
    Ok(())
}

/// A backend setting's duration: `value`, or `default` when unset; zero is refused.
/// For backends' configuration builders.
pub fn duration_setting(
    name: &'static str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, InvalidInput> {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        return Err(InvalidInput::Option {
            name,
            reason: "must be more than zero".into(),
        });
    }
    Ok(value)
}
