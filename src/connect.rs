//! `connect(url)`: pick a backend at run time, by URL.

#[allow(unused_imports)] // unused when no backend feature is enabled
use std::sync::Arc;

use dlock_core::{DynFenceGate, DynLock, Error, InvalidInput, redact_url};

/// Connects to the backend a URL names, so configuration alone picks it:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` or `memory://NAME` | in-process table, shared by every `connect` to the same name in this process | `memory` (default) |
/// | `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) | one Redis server | `redis` |
/// | `etcd://[user:password@]host:port[,host:port...][/prefix/][?session=SECONDS]`, `etcds://...` (TLS) | an etcd cluster (`session`: one lease per client) | `etcd` |
/// | `redlock://[user:password@]host:port,host:port,host:port[/db]`, `redlocks://...` (TLS) | Redlock over independent Redis servers | `redlock` |
///
/// An unknown scheme, or one whose feature is not enabled, is an
/// [`InvalidInput::Url`] error; the URL in the error never shows a password.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), dlock::Error> {
/// use std::time::Duration;
/// use dlock::{Acquire, LockExt};
///
/// let locks = dlock::connect("memory://").await?;
/// let mut lease = locks.acquire("order:123", Acquire::ttl(Duration::from_secs(10))).await?;
/// lease.release().await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<DynLock, Error> {
    Ok(open(url).await?.0)
}

/// Connects to the backend a URL names, as [`connect`] does, and returns its fence
/// gate beside the lock: the resource side of fencing on the same backend
/// ([`MemoryFenceGate`](dlock_memory::MemoryFenceGate) shared by every `connect` to
/// the same `memory://NAME`, `RedisFenceGate`, `EtcdFenceGate`). Fenced code then
/// changes with the URL alone, like the rest. Redlock has no gate of its own (its
/// nodes are for locks; the resource lives elsewhere): its gate refuses every
/// operation with an error that says so.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), dlock::Error> {
/// use std::time::Duration;
/// use dlock::{Acquire, FenceGateExt, LockExt};
///
/// let (locks, gate) = dlock::connect_with_gate("memory://").await?;
/// let mut lease = locks.acquire("order:123", Acquire::ttl(Duration::from_secs(10))).await?;
/// // Read and write through the gate with the lease's token: a stale holder's
/// // update is refused, however long it stalled in between.
/// let admission = gate.update("order:123", &lease, |_| b"paid".to_vec()).await?;
/// assert!(admission.is_accepted());
/// lease.release().await?;
/// # Ok(()) }
/// ```
pub async fn connect_with_gate(url: &str) -> Result<(DynLock, DynFenceGate), Error> {
    open(url).await
}

/// The lock and the gate a URL names.
async fn open(url: &str) -> Result<(DynLock, DynFenceGate), Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad_url(
            url,
            "expected SCHEME://..., for example memory:// or redis://host:6379",
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        #[cfg(feature = "memory")]
        "memory" => memory(url, rest),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let lock = dlock_redis::RedisLock::connect(url).await?;
            let gate = dlock_redis::RedisFenceGate::new(&lock);
            Ok((Arc::new(lock), Arc::new(gate)))
        }
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => {
            let lock = dlock_etcd::EtcdLock::connect(url).await?;
            let gate = dlock_etcd::EtcdFenceGate::new(&lock);
            Ok((Arc::new(lock), Arc::new(gate)))
        }
        #[cfg(not(feature = "memory"))]
        "memory" => Err(not_built(url, "memory", rest)),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => Err(not_built(url, "redis", rest)),
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => Err(not_built(url, "etcd", rest)),
        #[cfg(feature = "redlock")]
        "redlock" | "redlocks" => {
            let lock = dlock_redlock::RedlockLock::connect(url).await?;
            Ok((Arc::new(lock), no_gate("redlock")))
        }
        #[cfg(not(feature = "redlock"))]
        "redlock" | "redlocks" => Err(not_built(url, "redlock", rest)),
        other => Err(bad_url(url, &format!("unknown scheme `{other}`"))),
    }
}

