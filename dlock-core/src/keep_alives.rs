//! Batched keep-alive: one lock's lease extensions gathered into batches, so that
//! many leases kept alive cost one round trip per batch, not one per lease.
//!
//! Each lease's keep-alive task still plans its own extension. With batching it wakes
//! a quarter period early and boards the next batch, which departs by the earliest
//! time any of its riders must be extended. Leases extended together are due together
//! from then on, so a lock's leases settle into a few batches per period.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, oneshot};

use crate::{BootInstant, DynLock, Error, LockKey, OwnerId, call::bounded, clock};

/// One extension of a batch: `owner`'s lease on `key`, reset to `ttl` from when the
/// batch is sent. See [`Lock::extend_many`](crate::Lock::extend_many).
#[derive(Clone, Debug)]
pub struct Extension {
    /// The lock key.
    pub key: LockKey,
    /// The holder.
    pub owner: OwnerId,
    /// The new TTL.
    pub ttl: Duration,
}

/// The most extensions one [`extend_many`](crate::Lock::extend_many) call carries: a
/// larger batch is sent as several calls at once.
pub const MAX_BATCH: usize = 512;

/// Gathers the keep-alive extensions of one lock's leases into batches sent with
/// [`Lock::extend_many`](crate::Lock::extend_many). A backend that can extend many
/// keys in one round trip keeps one and returns it from
/// [`Lock::keep_alives`](crate::Lock::keep_alives); keep-alive then uses it.
#[derive(Default)]
pub struct KeepAlives {
    bus: Mutex<Bus>,
    batches: AtomicU64,
    extensions: AtomicU64,
}

/// The batch now boarding.
#[derive(Default)]
struct Bus {
    riders: Vec<Rider>,
    /// When it departs; `None`: no batch is boarding.
    departs: Option<BootInstant>,
    /// Wakes the boarding batch's task when `departs` moves earlier.
    moved: Arc<Notify>,
    /// That task. One that is gone while its batch still boards (its runtime shut
    /// down) is replaced, or the batch would never leave.
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Rider {
    extension: Extension,
    /// The outcome, and when the batch was sent (the extension's TTL counts from
    /// no earlier than that).
    answer: oneshot::Sender<Result<BootInstant, Error>>,
}

impl KeepAlives {
    /// An empty batcher.
    pub fn new() -> KeepAlives {
        KeepAlives::default()
    }

