//! etcd edge cases: frozen waiters, fenced writes inside etcd, credentials,
//! unreachable endpoints.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Acquire, Attempt, AttemptRequest, Capabilities, Error, Lock, LockExt, LockKey, OwnerId,
};
use dlock_etcd::{EtcdConfig, EtcdLock};
use dlock_testkit::{free_port, shared_etcd_url};
use tokio::time::Instant;

fn key(name: &str) -> String {
    format!("dlock-edge:{name}:{}", OwnerId::random())
}

/// An etcd client whose process freezes after its first attempt for `freeze`: it
/// stops refreshing its place in line, as a stopped VM would.
#[derive(Clone)]
struct FreezesAfterFirstAttempt {
    inner: EtcdLock,
    attempts: Arc<AtomicUsize>,
    freeze: Duration,
}

#[async_trait]
impl Lock for FreezesAfterFirstAttempt {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn attempt(&self, request: AttemptRequest<'_>) -> Result<Attempt, Error> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 1 {
            tokio::time::sleep(self.freeze).await;
        }
        self.inner.attempt(request).await
    }
    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        self.inner.extend(key, owner, ttl).await
    }
    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        self.inner.release(key, owner).await
    }
    fn operation_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_expired_frees_the_line_and_queues_again() {
    let url = shared_etcd_url().await;
    let holder = EtcdLock::connect(&url).await.expect("connect");
    let next = EtcdLock::connect(&url).await.expect("connect");
    let k = key("frozen-waiter");
    let ttl = Duration::from_secs(2);
    let mut held = holder
        .acquire(&k, Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");

    let frozen = FreezesAfterFirstAttempt {
        inner: EtcdLock::connect(&url).await.expect("connect"),
        attempts: Arc::default(),
        freeze: ttl * 3,
    };
    let frozen_wait = {
        let k = k.clone();
        tokio::spawn(async move {
            frozen
                .acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(60)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued behind the frozen waiter.
    let behind = {
        let k = k.clone();
        tokio::spawn(async move {
            next.acquire(&k, Acquire::ttl(ttl).wait(Duration::from_secs(60)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.release().await.expect("release");

    // The frozen waiter's lease ran out while it slept: the line moves on without it...
    let started = Instant::now();
    let granted = behind
        .await
        .expect("task")
        .expect("the next waiter was blocked by a frozen one");
    assert!(
        started.elapsed() < ttl * 3,
        "blocked for {:?}",
        started.elapsed()
    );
    // ...and when it wakes, it finds its place gone and queues again, at the end:
    // it is granted once the next holder's lease lapses (2 s, no keep-alive), on a
    // new key, with validity counted from a new request, never a lease that
    // lapsed before it was handed out (its first answer came after its TTL).
    let frozen_result = frozen_wait.await.expect("task");
    match frozen_result {
        Ok(lease) => {
            assert!(
                lease.fence() > granted.fence(),
                "{lease:?} after {granted:?}"
            );
            assert!(lease.is_valid(), "handed out lapsed: {lease:?}");
        }
        Err(e) => panic!("the frozen waiter failed instead of queueing again: {e:?}"),
    }
    drop(granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_inside_etcd_stop_with_the_lease() {
    let url = shared_etcd_url().await;
    let a = EtcdLock::connect(&url).await.expect("connect");
    let b = EtcdLock::connect(&url).await.expect("connect");
    let k = key("fenced");
    let resource = format!("{k}:state");
    let old = a
        .acquire(&k, Acquire::ttl(Duration::from_secs(2)))
        .await
        .expect("acquire");
    assert!(
        a.put_if_held(&old, &resource, b"old holder")
            .await
            .expect("put")
    );

    // The old holder stalls past its TTL; another takes the lock.
    let new = b
        .acquire(
            &k,
            Acquire::ttl(Duration::from_secs(10)).wait(Duration::from_secs(10)),
        )
        .await
        .expect("acquire after expiry");
    assert!(new.fence() > old.fence());
    assert!(
        b.put_if_held(&new, &resource, b"new holder")
            .await
            .expect("put")
    );
    // The stale write is refused inside etcd, in the same transaction as the check.
    assert!(!a.put_if_held(&old, &resource, b"stale").await.expect("put"));
    assert_eq!(
        b.get_fenced(&resource).await.expect("get").as_deref(),
        Some(b"new holder".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail_within_the_connect_timeout() {
    let limit = Duration::from_secs(2);
    let config = EtcdConfig::builder()
        .endpoint(format!("http://127.0.0.1:{}", free_port()))
        .connect_timeout(limit)
        .build()
        .expect("config");
    let started = Instant::now();
    let err = EtcdLock::connect_with(config)
        .await
        .expect_err("nothing listens there");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() <= limit + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_before_any_io() {
    for url in [
        "",
        "etcd://",
        "etcd://127.0.0.1",
        "http://127.0.0.1:2379",
        "etcd://u@127.0.0.1:2379",
    ] {
        let err = EtcdLock::connect(url).await.expect_err(url);
        assert!(err.is_invalid_input(), "{url}: {err}");
    }
    let err = EtcdConfig::builder().build().expect_err("no endpoints");
    assert!(err.is_invalid_input());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_under_the_minimum_names_the_minimum() {
    let url = shared_etcd_url().await;
    let locks = EtcdLock::connect(&url).await.expect("connect");
    let err = locks
        .try_acquire(&key("short"), Duration::from_secs(1))
        .await
        .expect_err("1 s < 2 s");
    assert!(err.to_string().contains("2s"), "{err}");
    let err = locks
        .try_acquire(&key("fraction"), Duration::from_millis(2500))
        .await
        .expect_err("2.5 s");
    assert!(err.is_invalid_input(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_auth_errors() {
    let server = dlock_testkit::start_etcd().await;
    let endpoint = format!("http://127.0.0.1:{}", server.port());
    // Turn authentication on: a root user with a password.
    let mut admin = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .expect("connect");
    admin
        .user_add("root", "rootpw", None)
        .await
        .expect("user add");
    admin.user_grant_role("root", "root").await.expect("grant");
    admin.auth_enable().await.expect("auth enable");

    let with = |user: Option<(&str, &str)>| {
        let mut b = EtcdConfig::builder()
            .endpoint(&endpoint)
            .connect_timeout(Duration::from_secs(3));
        if let Some((name, password)) = user {
            b = b.user(name, password);
        }
        b.build().expect("config")
    };
    match EtcdLock::connect_with(with(Some(("root", "wrong")))).await {
        Err(Error::Auth { .. }) => {}
        other => panic!("a wrong password gave {other:?}"),
    }
    let locks = EtcdLock::connect_with(with(Some(("root", "rootpw"))))
        .await
        .expect("right password");
    let lease = locks
        .try_acquire(&key("auth"), Duration::from_secs(5))
        .await
        .expect("acquire");
    assert!(lease.is_some());
    // No credentials: refused at the first request, as an auth error.
    match EtcdLock::connect_with(with(None)).await {
        Err(Error::Auth { .. }) => {}
        other => panic!("no credentials gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_certificate_made_at_test_time() {
    let cert = dlock_testkit::TestCertificate::new("etcd");
    let server = dlock_testkit::start_etcd_tls(cert.dir()).await;
    let endpoint = format!("https://127.0.0.1:{}", server.port());

    let trusted = EtcdConfig::builder()
        .endpoint(&endpoint)
        .tls_ca_pem(cert.pem().as_bytes())
        .build()
        .expect("config");
    let locks = EtcdLock::connect_with(trusted).await.expect("TLS connect");
    let mut lease = locks
        .acquire(&key("tls"), Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire over TLS");
    lease.release().await.expect("release over TLS");

    // Without the CA the server is not trusted.
    let untrusted = EtcdConfig::builder()
        .endpoint(&endpoint)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("config");
    assert!(
        EtcdLock::connect_with(untrusted).await.is_err(),
        "an untrusted server was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_after_an_operator_broke_the_lock_is_lease_lost() {
    let url = shared_etcd_url().await;
    let a = EtcdLock::connect(&url).await.expect("connect");
    let b = EtcdLock::connect(&url).await.expect("connect");
    let k = key("broken");
    let mut old = a
        .acquire(&k, Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");
    assert!(a.force_release(&k).await.expect("force release"));
    let mut new = b
        .acquire(
            &k,
            Acquire::ttl(Duration::from_secs(30)).wait(Duration::from_secs(5)),
        )
        .await
        .expect("acquire after the break");
    let err = old
        .release()
        .await
        .expect_err("the broken lease released cleanly");
    assert!(err.is_lease_lost(), "{err:?}");
    // The new holder is untouched.
    assert!(
        b.try_acquire(&k, Duration::from_secs(5))
            .await
            .expect("try")
            .is_none()
    );
    new.release().await.expect("the new holder's release");
}

/// The keys in line for `key` under `prefix`, oldest first.
async fn line(raw: &mut etcd_client::Client, prefix: &str, key: &str) -> Vec<Vec<u8>> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_sort(
            etcd_client::SortTarget::Create,
            etcd_client::SortOrder::Ascend,
        )
        .with_keys_only();
    let answer = raw
        .get(format!("{prefix}v2/lock/{key}/"), Some(options))
        .await
        .expect("get");
    answer.kvs().iter().map(|kv| kv.key().to_vec()).collect()
}

/// Holder and one waiter on a fresh prefix; returns the waiter's pending acquisition
/// and both keys in line (holder's first), once the waiter is queued.
async fn holder_and_one_waiter(
    name: &str,
) -> (
    etcd_client::Client,
    dlock_core::Lease,
    tokio::task::JoinHandle<Result<dlock_core::Lease, Error>>,
    Vec<Vec<u8>>,
) {
    let url = shared_etcd_url().await;
    let prefix = format!("dlock-edge-{}/", OwnerId::random());
    let scoped = format!("{url}/{prefix}");
    let holder = EtcdLock::connect(&scoped).await.expect("connect");
    let waiter = EtcdLock::connect(&scoped).await.expect("connect");
    let mut raw = etcd_client::Client::connect([url.replace("etcd://", "http://")], None)
        .await
        .expect("connect");
    let held = holder
        .acquire(name, Acquire::ttl(Duration::from_secs(30)))
        .await
        .expect("acquire");
    let pending = {
        let name = name.to_owned();
        tokio::spawn(async move {
            waiter
                .acquire(
                    &name,
                    Acquire::ttl(Duration::from_secs(30)).wait(Duration::from_secs(20)),
                )
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys = line(&mut raw, &prefix, name).await;
        if keys.len() == 2 {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "the waiter never queued: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let the waiter arm its watch after joining the line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (raw, held, pending, keys)
}

/// The current revision of the store: a key created later has a larger one.
async fn revision(raw: &mut etcd_client::Client) -> u64 {
    let answer = raw.get("dlock-edge-revision", None).await.expect("get");
    u64::try_from(answer.header().expect("header").revision()).expect("revision")
}

/// A waiter whose key was deleted held nothing: it must not come out holding on
/// that key (it is gone), but it queues again and may be granted on a new one,
/// created after `before` (the revision read before the deletion).
fn granted_on_a_new_key(result: Result<dlock_core::Lease, Error>, before: u64) {
    match result {
        Ok(lease) => assert!(
            lease.fence().get() > before && lease.is_valid(),
            "granted on its deleted key, or already lapsed: {lease:?}, deletion after revision {before}"
        ),
        Err(e) => panic!("the waiter failed instead of queueing again: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_key_was_deleted_is_not_granted_when_the_holder_leaves() {
    // The only waiter is granted from its watch, without reading again; it must
    // still notice that its own key went first (an operator's delete).
    let (mut raw, mut held, pending, keys) = holder_and_one_waiter("deleted-waiter").await;
    let before = revision(&mut raw).await;
    raw.delete(keys[1].clone(), None).await.expect("delete");
    held.release().await.expect("release");
    granted_on_a_new_key(pending.await.expect("task"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_key_goes_with_the_holders_in_one_revision_is_not_granted() {
    // Both deletions in one transaction, the holder's listed first: one answer of
    // the watch carries both, and the waiter must weigh them together.
    let (mut raw, held, pending, keys) = holder_and_one_waiter("one-revision").await;
    let before = revision(&mut raw).await;
    let both = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::delete(keys[0].clone(), None),
        etcd_client::TxnOp::delete(keys[1].clone(), None),
    ]);
    raw.txn(both).await.expect("txn");
    granted_on_a_new_key(pending.await.expect("task"), before);
    held.leave_to_expire();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_break_with_a_waiter_in_line_grants_nobody_stale() {
    // `force_release` deletes every key in line in one revision: the waiter sees the
    // holder's key and its own go together, and must not come out holding.
    let (mut raw, held, pending, keys) = holder_and_one_waiter("break-in-line").await;
    let url = shared_etcd_url().await;
    let prefix = String::from_utf8(keys[0].clone()).expect("utf-8");
    let prefix = &prefix[..prefix.find("v2/lock/break-in-line/").expect("dir")];
    let admin = EtcdLock::connect(&format!("{url}/{prefix}"))
        .await
        .expect("connect");
    let before = revision(&mut raw).await;
    assert!(admin.force_release("break-in-line").await.expect("break"));
    let granted = pending.await.expect("task");
    // Its new key is the only one in line.
    assert_eq!(line(&mut raw, prefix, "break-in-line").await.len(), 1);
    granted_on_a_new_key(granted, before);
    // Dropped: released in the background.
    let give_up = Instant::now() + Duration::from_secs(5);
    while !line(&mut raw, prefix, "break-in-line").await.is_empty() {
        assert!(Instant::now() < give_up, "the new key outlived its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.leave_to_expire();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_waiter_is_granted_when_the_holder_releases() {
    let (mut raw, mut held, pending, keys) = holder_and_one_waiter("handoff").await;
    let holder_fence = held.fence();
    held.release().await.expect("release");
    let mut granted = pending
        .await
        .expect("task")
        .expect("the waiter was not granted");
    assert!(granted.fence() > holder_fence);
    // It holds the key it queued with, now first in line.
    let prefix = String::from_utf8(keys[0].clone()).expect("utf-8");
    let prefix = &prefix[..prefix.find("v2/lock/handoff/").expect("dir")];
    assert_eq!(
        line(&mut raw, prefix, "handoff").await,
        vec![keys[1].clone()]
    );
    granted.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_are_reused_once_their_keys_are_gone_and_stale_leases_stay_stale() {
    // etcd keeps every deleted key name in its index until compaction, and joining
    // the line reads the lock's directory: reusing names keeps that read short.
    let url = shared_etcd_url().await;
    let prefix = format!("dlock-edge-{}/", OwnerId::random());
    let lock = EtcdLock::connect(&format!("{url}/{prefix}"))
        .await
        .expect("connect");
    let mut raw = etcd_client::Client::connect([url.replace("etcd://", "http://")], None)
        .await
        .expect("connect");
    let ttl = Duration::from_secs(30);
    let mut names = std::collections::BTreeSet::new();
    let mut owners = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let mut lease = lock
            .acquire("reused", Acquire::ttl(ttl))
            .await
            .expect("acquire");
        names.extend(line(&mut raw, &prefix, "reused").await);
        owners.insert(lease.owner());
        lease.release().await.expect("release");
    }
    assert_eq!(names.len(), 1, "names: {names:?}");
    assert_eq!(
        owners.len(),
        20,
        "owner ids must stay unique per acquisition"
    );

    // Two acquisitions alive at once never share a name.
    let first = lock.acquire("a", Acquire::ttl(ttl)).await.expect("acquire");
    let second = lock.acquire("b", Acquire::ttl(ttl)).await.expect("acquire");
    let a = line(&mut raw, &prefix, "a").await;
    let b = line(&mut raw, &prefix, "b").await;
    assert_ne!(
        a[0].rsplit(|c| *c == b'/').next(),
        b[0].rsplit(|c| *c == b'/').next()
    );
    drop((first, second));

    // A released lease whose name the next acquisition reuses cannot write fenced.
    let mut old = lock
        .acquire("fenced", Acquire::ttl(ttl))
        .await
        .expect("acquire");
    old.release().await.expect("release");
    let mut new = lock
        .acquire("fenced", Acquire::ttl(ttl))
        .await
        .expect("acquire");
    assert!(new.fence() > old.fence());
    assert!(
        !lock
            .put_if_held(&old, "order", b"stale")
            .await
            .expect("put"),
        "a stale lease wrote through a reused name"
    );
    assert!(
        lock.put_if_held(&new, "order", b"fresh")
            .await
            .expect("put")
    );
    new.release().await.expect("release");
}

/// The read-modify-write that loses an update through a write-only fence: A reads
/// and stalls past its TTL, B takes the lock and reads the same value. With
/// `get_fenced` then `put_if_held`, A's write is refused. B works inside
/// `with_lock`, through its `LeaseHandle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_held_makes_a_read_modify_write_safe() {
    let url = shared_etcd_url().await;
    let a = EtcdLock::connect(&url).await.expect("connect");
    let b = EtcdLock::connect(&url).await.expect("connect");
    let k = key("rmw");
    let account = format!("{k}:balance");
    let balance_of = |read: Option<Vec<u8>>| -> u64 {
        String::from_utf8_lossy(&read.expect("written"))
            .parse()
            .expect("a number")
    };
    let setup = a
        .acquire(&k, Acquire::ttl(Duration::from_secs(10)))
        .await
        .expect("acquire");
    assert!(a.put_if_held(&setup, &account, b"100").await.expect("put"));
    drop(setup);

    // A reads, then stalls past its 2 s TTL (no keep-alive).
    let stale = a
        .acquire(
            &k,
            Acquire::ttl(Duration::from_secs(2)).wait(Duration::from_secs(10)),
        )
        .await
        .expect("acquire");
    let a_read = balance_of(a.get_fenced(&account).await.expect("get"));
    // B waits for the key, reads the same balance and debits it.
    let b_debit = b.clone().with_lock(
        &k,
        Acquire::ttl(Duration::from_secs(10)).wait(Duration::from_secs(20)),
        {
            let (b, account) = (b.clone(), account.clone());
            move |lease| async move {
                let read = balance_of(b.get_fenced(&account).await.expect("get"));
                b.put_if_held(&lease, &account, (read - 10).to_string().as_bytes())
                    .await
                    .expect("put")
            }
        },
    );
    assert_eq!(b_debit.await.ok(), Some(true), "B's write was refused");
    assert_eq!(a_read, 100);
    assert!(
        !a.put_if_held(&stale, &account, (a_read - 10).to_string().as_bytes())
            .await
            .expect("put"),
        "the stalled holder's write, computed from a superseded read, went through"
    );
    assert_eq!(
        b.get_fenced(&account).await.expect("get").as_deref(),
        Some(b"90".as_slice()),
        "an update was lost"
    );
}

/// No lock key, however named, reaches internal data: a lock on `fenced`, `gate`
/// or `election` is an ordinary free lock beside fenced writes, gate registers and
/// elections, and breaking it deletes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_ordinary_lock_keys() {
    use dlock_core::{FenceGate, FenceToken};
    let url = shared_etcd_url().await;
    let lock = EtcdLock::connect(&url).await.expect("connect");
    let gate = dlock_etcd::EtcdFenceGate::new(&lock);
    let held = lock
        .acquire(&key("writer"), Acquire::ttl(Duration::from_secs(10)))
        .await
        .expect("acquire");
    for name in ["fenced", "gate", "election", "lock", "v2", "v1", "fenced/x"] {
        assert!(lock.put_if_held(&held, name, b"data").await.expect("put"));
        assert!(
            gate.write(name, FenceToken(1), b"data")
                .await
                .expect("write")
                .is_accepted()
        );
    }
    let election = dlock_etcd::EtcdElection::new(&lock, "election").expect("election");
    let leader = election
        .campaign("me", dlock_core::Campaign::ttl(Duration::from_secs(10)))
        .await
        .expect("campaign");
    for name in ["fenced", "gate", "election", "lock", "v2", "v1", "fenced/x"] {
        let mut lease = lock
            .try_acquire(name, Duration::from_secs(5))
            .await
            .expect("try_acquire")
            .unwrap_or_else(|| panic!("the free key `{name}` is busy"));
        lease.release().await.expect("release");
        lock.force_release(name).await.expect("force_release");
    }
    for name in ["fenced", "gate", "election", "lock", "v2", "v1", "fenced/x"] {
        assert_eq!(
            lock.get_fenced(name).await.expect("get").as_deref(),
            Some(b"data".as_slice()),
            "breaking a lock deleted the fenced write `{name}`"
        );
        assert!(gate.read(name).await.expect("read").is_some());
    }
    assert!(leader.is_leader(), "breaking a lock ended an election");
    leader.resign().await.expect("resign");
}

/// A waiter whose place in line is cleared (here by an operator's break, as after
/// an outage longer than its TTL) held nothing: it queues again and is granted,
/// instead of failing with "lease lost" for a lock it never had. In both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_place_is_cleared_queues_again_in_both_modes() {
    let url = shared_etcd_url().await;
    for mode in ["", "?session=2"] {
        let scoped = format!("{url}/dlock-rejoin-{}/{mode}", OwnerId::random());
        let connect = || async { EtcdLock::connect(&scoped).await.expect("connect") };
        let (a, b, admin) = (connect().await, connect().await, connect().await);
        let ttl = Duration::from_secs(2);
        let held = a
            .acquire("k", Acquire::ttl(ttl).keep_alive(1.0 / 3.0))
            .await
            .expect("a acquires");
        let waiter = tokio::spawn(async move {
            b.acquire("k", Acquire::ttl(ttl).wait(Duration::from_secs(20)))
                .await
        });
        // B is in line (it looks again every third of the TTL).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(admin.force_release("k").await.expect("force release"));
        let granted = tokio::time::timeout(Duration::from_secs(15), waiter)
            .await
            .unwrap_or_else(|_| panic!("mode {mode:?}: the waiter was never granted"))
            .expect("task");
        match granted {
            Ok(lease) => assert!(lease.is_valid(), "mode {mode:?}: {lease:?}"),
            Err(e) => panic!("mode {mode:?}: the waiter failed: {e:?}"),
        }
        drop(held);
    }
}
