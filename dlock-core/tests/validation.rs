//! Bad input is refused before any I/O: the backend here panics if it is called.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, Capabilities, DynLock, Error, InvalidInput, Lock, LockExt,
    LockKey, MAX_KEY_LEN, OwnerId,
};

struct MustNotBeCalled;

#[async_trait]
impl Lock for MustNotBeCalled {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "must-not-be-called",
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(3600),
            ttl_granularity: Duration::from_secs(1),
            ..Capabilities::default()
        }
    }
    async fn attempt(&self, _: AttemptRequest<'_>) -> Result<Attempt, Error> {
        panic!("attempt reached the backend")
    }
    async fn extend(&self, _: &LockKey, _: &OwnerId, _: Duration) -> Result<(), Error> {
        panic!("extend reached the backend")
    }
    async fn release(&self, _: &LockKey, _: &OwnerId) -> Result<bool, Error> {
        panic!("release reached the backend")
    }
}

fn invalid(result: Result<impl std::fmt::Debug, Error>) -> InvalidInput {
    match result {
        Err(Error::InvalidInput(e)) => e,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[tokio::test]
async fn every_bad_input_is_a_typed_error_before_io() {
    let lock: DynLock = Arc::new(MustNotBeCalled);
    let ok_ttl = Duration::from_secs(10);
    let table: Vec<(&str, InvalidInput)> = vec![
        ("empty key", invalid(lock.try_acquire("", ok_ttl).await)),
        (
            "key over the maximum",
            invalid(lock.try_acquire(&"k".repeat(MAX_KEY_LEN + 1), ok_ttl).await),
        ),
        (
            "zero TTL",
            invalid(lock.try_acquire("k", Duration::ZERO).await),
        ),
        (
            "TTL below the minimum",
            invalid(lock.try_acquire("k", Duration::from_secs(1)).await),
        ),
        (
            "TTL above the maximum",
            invalid(lock.try_acquire("k", Duration::from_secs(7200)).await),
        ),
        (
            "TTL overflowing the clock",
            invalid(lock.try_acquire("k", Duration::MAX).await),
        ),
        (
            "TTL off the granularity",
            invalid(lock.try_acquire("k", Duration::from_millis(2500)).await),
        ),
        (
            "keep-alive 0",
            invalid(
                lock.acquire("k", Acquire::ttl(ok_ttl).keep_alive(0.0))
                    .await,
            ),
        ),
        (
            "keep-alive 1",
            invalid(
                lock.acquire("k", Acquire::ttl(ok_ttl).keep_alive(1.0))
                    .await,
            ),
        ),
        (
            "keep-alive NaN",
            invalid(
                lock.acquire("k", Acquire::ttl(ok_ttl).keep_alive(f64::NAN))
                    .await,
            ),
        ),
        (
            "zero wait",
            invalid(
                lock.acquire("k", Acquire::ttl(ok_ttl).wait(Duration::ZERO))
                    .await,
            ),
        ),
        (
            "with_lock with a bad key",
            invalid(lock.with_lock("", Acquire::ttl(ok_ttl), |_| async {}).await),
        ),
    ];
    let kinds: Vec<String> = table
        .iter()
        .map(|(what, e)| format!("{what}: {e}"))
        .collect();
    assert_eq!(kinds.len(), 12, "{kinds:#?}");
    assert!(matches!(table[0].1, InvalidInput::EmptyKey));
    assert!(
        matches!(table[1].1, InvalidInput::KeyTooLong { len, max } if len == MAX_KEY_LEN + 1 && max == MAX_KEY_LEN)
    );
    assert!(matches!(table[2].1, InvalidInput::ZeroTtl));
    assert!(
        matches!(table[3].1, InvalidInput::TtlTooShort { min, .. } if min == Duration::from_secs(2))
    );
    assert!(matches!(table[4].1, InvalidInput::TtlTooLong { .. }));
    assert!(matches!(table[5].1, InvalidInput::TtlTooLong { .. }));
    assert!(matches!(table[6].1, InvalidInput::TtlGranularity { .. }));
    for (_, e) in &table[7..10] {
        assert!(matches!(e, InvalidInput::KeepAliveFraction(_)), "{e:?}");
    }
    assert!(matches!(table[10].1, InvalidInput::ZeroWait));
    assert!(matches!(table[11].1, InvalidInput::EmptyKey));
    // The message names the limit, so the caller can fix the call.
    assert!(table[3].1.to_string().contains("2s"), "{}", table[3].1);
}
