//! A bulkhead: a cap on concurrent calls, a bounded queue, and rejection at once beyond.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::SharedString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BulkheadFull, ConfigError};

/// Gauge: calls running inside a bulkhead, labelled by `name`.
pub const BULKHEAD_IN_FLIGHT: &str = "dlock_bulkhead_in_flight";
/// Gauge: calls waiting for a running slot, labelled by `name`.
pub const BULKHEAD_QUEUED: &str = "dlock_bulkhead_queued";
/// Counter: calls refused because the bulkhead was full, labelled by `name`.
pub const BULKHEAD_REJECTED_TOTAL: &str = "dlock_bulkhead_rejected_total";

/// At most `max_concurrent` calls run at once; up to `max_queued` more wait, first
/// come first served; any call beyond that is refused at once with [`BulkheadFull`].
///
/// Cloning is cheap and clones share the limits, so one bulkhead can guard every
/// operation of a backend. Work that must not wait behind the rest (a lease
/// extension behind a crowd of acquires) goes through a second bulkhead, or through
/// [`try_acquire`](Self::try_acquire), which never queues.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use dlock_core::reliability::Bulkhead;
///
/// let bulkhead = Bulkhead::with_name("redis", 10, 20)?;
/// let answer = bulkhead.call(async { 42 }).await?;
/// assert_eq!(answer, 42);
/// assert_eq!(bulkhead.in_flight(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: SharedString,
    running: Arc<Semaphore>,
    max_concurrent: usize,
    max_queued: usize,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
}

impl Bulkhead {
    /// A bulkhead named `"bulkhead"` in its metrics. `max_queued` may be zero (no
    /// queue); `max_concurrent` may not.
    pub fn new(max_concurrent: usize, max_queued: usize) -> Result<Self, ConfigError> {
        Self::with_name("bulkhead", max_concurrent, max_queued)
    }

    /// A bulkhead with `name` as the `name` label of its metrics.
    pub fn with_name(
        name: impl Into<Arc<str>>,
        max_concurrent: usize,
        max_queued: usize,
    ) -> Result<Self, ConfigError> {
        if max_concurrent == 0 {
            return Err(ConfigError::Zero {
                what: "max_concurrent",
            });
        }
        // The semaphore panics above this; refuse it instead.
        if max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::TooLarge {
                what: "max_concurrent",
                value: max_concurrent,
                max: Semaphore::MAX_PERMITS,
            });
        }
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                name: SharedString::from(name.into()),
                running: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_queued,
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
            }),
        })
    }

    /// The `name` label of the metrics.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many calls may run at once.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// How many calls may wait.
    pub fn max_queued(&self) -> usize {
        self.inner.max_queued
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Runs `fut` inside the bulkhead, waiting in the queue if need be.
    pub async fn call<F: Future>(&self, fut: F) -> Result<F::Output, BulkheadFull> {
        let _permit = self.acquire().await?;
        Ok(fut.await)
    }

    /// A running slot, free at once or after waiting in the queue; refused at once
    /// when the queue is full too. The slot is held until the permit is dropped.
    /// Dropping this future while it waits gives its queue slot back.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        match self.try_acquire() {
            Ok(permit) => return Ok(permit),
            Err(full) if self.inner.max_queued == 0 => return Err(full),
            Err(_) => {}
        }
        let Some(slot) = self.reserve_queue_slot() else {
            return Err(self.reject());
        };
        // The semaphore is never closed, so this error cannot happen.
        let Ok(permit) = Arc::clone(&self.inner.running).acquire_owned().await else {
            return Err(self.reject());
        };
        drop(slot);
        Ok(self.grant(permit))
    }

    /// A running slot if one is free now; never queues. The semaphore serves queued
    /// callers first, so this cannot overtake them.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        match Arc::clone(&self.inner.running).try_acquire_owned() {
            Ok(permit) => Ok(self.grant(permit)),
            Err(_) if self.inner.max_queued == 0 => Err(self.reject()),
            // Not counted as rejected yet: `acquire` may still queue it.
            Err(_) => Err(self.full()),
        }
    }

    fn grant(&self, permit: OwnedSemaphorePermit) -> BulkheadPermit {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(BULKHEAD_IN_FLIGHT, "name" => self.inner.name.clone()).increment(1.0);
        BulkheadPermit {
            _permit: permit,
            inner: Arc::clone(&self.inner),
        }
    }

    fn reserve_queue_slot(&self) -> Option<QueueSlot<'_>> {
        let max = self.inner.max_queued;
        self.inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max).then_some(q + 1)
            })
            .ok()?;
        metrics::gauge!(BULKHEAD_QUEUED, "name" => self.inner.name.clone()).increment(1.0);
        Some(QueueSlot(&self.inner))
    }

    fn full(&self) -> BulkheadFull {
        BulkheadFull {
            max_concurrent: self.inner.max_concurrent,
            max_queued: self.inner.max_queued,
        }
    }

    fn reject(&self) -> BulkheadFull {
        metrics::counter!(BULKHEAD_REJECTED_TOTAL, "name" => self.inner.name.clone()).increment(1);
        self.full()
    }
}

/// A running slot in a [`Bulkhead`], given back when dropped.
#[derive(Debug)]
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(BULKHEAD_IN_FLIGHT, "name" => self.inner.name.clone()).decrement(1.0);
    }
}

/// A place in the queue, given back when the wait ends or is cancelled.
struct QueueSlot<'a>(&'a Inner);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(BULKHEAD_QUEUED, "name" => self.0.name.clone()).decrement(1.0);
    }
}
