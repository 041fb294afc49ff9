//! `Bulkhead`: concurrency cap, bounded queue, rejection at once, gauges, and
//! queue slots given back on cancellation.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dlock_core::reliability::{Bulkhead, ConfigError};
use futures::poll;
use tokio::time::{Instant, sleep};

#[tokio::test(start_paused = true)]
async fn hundred_calls_against_10_running_and_20_queued() {
    let bulkhead = Bulkhead::with_name("hundred", 10, 20).expect("valid");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (bulkhead, running, peak) = (bulkhead.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                bulkhead
                    .call(async {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        sleep(Duration::from_millis(100)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .map(|()| start.elapsed())
            })
        })
        .collect();

    // Let every task make its first move; the paused clock stands still meanwhile.
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(bulkhead.in_flight(), 10);
    assert_eq!(bulkhead.queued(), 20);

    let mut done = Vec::new();
    let mut rejected = 0;
    for task in tasks {
        match task.await.expect("no panic") {
            Ok(at) => done.push(at),
            Err(full) => {
                assert_eq!((full.max_concurrent(), full.max_queued()), (10, 20));
                rejected += 1;
            }
        }
    }
    assert_eq!(rejected, 70, "rejected at once, without waiting");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        10,
        "never more than 10 at once"
    );
    // Three waves of ten: the queue is served in turn.
    done.sort();
    let waves: Vec<_> = done.chunks(10).map(|w| (w[0], w[9])).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        waves,
        [(ms(100), ms(100)), (ms(200), ms(200)), (ms(300), ms(300))]
    );
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_the_next_call_is_refused_at_once() {
    let bulkhead = Bulkhead::new(1, 0).expect("valid");
    let held = bulkhead.acquire().await.expect("free");
    let start = Instant::now();
    assert!(bulkhead.acquire().await.is_err());
    assert!(bulkhead.call(async {}).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(held);
    assert_eq!(bulkhead.call(async { 5 }).await, Ok(5));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_its_queue_slot_back() {
    let bulkhead = Bulkhead::new(1, 1).expect("valid");
    let held = bulkhead.try_acquire().expect("free");

    {
        let mut waiter = pin!(bulkhead.acquire());
        assert!(poll!(waiter.as_mut()).is_pending());
        assert_eq!(bulkhead.queued(), 1);
        assert!(bulkhead.acquire().await.is_err(), "queue full");
    } // The waiter is dropped here, as on a timeout or a `select!`.
    assert_eq!(bulkhead.queued(), 0);

    let mut next = pin!(bulkhead.acquire());
    assert!(poll!(next.as_mut()).is_pending(), "the slot is free again");
    drop(held);
    let permit = next.await.expect("served once the runner leaves");
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (1, 0));
    drop(permit);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_never_queues_and_never_overtakes_waiters() {
    let bulkhead = Bulkhead::new(1, 5).expect("valid");
    let held = bulkhead.try_acquire().expect("free");
    assert!(bulkhead.try_acquire().is_err());
    assert_eq!(bulkhead.queued(), 0);

    let mut waiter = pin!(bulkhead.acquire());
    assert!(poll!(waiter.as_mut()).is_pending());
    drop(held);
    // The freed slot belongs to the waiter.
    assert!(bulkhead.try_acquire().is_err());
    assert!(poll!(waiter.as_mut()).is_ready());
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_limits() {
    let a = Bulkhead::with_name("shared", 2, 0).expect("valid");
    let b = a.clone();
    let _one = a.try_acquire().expect("free");
    let _two = b.try_acquire().expect("free");
    assert!(a.try_acquire().is_err());
    assert_eq!((a.in_flight(), b.in_flight()), (2, 2));
    assert_eq!(b.name(), "shared");
}

#[test]
fn zero_concurrency_is_refused() {
    assert_eq!(
        Bulkhead::new(0, 10).map(drop),
        Err(ConfigError::Zero {
            what: "max_concurrent"
        })
    );
}

#[test]
fn futures_and_permits_are_send() {
    fn assert_send<T: Send + 'static>(_: T) {}
    let bulkhead = Bulkhead::new(1, 1).expect("valid");
    assert_send(bulkhead.clone().try_acquire().expect("free"));
    assert_send(async move { bulkhead.call(async {}).await });
}