#[cfg(feature = "memory")]
fn memory(url: &str, rest: &str) -> Result<(DynLock, DynFenceGate), Error> {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock},
    };

    use dlock_memory::{MemoryFenceGate, MemoryLock};

    type Table = (MemoryLock, MemoryFenceGate);
    static TABLES: OnceLock<Mutex<HashMap<String, Table>>> = OnceLock::new();
    let name = rest.trim_end_matches('/');
    if name.contains(['/', '?', '#', '@']) {
        return Err(bad_url(url, "a memory URL is memory:// or memory://NAME"));
    }
    let mut tables = TABLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (lock, gate) = tables.entry(name.to_owned()).or_default().clone();
    Ok((Arc::new(lock), Arc::new(gate)))
}

/// The gate of a backend that has none of its own: every operation refuses, and
/// says where the gate belongs.
#[cfg(feature = "redlock")]
fn no_gate(backend: &'static str) -> DynFenceGate {
    Arc::new(NoGate(backend))
}

#[cfg(feature = "redlock")]
struct NoGate(&'static str);

#[cfg(feature = "redlock")]
impl NoGate {
    fn refuse(&self) -> Error {
        Error::InvalidInput(InvalidInput::Option {
            name: "gate",
            reason: format!(
                "{} has no fence gate of its own: keep the gate with the resource (a \
                 RedisFenceGate on the resource's Redis, or the SQL recipe), and pass \
                 it the lease's token",
                self.0
            ),
        })
    }
}

#[cfg(feature = "redlock")]
#[async_trait::async_trait]
impl dlock_core::FenceGate for NoGate {
    async fn write(
        &self,
        _: &str,
        _: dlock_core::FenceToken,
        _: &[u8],
    ) -> Result<dlock_core::Admission, Error> {
        Err(self.refuse())
    }
    async fn read_for_update(
        &self,
        _: &str,
        _: dlock_core::FenceToken,
    ) -> Result<dlock_core::FencedRead, Error> {
        Err(self.refuse())
    }
    async fn read(&self, _: &str) -> Result<Option<(dlock_core::FenceToken, Vec<u8>)>, Error> {
        Err(self.refuse())
    }
}

/// A URL whose backend this build leaves out: the message names the feature.
#[allow(dead_code)] // unused when every backend feature is enabled
fn not_built(url: &str, feature: &str, _rest: &str) -> Error {
    bad_url(
        url,
        &format!("the `{feature}` feature of dlock-rs is not enabled"),
    )
}

fn bad_url(url: &str, reason: &str) -> Error {
    Error::InvalidInput(InvalidInput::Url {
        url: redact_url(url),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_typed_errors() {
        for url in [
            "",
            "memory",
            "nope://x",
            "redis://u:pw@127.0.0.1:notaport",
            "memory://a/b",
            "://",
        ] {
            let err = connect(url)
                .await
                .err()
                .unwrap_or_else(|| panic!("{url} accepted"));
            assert!(
                matches!(err, Error::InvalidInput(InvalidInput::Url { .. })),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("pw@"), "password shown: {err}");
        }
    }

    #[tokio::test]
    async fn memory_urls_share_a_table_per_name() {
        use dlock_core::LockExt;
        use std::time::Duration;
        let a = connect("memory://shared-test").await.expect("connect");
        let b = connect("memory://shared-test/").await.expect("connect");
        let c = connect("memory://other-test").await.expect("connect");
        let ttl = Duration::from_secs(5);
        let _held = a.try_acquire("k", ttl).await.expect("ok").expect("free");
        assert!(b.try_acquire("k", ttl).await.expect("ok").is_none());
        assert!(c.try_acquire("k", ttl).await.expect("ok").is_some());
    }
}
