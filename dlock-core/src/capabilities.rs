//! What a backend can promise, as plain data that docs, the facade and the
//! conformance suite all read.

use std::time::Duration;

use crate::BootInstant;

/// Who expires when a holder disappears.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExpiryScope {
    /// Each lease has its own TTL on the server: an abandoned lease expires by itself.
    PerLease,
    /// A client's leases share one server-side session (as etcd's own
    /// `concurrency.Session` does): a lease cannot expire while its client lives; when
    /// the client disappears, all its leases expire together. dlock-etcd in session
    /// mode reports this.
    PerClient,
}

/// What a backend promises. A plain `Copy` struct: read the fields.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Capabilities {
    /// A short name for logs and metrics (`memory`, `redis`, ...).
    pub name: &'static str,
    /// Leases carry fencing tokens that strictly increase per key.
    pub fencing: bool,
    /// Waiters are granted the lock in the order they started waiting.
    pub fifo: bool,
    /// The backend wakes waiters when a lock is released (otherwise they back off and retry).
    pub wake_on_release: bool,
    /// The shortest TTL accepted.
    pub min_ttl: Duration,
    /// The longest TTL accepted.
    pub max_ttl: Duration,
    /// TTLs must be whole multiples of this (etcd: one second). Zero: any TTL.
    pub ttl_granularity: Duration,
    /// How long past its TTL an abandoned lock may stay held when the server keeps
    /// running as it is (etcd: lease expiry is checked about every 500 ms, and an
    /// election takes about one election timeout). Zero where the TTL is exact. See
    /// [`expiry_slack`](Self::expiry_slack) for what a leader change adds.
    pub expiry_slack_fixed: Duration,
    /// A leader change renews every lease to its full TTL (etcd without lease
    /// checkpointing): an abandoned lock then stays held up to a whole TTL longer.
    pub leader_change_renews_leases: bool,
    /// Whether abandoned leases expire one by one or with their client.
    pub expiry_scope: ExpiryScope,
    /// Clock drift allowed between this machine and the server, as a fraction of the
    /// TTL, subtracted from `valid_until` (Redlock's rule: 0.01).
    pub drift_factor: f64,
    /// Clock drift allowed, fixed part (Redlock's rule: 2 ms).
    pub drift_fixed: Duration,
    /// [`Lock::inspect`](crate::Lock::inspect) tells who holds a key without taking it.
    pub inspect: bool,
    /// [`Lock::publish`](crate::Lock::publish) stores a value only the holder can
    /// write, which `inspect` returns: what an election built on the lock needs.
    pub publish: bool,
}

impl Capabilities {
    /// How long past its TTL an abandoned lock of `ttl` may stay held across one
    /// leader change: the fixed slack, plus the whole TTL where a new leader renews
    /// every lease. Each further leader change within the lease's life can add as
    /// much again, so a cluster whose leader flaps keeps abandoned locks longer; with
    /// no leader change, [`expiry_slack_fixed`](Self::expiry_slack_fixed) bounds it.
    pub fn expiry_slack(&self, ttl: Duration) -> Duration {
        if self.leader_change_renews_leases {
            self.expiry_slack_fixed.saturating_add(ttl)
        } else {
            self.expiry_slack_fixed
        }
    }

    /// Until when a lease of `ttl` whose TTL started on the server no earlier than
    /// `from` is valid: `from + ttl`, less the [`drift`](Self::drift).
    pub fn valid_until(&self, from: BootInstant, ttl: Duration) -> BootInstant {
        from.saturating_add(ttl).saturating_sub(self.drift(ttl))
    }

    /// The drift subtracted from a lease of `ttl` when computing `valid_until`.
    pub fn drift(&self, ttl: Duration) -> Duration {
        if self.drift_factor == 0.0 {
            return self.drift_fixed;
        }
        ttl.mul_f64(self.drift_factor.clamp(0.0, 1.0))
            .saturating_add(self.drift_fixed)
    }

    /// The smallest TTL of at least `wanted` that this backend accepts, or its
    /// longest if `wanted` is above it (a backend with one fixed TTL, as etcd's
    /// session mode, answers that one).
    pub fn fit_ttl(&self, wanted: Duration) -> Duration {
        let ttl = wanted.max(self.min_ttl);
        let g = self.ttl_granularity;
        let fitted = if g.is_zero() {
            ttl
        } else {
            let steps = ttl.as_nanos().div_ceil(g.as_nanos());
            Duration::from_nanos(u64::try_from(steps * g.as_nanos()).unwrap_or(u64::MAX))
        };
        fitted.min(self.max_ttl).max(self.min_ttl)
    }
}

impl Default for Capabilities {
    /// A backend that promises the least: no fencing, no FIFO, no wake-ups, 1 ms to
    /// 1 year TTLs with Redlock's drift rule.
    fn default() -> Self {
        Capabilities {
            name: "unnamed",
            fencing: false,
            fifo: false,
            wake_on_release: false,
            min_ttl: Duration::from_millis(1),
            max_ttl: Duration::from_secs(365 * 24 * 3600),
            ttl_granularity: Duration::ZERO,
            expiry_slack_fixed: Duration::ZERO,
            leader_change_renews_leases: false,
            expiry_scope: ExpiryScope::PerLease,
            drift_factor: 0.01,
            drift_fixed: Duration::from_millis(2),
            inspect: false,
            publish: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_ttl_stays_within_a_fixed_ttl() {
        let caps = Capabilities {
            min_ttl: Duration::from_secs(3),
            max_ttl: Duration::from_secs(3),
            ttl_granularity: Duration::from_secs(1),
            ..Capabilities::default()
        };
        for wanted in [
            Duration::ZERO,
            Duration::from_millis(400),
            Duration::from_secs(60),
        ] {
            assert_eq!(caps.fit_ttl(wanted), Duration::from_secs(3));
        }
    }

    #[test]
    fn fit_ttl_rounds_up_to_granularity_and_minimum() {
        let caps = Capabilities {
            min_ttl: Duration::from_secs(2),
            ttl_granularity: Duration::from_secs(1),
            ..Capabilities::default()
        };
        assert_eq!(
            caps.fit_ttl(Duration::from_millis(300)),
            Duration::from_secs(2)
        );
        assert_eq!(
            caps.fit_ttl(Duration::from_millis(2500)),
            Duration::from_secs(3)
        );
        assert_eq!(
            Capabilities::default().drift(Duration::from_secs(10)),
            Duration::from_millis(102)
        );
    }
}
