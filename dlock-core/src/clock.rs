//! The clock leases are measured on.
//!
//! `Instant` stops while a machine is suspended, but a server's TTL keeps running, so a
//! lease measured on `Instant` would look valid after a long suspend. On Linux this
//! clock is `CLOCK_BOOTTIME`, which counts suspended time; elsewhere it falls back to
//! `Instant`.

use std::time::Duration;

/// A point on the lease clock (time since boot on Linux), in nanoseconds: one word,
/// so comparing and adding cost next to nothing on the lock's hot path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct BootInstant(u64);

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BootInstant {
    /// Now, on the lease clock.
    pub fn now() -> Self {
        BootInstant(now_nanos())
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        let d = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(d).map(BootInstant)
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        BootInstant(self.0.saturating_add(nanos(d)))
    }

    /// `self - d`, saturating at the clock's origin.
    pub fn saturating_sub(self, d: Duration) -> Self {
        BootInstant(self.0.saturating_sub(nanos(d)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Seconds from `earlier` to `self` (zero if `earlier` is later), for metrics.
    pub(crate) fn secs_since(self, earlier: BootInstant) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 * 1e-9
    }

    /// Time left until `self`, zero if it has passed.
    pub fn remaining(self) -> Duration {
        self.saturating_duration_since(BootInstant::now())
    }

    /// Whether `self` has passed.
    pub fn has_passed(self) -> bool {
        BootInstant::now() >= self
    }

    /// Nanoseconds since the clock's origin.
    pub(crate) fn as_nanos(self) -> u64 {
        self.0
    }

    pub(crate) fn from_nanos(nanos: u64) -> Self {
        BootInstant(nanos)
    }
}

/// `CLOCK_BOOTTIME`. Every kernel Rust supports has it, but a sandbox (a seccomp
/// filter, an emulator) may refuse it; the monotonic clock is the best left then.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn now_nanos() -> u64 {
    use rustix::time::{ClockId, DynamicClockId, clock_gettime, clock_gettime_dynamic};
    let t = clock_gettime_dynamic(DynamicClockId::Boottime)
        .unwrap_or_else(|_| clock_gettime(ClockId::Monotonic));
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn now_nanos() -> u64 {
    use std::{sync::OnceLock, time::Instant};
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    nanos(ORIGIN.get_or_init(Instant::now).elapsed())
}

/// Sleeps until `deadline` on the lease clock.
///
/// Tokio's timers run on `Instant`, which stops during suspend, so the sleep is cut
/// into slices of at most `MAX_SLICE` and the lease clock is read after each: after a
/// resume, a passed deadline is noticed within one slice.
pub async fn sleep_until(deadline: BootInstant) {
    const MAX_SLICE: Duration = Duration::from_secs(1);
    loop {
        let left = deadline.remaining();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_SLICE)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward_and_saturates() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(2));
        let b = BootInstant::now();
        assert!(b > a);
        assert!(b.saturating_duration_since(a) >= Duration::from_millis(2));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert!(a.checked_add(Duration::MAX).is_none());
        assert_eq!(a.saturating_add(Duration::MAX).as_nanos(), u64::MAX);
    }
}
