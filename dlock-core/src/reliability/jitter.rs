//! Jittered exponential backoff, as iterators of delays that plug into `backon`
//! (`backon::Backoff` is any `Iterator<Item = Duration> + Send + Sync + Unpin`).
//!
//! Both follow "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):
//! after many clients fail at the same instant, their retries spread over the whole
//! window instead of landing together.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Full jitter: attempt n sleeps a uniform random time in `[0, min(max, base * factor^n)]`.
#[derive(Clone, Debug)]
pub struct FullJitter {
    base: Duration,
    factor: f64,
    max: Duration,
    attempt: u32,
    remaining: Option<usize>,
    rng: SmallRng,
}

/// Decorrelated jitter: each delay is uniform in `[base, previous * 3]`, capped at `max`.
/// Spreads as well as full jitter, and never retries at once.
#[derive(Clone, Debug)]
pub struct DecorrelatedJitter {
    base: Duration,
    max: Duration,
    previous: Duration,
    remaining: Option<usize>,
    rng: SmallRng,
}

fn seeded(seed: Option<u64>) -> SmallRng {
    match seed {
        Some(seed) => SmallRng::seed_from_u64(seed),
        None => SmallRng::from_os_rng(),
    }
}

fn uniform(rng: &mut SmallRng, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let span = (high - low).as_nanos() as u64;
    low + Duration::from_nanos(rng.random_range(0..=span))
}

impl FullJitter {
    /// Delays up to `base * factor^n`, capped at `max`, for ever (see [`Self::take_retries`]).
    /// Callers validate `factor >= 1` and `max >= base`; out-of-range values are clamped.
    pub fn new(base: Duration, factor: f64, max: Duration) -> Self {
        FullJitter {
            base,
            factor: if factor.is_finite() {
                factor.max(1.0)
            } else {
                1.0
            },
            max: max.max(base),
            attempt: 0,
            remaining: None,
            rng: seeded(None),
        }
    }

    /// A fixed seed, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = seeded(Some(seed));
        self
    }

    /// At most `n` delays, then the iterator ends (and `backon` stops retrying).
    pub fn take_retries(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    fn ceiling(&self) -> Duration {
        let scaled = self.base.as_secs_f64() * self.factor.powi(self.attempt.min(1023) as i32);
        if !scaled.is_finite() || scaled >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(scaled)
        }
    }
}

impl Iterator for FullJitter {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if let Some(n) = self.remaining.as_mut() {
            *n = n.checked_sub(1)?;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        Some(uniform(&mut self.rng, Duration::ZERO, ceiling))
    }
}

impl DecorrelatedJitter {
    /// Delays from `base` up to `max`, for ever (see [`Self::take_retries`]).
    pub fn new(base: Duration, max: Duration) -> Self {
        DecorrelatedJitter {
            base,
            max: max.max(base),
            previous: base,
            remaining: None,
            rng: seeded(None),
        }
    }

    /// A fixed seed, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = seeded(Some(seed));
        self
    }

    /// At most `n` delays, then the iterator ends (and `backon` stops retrying).
    pub fn take_retries(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }
}

impl Iterator for DecorrelatedJitter {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if let Some(n) = self.remaining.as_mut() {
            *n = n.checked_sub(1)?;
        }
        let high = self.previous.saturating_mul(3).min(self.max);
        let delay = uniform(&mut self.rng, self.base, high).min(self.max);
        self.previous = delay;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let delays: Vec<_> = FullJitter::new(100 * MS, 2.0, 1000 * MS)
            .seed(7)
            .take_retries(6)
            .collect();
        assert_eq!(delays.len(), 6);
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (100 * MS * 2u32.pow(n as u32)).min(1000 * MS);
            assert!(*d <= ceiling, "delay {n} = {d:?} above {ceiling:?}");
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_max() {
        let mut it = DecorrelatedJitter::new(10 * MS, 500 * MS).seed(3);
        for _ in 0..1000 {
            let d = it.next().expect("unbounded");
            assert!((10 * MS..=500 * MS).contains(&d), "{d:?}");
        }
    }
}
