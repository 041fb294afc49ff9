//! `connect(url)`: pick a backend at run time, by URL.

use dlock_core::{DynLock, Error, InvalidInput, redact_url};

/// Connects to the backend a URL names, so configuration alone picks it:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` or `memory://NAME` | in-process table, shared by every `connect` to the same name in this process | `memory` (default) |
/// | `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) | one Redis server | `redis` |
/// | `etcd://[user:password@]host:port[,host:port...][/prefix/]`, `etcds://...` (TLS) | an etcd cluster | `etcd` |
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
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad_url(
            url,
            "expected SCHEME://..., for example memory:// or redis://host:6379",
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        #[cfg(feature = "memory")]
        "memory" => memory(url, rest),
        #[cfg(not(feature = "memory"))]
        "memory" => Err(bad_url(
            url,
            "the `memory` feature of dlock-rs is not enabled",
        )),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(std::sync::Arc::new(
            dlock_redis::RedisLock::connect(url).await?,
        )),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => Err(bad_url(
            url,
            "the `redis` feature of dlock-rs is not enabled",
        )),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(std::sync::Arc::new(
            dlock_etcd::EtcdLock::connect(url).await?,
        )),
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => Err(bad_url(
            url,
            "the `etcd` feature of dlock-rs is not enabled",
        )),
        "redlock" => Err(bad_url(
            url,
            &format!("the `{scheme}` backend is not available in this build"),
        )),
        other => Err(bad_url(url, &format!("unknown scheme `{other}`"))),
    }
}

#[cfg(feature = "memory")]
fn memory(url: &str, rest: &str) -> Result<DynLock, Error> {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex, OnceLock},
    };

    use dlock_memory::MemoryLock;

    static TABLES: OnceLock<Mutex<HashMap<String, MemoryLock>>> = OnceLock::new();
    let name = rest.trim_end_matches('/');
    if name.contains(['/', '?', '#', '@']) {
        return Err(bad_url(url, "a memory URL is memory:// or memory://NAME"));
    }
    let mut tables = TABLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let lock = tables.entry(name.to_owned()).or_default().clone();
    Ok(Arc::new(lock))
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