    /// `extend_many` calls sent so far: the round trips keep-alive cost.
    pub fn batches_sent(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Extensions sent so far, in all batches.
    pub fn extensions_sent(&self) -> u64 {
        self.extensions.load(Ordering::Relaxed)
    }

    /// Sends `extension` with the next batch of `lock`'s (whose `keep_alives` is
    /// `self`), which departs no later than `by`, and answers when the batch was
    /// sent. Dropping the future before the batch departs takes the extension off it.
    ///
    /// Riders of one batch all count from its departure, so they are due together
    /// next time: the batches a lock's leases start in merge, period after period.
    pub(crate) async fn extend(
        &self,
        lock: &DynLock,
        extension: Extension,
        by: BootInstant,
    ) -> Result<BootInstant, Error> {
        let (answer, answered) = oneshot::channel();
        {
            let mut bus = self.bus.lock().unwrap_or_else(PoisonError::into_inner);
            bus.riders.push(Rider { extension, answer });
            let stranded = bus.task.as_ref().is_none_or(|t| t.is_finished());
            match bus.departs {
                Some(at) if !stranded => {
                    if by < at {
                        bus.departs = Some(by);
                        // A stored permit if the task is not waiting yet: never missed.
                        bus.moved.notify_one();
                    }
                }
                // A new batch, or one whose task is gone: a task to send it.
                departs => {
                    bus.departs = Some(departs.map_or(by, |at| at.min(by)));
                    bus.moved = Arc::new(Notify::new());
                    let moved = Arc::clone(&bus.moved);
                    bus.task = Some(tokio::spawn(depart(Arc::clone(lock), moved)));
                }
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(Error::Backend {
                source: "the keep-alive batch was dropped before it answered".into(),
            })
        })
    }

    /// Waits for the boarding batch's departure time (which riders may move
    /// earlier), then closes it: the next rider starts a new batch.
    async fn board(&self, moved: &Notify) -> Vec<Rider> {
        loop {
            let at = {
                let mut bus = self.bus.lock().unwrap_or_else(PoisonError::into_inner);
                match bus.departs {
                    Some(at) if !at.has_passed() => at,
                    _ => {
                        bus.departs = None;
                        return std::mem::take(&mut bus.riders);
                    }
                }
            };
            tokio::select! {
                () = clock::sleep_until(at) => {}
                () = moved.notified() => {}
            }
        }
    }
}

/// The task of one batch: boards it, then sends it in calls of at most
/// [`MAX_BATCH`], all at once, each bounded by the lock's operation timeout.
async fn depart(lock: DynLock, moved: Arc<Notify>) {
    let Some(keep_alives) = lock.keep_alives() else {
        return;
    };
    let mut riders = keep_alives.board(&moved).await;
    // Riders whose lease stopped its keep-alive meanwhile.
    riders.retain(|r| !r.answer.is_closed());
    let mut calls = Vec::new();
    while !riders.is_empty() {
        let rest = riders.split_off(riders.len().min(MAX_BATCH));
        calls.push(send(
            &lock,
            keep_alives,
            std::mem::replace(&mut riders, rest),
        ));
    }
    futures::future::join_all(calls).await;
}

async fn send(lock: &DynLock, keep_alives: &KeepAlives, riders: Vec<Rider>) {
    let (extensions, answers): (Vec<_>, Vec<_>) =
        riders.into_iter().map(|r| (r.extension, r.answer)).unzip();
    keep_alives.batches.fetch_add(1, Ordering::Relaxed);
    keep_alives
        .extensions
        .fetch_add(extensions.len() as u64, Ordering::Relaxed);
    let limit = lock.operation_timeout();
    let sent = BootInstant::now();
    let (mut results, timed_out) = match bounded("extend", limit, async {
        Ok(lock.extend_many(&extensions).await)
    })
    .await
    {
        Ok(results) => (results.into_iter(), false),
        Err(_) => (Vec::new().into_iter(), true),
    };
    for answer in answers {
        let result = results.next().unwrap_or_else(|| {
            Err(if timed_out {
                // The outcome is unknown: the extensions may or may not have landed.
                Error::OperationTimeout {
                    operation: "extend",
                    after: limit,
                }
            } else {
                Error::Backend {
                    source: "extend_many returned fewer answers than extensions".into(),
                }
            })
        });
        let _ = answer.send(result.map(|()| sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attempt, AttemptRequest, Capabilities, Lock};

    /// A lock whose only real part is batched keep-alive: counts what it is sent.
    #[derive(Default)]
    struct Batching {
        keep_alives: KeepAlives,
    }

    #[async_trait::async_trait]
    impl Lock for Batching {
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn attempt(&self, _: AttemptRequest<'_>) -> Result<Attempt, Error> {
            unreachable!("only keep-alive is tested")
        }
        async fn extend(&self, _: &LockKey, _: &OwnerId, _: Duration) -> Result<(), Error> {
            Ok(())
        }
        async fn release(&self, _: &LockKey, _: &OwnerId) -> Result<bool, Error> {
            Ok(true)
        }
        fn keep_alives(&self) -> Option<&KeepAlives> {
            Some(&self.keep_alives)
        }
    }

    fn extension() -> Extension {
        Extension {
            key: LockKey::new("k").expect("key"),
            owner: OwnerId::random(),
            ttl: Duration::from_secs(10),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_batch_whose_runtime_shut_down_does_not_strand_the_next_riders() {
        let lock = Arc::new(Batching::default());
        let dyn_lock: DynLock = lock.clone();
        // A rider boards a batch that leaves in an hour; its runtime then shuts down,
        // taking the batch's task with it.
        runtime().block_on(async {
            let later = BootInstant::now().saturating_add(Duration::from_secs(3600));
            let boarded = lock.keep_alives.extend(&dyn_lock, extension(), later);
            assert!(
                tokio::time::timeout(Duration::from_millis(20), boarded)
                    .await
                    .is_err()
            );
        });
        // On another runtime, a rider due now is sent at once.
        runtime().block_on(async {
            let now = lock
                .keep_alives
                .extend(&dyn_lock, extension(), BootInstant::now());
            let sent = tokio::time::timeout(Duration::from_secs(5), now)
                .await
                .expect("the rider was stranded on a batch nobody sends");
            assert!(sent.is_ok(), "{sent:?}");
        });
        assert_eq!(lock.keep_alives.batches_sent(), 1);
        assert_eq!(
            lock.keep_alives.extensions_sent(),
            1,
            "the dropped rider was sent"
        );
    }

    #[test]
    fn riders_due_together_share_one_call_and_leave_by_the_earliest() {
        let lock = Arc::new(Batching::default());
        let dyn_lock: DynLock = lock.clone();
        runtime().block_on(async {
            let start = BootInstant::now();
            let at = |ms| start.saturating_add(Duration::from_millis(ms));
            let riders =
                (0..100u64).map(|i| lock.keep_alives.extend(&dyn_lock, extension(), at(200 + i)));
            // One rider due sooner pulls the whole batch forward.
            let early = lock.keep_alives.extend(&dyn_lock, extension(), at(50));
            let (sent, early) = tokio::join!(futures::future::join_all(riders), early);
            let departed = early.expect("sent");
            assert!(
                sent.iter()
                    .all(|r| r.as_ref().is_ok_and(|&d| d == departed))
            );
            let waited = departed.saturating_duration_since(start);
            assert!(
                waited >= Duration::from_millis(50) && waited < Duration::from_millis(200),
                "left after {waited:?}"
            );
        });
        assert_eq!(lock.keep_alives.batches_sent(), 1);
        assert_eq!(lock.keep_alives.extensions_sent(), 101);
    }
}
