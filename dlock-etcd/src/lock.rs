//! `EtcdLock`: locks on etcd, a lease per lock (or one per client, in session mode),
//! waiters in create-revision order.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    Attempt, AttemptRequest, BootInstant, Capabilities, Error, ExpiryScope, FenceToken, Holder,
    LeaseHandle, Lock, LockKey, MAX_REPRESENTABLE_TTL, OwnerId, WakeSignal,
};
use etcd_client::{
    Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

use crate::{
    EtcdConfig,
    endpoints::Endpoints,
    errors::{from_etcd, is_lease_not_found},
    keys::KeyLayout,
    owners::Owners,
    session::Session,
};

/// What the value of a key made in session mode starts with: [`EtcdLock::force_release`]
/// deletes it without revoking its lease, which the client's other locks share.
/// The rest is the number of the first attempt that made it (see `session_value`).
const SESSION_KEY: &str = "session";

/// The value of the key `place`'s first attempt makes in session mode: it tells
/// this acquisition's key from a later one under the same name and lease.
fn session_value(place: &Place) -> String {
    format!("{SESSION_KEY}:{}", place.attempt)
}

/// etcd's lease TTLs are whole seconds, and it refuses very short ones.
const MIN_TTL: Duration = Duration::from_secs(2);

/// Locks on an etcd cluster. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct EtcdLock {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    endpoints: Endpoints,
    layout: KeyLayout,
    config: EtcdConfig,
    /// Acquisitions this client has a key for: waiting in line or holding.
    places: Mutex<HashMap<OwnerId, Place>>,
    /// Owner ids, and the key names they reuse.
    owners: Owners,
    /// The number of places at which expired ones are swept out.
    sweep_at: std::sync::atomic::AtomicUsize,
    tracker: dlock_core::Tracker,
    /// Session mode: the lease this client's locks share.
    session: Option<Session>,
    /// Numbers first attempts, for their cancel markers in session mode.
    attempts: AtomicU64,
    /// The runtime this client was connected on: a lease dropped outside any
    /// runtime (a plain thread) is released there, since in session mode nothing
    /// else would free its key while the client lives.
    runtime: tokio::runtime::Handle,
}

/// Below this many places, none are swept.
const SWEEP_FLOOR: usize = 256;

/// One acquisition's key in etcd.
#[derive(Clone, Copy, Debug)]
struct Place {
    lease: i64,
    /// The key's create revision: its place in line, and the fencing token once granted.
    revision: i64,
    /// When the lease was last granted or refreshed (the request's send time): its
    /// countdown on the server started no earlier.
    refreshed: BootInstant,
    /// The lease's TTL, fixed for its life.
    ttl: Duration,
    /// Our only predecessor was deleted while our key stayed, as one ordered watch
    /// saw it: we are first in line without reading again (see `watch_line`).
    first_in_line: bool,
    /// Session mode: which first attempt made the key, for its cancel marker.
    attempt: u64,
}

impl Place {
    /// Refreshed within the last third of its TTL: the server's countdown has most of
    /// its way to go, so it cannot have expired the lease, and it needs no refresh yet.
    fn is_fresh(&self) -> bool {
        BootInstant::now().saturating_duration_since(self.refreshed) < self.ttl / 3
    }
}

/// The key just ahead of ours in line.
struct Predecessor {
    key: Vec<u8>,
    /// Its create revision: a key names a client's slot, which comes back, so a
    /// key of the same name made later (behind us) is another key.
    revision: i64,
    /// It is the only key ahead of ours. Keys never join ahead of an existing one
    /// (create revisions only grow), so once it is deleted we are first.
    only: bool,
}

impl EtcdLock {
    /// Connects to `etcd://host:port[,host:port...][/prefix/]` with default settings.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(EtcdConfig::from_url(url)?).await
    }

    /// Connects with `config`; fails within its connect timeout if no endpoint
    /// answers, or if etcd refuses the credentials.
    pub async fn connect_with(config: EtcdConfig) -> Result<Self, Error> {
        let limit = config.connect_timeout;
        dlock_core::bounded("connect", limit, Self::open(config)).await
    }

    async fn open(config: EtcdConfig) -> Result<Self, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(config.keep_alive_interval, config.operation_timeout)
            // A member cut off from the leader refuses instead of serving stale reads.
            .with_require_leader(true);
        if let Some((name, password)) = &config.user {
            options = options.with_user(name, password);
        }
        if config.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = etcd_client::TlsOptions::new().with_enabled_roots();
            if let Some(pem) = &config.tls_ca_pem {
                tls = etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            options = options.with_tls(tls);
        }
        let endpoints = Endpoints::new(config.endpoints.clone(), options, config.operation_timeout);
        // Connecting is lazy: one read under the prefix proves an endpoint answers and
        // the credentials are good (a status request needs no credentials).
        let probe = GetOptions::new().with_keys_only().with_limit(1);
        let prefix = config.prefix.clone();
        let mut reached = Err(Error::unavailable("no etcd endpoint"));
        for _ in 0..config.endpoints.len() {
            let (prefix, probe) = (prefix.clone(), probe.clone());
            reached = endpoints
                .call(|mut c| async move { c.get(prefix, Some(probe)).await.map_err(from_etcd) })
                .await
                .map(drop);
            if !reached.as_ref().is_err_and(Error::is_retryable) {
                break;
            }
        }
        reached?;
        Ok(EtcdLock {
            inner: Arc::new(Inner {
                endpoints,
                layout: KeyLayout::new(&config.prefix),
                places: Mutex::default(),
                owners: Owners::new(),
                sweep_at: std::sync::atomic::AtomicUsize::new(SWEEP_FLOOR),
                tracker: dlock_core::Tracker::new(),
                session: config.session_ttl.map(Session::new),
                attempts: AtomicU64::new(0),
                runtime: tokio::runtime::Handle::current(),
                config,
            }),
        })
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(inner: &Weak<Inner>) -> Option<EtcdLock> {
        inner.upgrade().map(|inner| EtcdLock { inner })
    }

    /// Session mode's shared lease, if this client is in session mode.
    pub(crate) fn session(&self) -> Option<&Session> {
        self.inner.session.as_ref()
    }

    /// A new lease of `ttl` (whole seconds).
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, Error> {
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(self
            .inner
            .endpoints
            .call(|mut c| async move { c.lease_grant(seconds, None).await.map_err(from_etcd) })
            .await?
            .id())
    }

    /// A refresh of `lease` sent at `sent` succeeded: in session mode, every lock
    /// of this client gains from it.
    fn note_refresh(&self, lease: i64, sent: BootInstant) {
        if let Some(session) = self.session() {
            session.refreshed(lease, sent);
        }
    }

    /// In session mode, `place` counts from the session's last refresh, if the
    /// session is still the one it was made in.
    fn with_session_refresh(&self, mut place: Place) -> Place {
        if let Some(live) = self.session().and_then(Session::current)
            && live.lease == place.lease
        {
            place.refreshed = place.refreshed.max(live.refreshed);
        }
        place
    }

    /// Takes back a place in line without ending its lease (session mode): deletes
    /// the key if it is still the one made at `place.revision`, or, if the key may
    /// not exist yet (a first attempt's answer was lost), makes sure it never will.
    /// `Ok(true)` if the key was there.
    async fn withdraw(&self, key: &LockKey, owner: &OwnerId, place: Place) -> Result<bool, Error> {
        let entry = self.inner.layout.entry(key, owner);
        let txn = if place.revision > 0 {
            Txn::new()
                .when([Compare::create_revision(
                    entry.clone(),
                    CompareOp::Equal,
                    place.revision,
                )])
                .and_then([TxnOp::delete(entry, None)])
        } else {
            // By value, not by lease: the lease is shared, and a later acquisition
            // may have reused the name by the time a late retry of this one lands.
            Txn::new()
                .when([Compare::value(
                    entry.clone(),
                    CompareOp::Equal,
                    session_value(&place),
                )])
                .and_then([TxnOp::delete(entry.clone(), None)])
                .or_else([self.cancel(&entry, place)])
        };
        // The lease gone: the session ended, and its keys with it.
        Ok(self.txn_on_lease(txn).await?.is_some_and(|r| r.succeeded()))
    }

    /// A transaction that writes on a session's lease; `None` if etcd no longer has
    /// the lease (and so none of the keys on it).
    async fn txn_on_lease(&self, txn: Txn) -> Result<Option<etcd_client::TxnResponse>, Error> {
        self.inner
            .endpoints
            .call(|mut c| async move {
                match c.txn(txn).await {
                    Ok(response) => Ok(Some(response)),
                    Err(e) if is_lease_not_found(&e) => Ok(None),
                    Err(e) => Err(from_etcd(e)),
                }
            })
            .await
    }

    /// The cancel marker of `place`'s first attempt: its transaction creates the key
    /// only while the marker is absent, so one that arrives late does nothing. It
    /// lives on the session's lease.
    fn cancel(&self, entry: &str, place: Place) -> TxnOp {
        TxnOp::put(
            self.inner.layout.cancelled(entry, place.attempt),
            "",
            Some(PutOptions::new().with_lease(place.lease)),
        )
    }

    /// The configuration this lock was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// Writes `value` at `resource` (under this client's prefix) only while `lease`
    /// (a `&Lease` or a `&LeaseHandle`) still holds its lock, in one etcd transaction
    /// guarded on the lock key's create revision. `Ok(false)`: the lease was lost,
    /// nothing was written.
    ///
    /// A read-modify-write made of [`get_fenced`](Self::get_fenced), then
    /// `put_if_held`, is safe: the put is admitted only while this lease still holds
    /// the lock, and while it does no other holder can have written since the read.
    pub async fn put_if_held(
        &self,
        lease: impl Into<LeaseHandle>,
        resource: &str,
        value: &[u8],
    ) -> Result<bool, Error> {
        let lease = lease.into();
        let key = LockKey::new(lease.key())?;
        let lock_key = self.inner.layout.entry(&key, &lease.owner());
        let revision = i64::try_from(lease.fence().get()).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::create_revision(
                lock_key,
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(self.inner.layout.fenced(resource), value, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            dlock_core::metrics::fence_rejected("etcd");
            tracing::warn!(target: "dlock::fence", gate = "etcd", resource, fence = lease.fence().get(), "put_if_held refused: the lease no longer holds the lock");
        }
        Ok(response.succeeded())
    }

    /// Reads what [`put_if_held`](Self::put_if_held) wrote at `resource`.
    pub async fn get_fenced(&self, resource: &str) -> Result<Option<Vec<u8>>, Error> {
        let key = self.inner.layout.fenced(resource);
        let response = self
            .inner
            .endpoints
            .call(|mut c| async move { c.get(key, None).await.map_err(from_etcd) })
            .await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Breaks the lock on `key`, as an operator breaking a stuck lock would: deletes
    /// the keys of its holder and of every waiter in one step (one revision, so no
    /// waiter sees the holder go before itself and takes over), then revokes their
    /// leases. Their next extension or release finds the lease gone (`LeaseLost`) and
    /// their `lost()` fires. Returns whether there was anything to break.
    ///
    /// Deleting the keys by hand (etcdctl) instead leaves the leases alive: holders
    /// then notice at their next extension, but a release cannot tell.
    pub async fn force_release(&self, key: &str) -> Result<bool, Error> {
        let key = LockKey::new(key)?;
        let dir = self.inner.layout.dir(&key);
        let deleted = self
            .inner
            .endpoints
            .call(|mut c| async move {
                c.delete(
                    dir,
                    Some(DeleteOptions::new().with_prefix().with_prev_key()),
                )
                .await
                .map_err(from_etcd)
            })
            .await?;
        let found = deleted.prev_kvs();
        // A session's lease is shared with its client's other locks: deleting the
        // key is enough (the holder finds it gone at its next extension).
        for kv in found
            .iter()
            .filter(|kv| !kv.value().starts_with(SESSION_KEY.as_bytes()))
        {
            self.revoke(kv.lease()).await?;
        }
        Ok(!found.is_empty())
    }

    /// The endpoint requests go to now (it changes on failover).
    pub fn current_endpoint(&self) -> &str {
        self.inner.endpoints.current_url()
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, Error> {
        self.inner
            .endpoints
            .call(|mut c| async move { c.txn(txn).await.map_err(from_etcd) })
            .await
    }

    /// Whether `key` exists.
    pub(crate) async fn exists(&self, key: Vec<u8>) -> Result<bool, Error> {
        let options = GetOptions::new().with_keys_only();
        let answer = self
            .inner
            .endpoints
            .call(|mut c| async move { c.get(key, Some(options)).await.map_err(from_etcd) })
            .await?;
        Ok(!answer.kvs().is_empty())
    }

    pub(crate) fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    pub(crate) fn layout(&self) -> &KeyLayout {
        &self.inner.layout
    }

    fn places(&self) -> MutexGuard<'_, HashMap<OwnerId, Place>> {
        self.inner.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `owner`'s acquisition is over and its key gone (or never made): forget its
    /// place, and let its key name serve the next acquisition.
    fn forget(&self, owner: &OwnerId) {
        self.places().remove(owner);
        self.inner.owners.give_back(owner);
    }

    /// Refreshes `lease` once; `false` if etcd no longer has it.
    pub(crate) async fn refresh(&self, lease: i64) -> Result<bool, Error> {
        self.inner.endpoints.call(|c| refresh_once(c, lease)).await
    }

    /// [`refresh`](Self::refresh) within `limit`: a refresh still out then counts
    /// as its member failing (frozen, say), so the next one goes to another member
    /// while the lease still lives.
    pub(crate) async fn refresh_within(&self, lease: i64, limit: Duration) -> Result<bool, Error> {
        self.inner
            .endpoints
            .call_within("refresh", limit, |c| refresh_once(c, lease))
            .await
    }

    /// First attempt: a lease, then our key and the three newest keys of the
    /// directory (ours, our predecessor, and whether anyone is ahead of it), in one
    /// transaction.
    async fn join_line(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<(Place, Option<Predecessor>), Error> {
        let (lease, granted) = match self.session() {
            Some(session) => {
                let live = session.lease(self).await?;
                (live.lease, live.refreshed)
            }
            None => {
                let granted = BootInstant::now();
                (self.grant(ttl).await?, granted)
            }
        };
        let mut place = Place {
            lease,
            revision: 0,
            refreshed: granted,
            ttl,
            first_in_line: false,
            attempt: self.inner.attempts.fetch_add(1, Ordering::Relaxed),
        };
        // Known before the key exists, so a cleanup can revoke it (or, in session
        // mode, cancel it) whatever happens next.
        self.revoke_swept(self.sweep_places());
        self.places().insert(*owner, place);
        let entry = self.inner.layout.entry(key, owner);
        let newest_three = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(3)
            .with_keys_only();
        let mut guards = vec![Compare::create_revision(entry.clone(), CompareOp::Equal, 0)];
        let value = if self.session().is_some() {
            guards.push(Compare::create_revision(
                self.inner.layout.cancelled(&entry, place.attempt),
                CompareOp::Equal,
                0,
            ));
            session_value(&place)
        } else {
            String::new()
        };
        let txn = Txn::new().when(guards).and_then([
            TxnOp::put(entry, value, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(self.inner.layout.dir(key), Some(newest_three)),
        ]);
        // A session refreshed too long ago (its refreshes failing lately): refresh
        // it beside the put, and count from this send, so the grant is not born
        // nearly expired.
        let stale_session = self.session().is_some() && !place.is_fresh();
        let sent = BootInstant::now();
        let (refreshed, response) = if stale_session {
            tokio::try_join!(self.refresh(lease), self.txn_on_lease(txn))?
        } else {
            (true, self.txn_on_lease(txn).await?)
        };
        if stale_session && refreshed {
            self.note_refresh(lease, sent);
            place.refreshed = sent;
        }
        let response = if refreshed { response } else { None };
        let Some(response) = response else {
            // A session that expired unnoticed (a long pause): the next attempt
            // starts a new one. A lease per lock cannot be gone this soon.
            if let Some(session) = self.session() {
                session.ended(lease);
            }
            self.places().remove(owner);
            return Err(Error::unavailable(
                "the etcd lease expired before its key was made",
            ));
        };
        let header = response.header().map(|h| h.revision()).unwrap_or_default();
        let kvs = match response.op_responses().into_iter().nth(1) {
            Some(TxnOpResponse::Get(get)) if response.succeeded() => get.kvs().to_vec(),
            _ => return Err(Error::backend("etcd did not create the waiter key")),
        };
        place.revision = kvs.first().map(|kv| kv.create_revision()).unwrap_or(header);
        self.places().insert(*owner, place);
        let predecessor = kvs.get(1).map(|kv| Predecessor {
            key: kv.key().to_vec(),
            revision: kv.create_revision(),
            only: kvs.len() == 2,
        });
        Ok((place, predecessor))
    }

    /// As [`look_again`](Self::look_again), but a waiter whose key is gone (its lease
    /// expired while it was cut off or paused for longer than the TTL, or an
    /// operator broke the line) held nothing to lose: it joins the line again, at
    /// its end, as a new key, instead of failing an acquisition that may wait for
    /// ever. It is never granted on the key that went.
    async fn look_again_or_rejoin(
        &self,
        req: &AttemptRequest<'_>,
        place: Place,
    ) -> Result<(Place, Option<Predecessor>), Error> {
        match self.look_again(req.key, req.owner, place).await {
            Err(e) if e.is_lease_lost() => {
                tracing::debug!(target: "dlock::backend", key = %req.key, "our place in line is gone: joining the line again");
                // The place goes, but not the key name: it is rejoined under it, and
                // given back only when this acquisition ends. A lease of its own (not
                // the session's) expires unrefreshed.
                self.places().remove(req.owner);
                self.join_line(req.key, req.owner, req.ttl).await
            }
            answer => answer,
        }
    }

    /// Later attempts: refresh our lease, check our key is still there, and find our
    /// predecessor, if any.
    async fn look_again(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        mut place: Place,
    ) -> Result<(Place, Option<Predecessor>), Error> {
        let gone = || Error::lease_lost(key.as_str(), dlock_core::LossReason::Gone);
        let before_us = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(place.revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(2)
            .with_keys_only();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.inner.layout.entry(key, owner),
                CompareOp::Equal,
                place.revision,
            )])
            .and_then([TxnOp::get(self.inner.layout.dir(key), Some(before_us))]);
        // A lease refreshed within the last third of its TTL keeps its countdown: a
        // grant then reports validity from that refresh, and looking again costs one
        // read. Otherwise refresh (restarting the countdown, validity measured from
        // before it) beside the read; each needs the other to succeed.
        let response = if place.is_fresh() {
            self.txn(txn).await?
        } else {
            let sent = BootInstant::now();
            let (refreshed, response) = tokio::try_join!(self.refresh(place.lease), self.txn(txn))?;
            if !refreshed {
                return Err(gone());
            }
            self.note_refresh(place.lease, sent);
            place.refreshed = sent;
            match self.places().get_mut(owner) {
                Some(known) => known.refreshed = sent,
                // Swept while this request was out (a long suspend): its lease is
                // being revoked, so the place is not ours to use.
                None => return Err(gone()),
            }
            response
        };
        if !response.succeeded() {
            return Err(gone());
        }
        let predecessor = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| Predecessor {
                key: kv.key().to_vec(),
                revision: kv.create_revision(),
                only: get.kvs().len() == 1,
            }),
            _ => None,
        };
        Ok((place, predecessor))
    }

    /// After a first attempt whose answer was lost: our key, if the transaction did
    /// create it (we take over its place in line); `None` if it did not (the lease,
    /// holding nothing, is revoked and the attempt starts over).
    async fn recover(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        mut place: Place,
    ) -> Result<Option<Place>, Error> {
        if self.session().is_some() {
            return self.recover_in_session(key, owner, place).await;
        }
        let entry = self.inner.layout.entry(key, owner).into_bytes();
        let answer = self
            .inner
            .endpoints
            .call(|mut c| async move { c.get(entry, None).await.map_err(from_etcd) })
            .await?;
        match answer.kvs().first() {
            Some(kv) if kv.lease() == place.lease => {
                place.revision = kv.create_revision();
                self.places().insert(*owner, place);
                Ok(Some(place))
            }
            _ => {
                self.revoke(place.lease).await?;
                self.places().remove(owner);
                Ok(None)
            }
        }
    }

    /// [`recover`](Self::recover) in session mode, where the lease cannot be revoked:
    /// our key if the first attempt made it, else its cancel marker, in one
    /// transaction, so the attempt cannot make it later.
    async fn recover_in_session(
        &self,
        key: &LockKey,
        owner: &OwnerId,
        mut place: Place,
    ) -> Result<Option<Place>, Error> {
        let entry = self.inner.layout.entry(key, owner);
        let txn = Txn::new()
            .when([Compare::value(
                entry.clone(),
                CompareOp::Equal,
                session_value(&place),
            )])
            .and_then([TxnOp::get(entry.clone(), None)])
            .or_else([self.cancel(&entry, place)]);
        // The lease gone: the session ended, and any key on it with it.
        let made = match self.txn_on_lease(txn).await? {
            Some(response) if response.succeeded() => {
                match response.op_responses().into_iter().next() {
                    Some(TxnOpResponse::Get(get)) => {
                        get.kvs().first().map(|kv| kv.create_revision())
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match made {
            Some(revision) => {
                place.revision = revision;
                self.places().insert(*owner, place);
                Ok(Some(place))
            }
            None => {
                self.places().remove(owner);
                Ok(None)
            }
        }
    }

    /// Forgets places whose lease must have expired on the server (a lease left to
    /// expire is never released), once the map has doubled since the last sweep.
    /// Takes out the places nobody refreshed for two TTLs: acquisitions that ended
    /// without a confirmed release (its request failed, the runtime shut down). Their
    /// leases may still live (a leader change renews every lease to its full TTL), so
    /// the caller revokes them.
    ///
    /// Not in session mode: there a key lives as long as its client, so a release
    /// that failed is retried for as long (see `release_in_background`).
    fn sweep_places(&self) -> Vec<(OwnerId, i64)> {
        if self.session().is_some() {
            return Vec::new();
        }
        let mut places = self.places();
        let threshold = self
            .inner
            .sweep_at
            .load(std::sync::atomic::Ordering::Relaxed);
        if places.len() < threshold {
            return Vec::new();
        }
        let now = BootInstant::now();
        let mut stale = Vec::new();
        places.retain(|owner, p| {
            let live = now < p.refreshed.saturating_add(p.ttl.saturating_mul(2));
            if !live {
                stale.push((*owner, p.lease));
            }
            live
        });
        let next = (places.len() * 2).max(SWEEP_FLOOR);
        self.inner
            .sweep_at
            .store(next, std::sync::atomic::Ordering::Relaxed);
        stale
    }

    /// Revokes swept places' leases in the background. Their key names are not given
    /// back: the acquisition that had one may only be frozen, and could come back
    /// and use it.
    fn revoke_swept(&self, stale: Vec<(OwnerId, i64)>) {
        if stale.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            for (_, lease) in stale {
                if let Err(error) = this.revoke(lease).await {
                    tracing::debug!(%error, lease, "revoking a swept place failed; its TTL ends it");
                }
            }
        });
    }

    /// Resolves when `predecessor` is deleted (or the watch ends). If it was our only
    /// predecessor and our own key outlived it, the place is marked first in line,
    /// and the next attempt is granted without reading again: the handoff then costs
    /// the release's write and the event, not one more round trip.
    ///
    /// One watch covers both keys (the key range between them), so their events
    /// arrive in revision order: a deletion of our key (operator, expiry) before our
    /// predecessor's is seen first, and then the next attempt reads as usual.
    async fn watch_line(
        &self,
        owner: OwnerId,
        ours: Vec<u8>,
        revision: i64,
        predecessor: Predecessor,
    ) -> Result<WakeSignal, Error> {
        let (from, to) = if predecessor.key < ours {
            (predecessor.key.clone(), ours.clone())
        } else {
            (ours.clone(), predecessor.key.clone())
        };
        let mut end = to;
        end.push(0);
        if let Some(place) = self.places().get_mut(&owner) {
            place.first_in_line = false;
        }
        // Watch from now rather than from the revision we read at: etcd catches up a
        // watch that starts in the past only every 100 ms, which a busy key would
        // pay on every handoff. A change between our read and this watch is caught by
        // checking both keys once more after the watch exists.
        let options = etcd_client::WatchOptions::new().with_range(end);
        let mut stream = self
            .inner
            .endpoints
            .call(|mut c| async move { c.watch(from, Some(options)).await.map_err(from_etcd) })
            .await?;
        let both_there = Txn::new().when([
            Compare::create_revision(ours.clone(), CompareOp::Equal, revision),
            // The same key, not one made since under its name.
            Compare::create_revision(
                predecessor.key.clone(),
                CompareOp::Equal,
                predecessor.revision,
            ),
        ]);
        if !self.txn(both_there).await?.succeeded() {
            return Ok(Box::pin(async {}));
        }
        let this = self.clone();
        Ok(Box::pin(async move {
            while let Ok(Some(answer)) = stream.message().await {
                if answer.canceled() {
                    return;
                }
                // One revision's events come in one answer: weigh them together, so a
                // transaction deleting both keys does not read as a handoff.
                let deleted = |key: &[u8]| {
                    answer.events().iter().any(|e| {
                        e.event_type() == EventType::Delete
                            && e.kv().is_some_and(|kv| kv.key() == key)
                    })
                };
                if deleted(&ours) {
                    return;
                }
                if deleted(&predecessor.key) {
                    if predecessor.only
                        && let Some(place) = this.places().get_mut(&owner)
                        && place.revision == revision
                    {
                        place.first_in_line = true;
                    }
                    return;
                }
            }
        }))
    }

    /// Revokes an acquisition's lease (deleting its key); `Ok(true)` if etcd had it.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<bool, Error> {
        self.inner
            .endpoints
            .call(|mut c| async move {
                match c.lease_revoke(lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_lease_not_found(&e) => Ok(false),
                    Err(e) => Err(from_etcd(e)),
                }
            })
            .await
    }
}

impl std::fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLock")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lock for EtcdLock {
    fn capabilities(&self) -> Capabilities {
        let (min_ttl, max_ttl, expiry_scope) = match self.session() {
            // Every lock lives on the session's lease, with its TTL.
            Some(session) => (session.ttl(), session.ttl(), ExpiryScope::PerClient),
            None => (MIN_TTL, MAX_REPRESENTABLE_TTL, ExpiryScope::PerLease),
        };
        Capabilities {
            name: "etcd",
            fencing: true,
            fifo: true,
            wake_on_release: true,
            min_ttl,
            max_ttl,
            ttl_granularity: Duration::from_secs(1),
            // A leader change restarts every lease's countdown.
            // Expiry is checked every 500 ms; an election takes about an election timeout.
            expiry_slack_fixed: Duration::from_secs(2),
            // Without lease checkpointing (off by default), a new leader renews every
            // lease to its full TTL.
            leader_change_renews_leases: true,
            expiry_scope,
            drift_factor: 0.01,
            drift_fixed: Duration::from_millis(2),
            inspect: true,
            publish: false,
        }
    }

    async fn attempt(&self, req: AttemptRequest<'_>) -> Result<Attempt, Error> {
        if let Some(session) = self.session()
            && req.ttl != session.ttl()
        {
            return Err(Error::InvalidInput(dlock_core::InvalidInput::Option {
                name: "ttl",
                reason: format!(
                    "{:?} is not the session's TTL: in session mode every lock has the session's {:?}",
                    req.ttl,
                    session.ttl()
                ),
            }));
        }
        let known = self
            .places()
            .get(req.owner)
            .copied()
            .map(|p| self.with_session_refresh(p));
        let (place, predecessor) = match known {
            // Our watch saw the only key ahead of ours go while ours stayed: granted,
            // if our lease is fresh enough that the server cannot have expired it.
            Some(place) if place.first_in_line && place.is_fresh() => {
                return Ok(Attempt::Acquired {
                    fence: FenceToken(u64::try_from(place.revision).unwrap_or_default()),
                    valid_from: Some(place.refreshed),
                });
            }
            Some(place) if place.revision > 0 => self.look_again_or_rejoin(&req, place).await?,
            // A lease but no known key: the first attempt's answer was lost.
            Some(place) => match self.recover(req.key, req.owner, place).await? {
                Some(place) => self.look_again_or_rejoin(&req, place).await?,
                None => self.join_line(req.key, req.owner, req.ttl).await?,
            },
            None => self.join_line(req.key, req.owner, req.ttl).await?,
        };
        let Some(predecessor) = predecessor else {
            return Ok(Attempt::Acquired {
                fence: FenceToken(u64::try_from(place.revision).unwrap_or_default()),
                valid_from: Some(place.refreshed),
            });
        };
        if !req.queue {
            // try_acquire leaves nothing behind. The place is forgotten only once the
            // revoke succeeded, so a failed one is still cleaned up with the same owner.
            if self.session().is_some() {
                self.withdraw(req.key, req.owner, place).await?;
            } else {
                self.revoke(place.lease).await?;
            }
            self.forget(req.owner);
            return Ok(Attempt::Busy {
                wake: None,
                retry_after: None,
            });
        }
        let ours = self.inner.layout.entry(req.key, req.owner).into_bytes();
        Ok(Attempt::Busy {
            wake: Some(
                self.watch_line(*req.owner, ours, place.revision, predecessor)
                    .await?,
            ),
            // Look again (refreshing our own lease, to keep our place) well within the TTL.
            retry_after: Some(req.ttl / 3),
        })
    }

    async fn extend(&self, key: &LockKey, owner: &OwnerId, ttl: Duration) -> Result<(), Error> {
        let lost = || Error::lease_lost(key.as_str(), dlock_core::LossReason::Gone);
        let place = self.places().get(owner).copied().ok_or_else(lost)?;
        // etcd keeps a lease's TTL for its life: a refresh restarts the same countdown,
        // so a longer TTL cannot be promised.
        if ttl > place.ttl {
            return Err(Error::InvalidInput(dlock_core::InvalidInput::Option {
                name: "ttl",
                reason: format!(
                    "etcd cannot lengthen a lease: extend with at most the {:?} it was acquired with",
                    place.ttl
                ),
            }));
        }
        let sent = BootInstant::now();
        if !self.refresh(place.lease).await? {
            return Err(lost());
        }
        self.note_refresh(place.lease, sent);
        match self.places().get_mut(owner) {
            Some(known) => known.refreshed = sent,
            // Swept meanwhile: its lease is being revoked.
            None => return Err(lost()),
        }
        let entry = self.inner.layout.entry(key, owner);
        let response = self
            .inner
            .endpoints
            .call(|mut c| async move {
                c.get(entry, Some(GetOptions::new().with_keys_only()))
                    .await
                    .map_err(from_etcd)
            })
            .await?;
        match response.kvs().first() {
            Some(kv) if kv.create_revision() == place.revision => Ok(()),
            _ => Err(lost()),
        }
    }

    async fn release(&self, key: &LockKey, owner: &OwnerId) -> Result<bool, Error> {
        let Some(place) = self.places().get(owner).copied() else {
            // No lease was ever granted to it: no key either.
            self.forget(owner);
            return Ok(false);
        };
        if self.session().is_some() {
            // The lease is the client's: take back the key alone (or make sure a
            // first attempt whose answer was lost never makes it).
            let held = self.withdraw(key, owner, place).await?;
            self.forget(owner);
            return Ok(held && place.revision > 0);
        }
        if place.revision == 0 {
            // Whether the key exists is unknown: revoking the lease removes it if so.
            self.revoke(place.lease).await?;
            self.forget(owner);
            return Ok(false);
        }
        // Revoking the lease deletes our key in the same step; a lease etcd no longer
        // has (expired, or revoked by `force_release`) means the lock was lost, and
        // whoever holds the key now is left alone. On error the place stays, for a retry.
        let held = self.revoke(place.lease).await?;
        self.forget(owner);
        Ok(held)
    }

    fn new_owner(&self) -> OwnerId {
        self.inner.owners.take()
    }

    /// The holder is the oldest key of the directory (the head of the line); its
    /// token is that key's create revision, its time left its lease's.
    fn native_election(
        &self,
        name: &str,
    ) -> Option<Result<Arc<dyn dlock_core::NativeElection>, Error>> {
        Some(
            crate::EtcdElection::new(self, name)
                .map(|e| Arc::new(e) as Arc<dyn dlock_core::NativeElection>),
        )
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<Holder>, Error> {
        let dir = self.inner.layout.dir(key);
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let answer = self
            .inner
            .endpoints
            .call(|mut c| {
                let dir = dir.clone();
                async move { c.get(dir, Some(oldest)).await.map_err(from_etcd) }
            })
            .await?;
        let Some(head) = answer.kvs().first() else {
            return Ok(None);
        };
        let id = head
            .key_str()
            .ok()
            .and_then(|k| k.strip_prefix(dir.as_str()))
            .unwrap_or_default()
            .to_owned();
        let fence = u64::try_from(head.create_revision()).ok().map(FenceToken);
        let lease = head.lease();
        let left = self
            .inner
            .endpoints
            .call(|mut c| async move { c.lease_time_to_live(lease, None).await.map_err(from_etcd) })
            .await
            .ok()
            .and_then(|ttl| u64::try_from(ttl.ttl()).ok())
            .map(Duration::from_secs);
        Ok(Some(Holder::new(id, fence, left)))
    }

    fn operation_timeout(&self) -> Duration {
        self.inner.config.operation_timeout
    }

    fn tracker(&self) -> Option<&dlock_core::Tracker> {
        Some(&self.inner.tracker)
    }

    /// Session mode: revokes the session's lease, so whatever this client still
    /// has in etcd (a key a failed release left, a lock left to expire) goes now
    /// rather than with the process.
    async fn close(&self) {
        let Some(session) = self.session() else {
            return;
        };
        if let Some(lease) = session.lease_id() {
            session.ended(lease);
            if let Err(error) = self.revoke(lease).await {
                tracing::debug!(target: "dlock::backend", %error, lease, "revoking the etcd session at shutdown failed; its TTL ends it");
            }
        }
    }

    fn release_in_background(self: Arc<Self>, key: LockKey, owner: OwnerId) {
        let runtime =
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.inner.runtime.clone());
        // A waiter key left behind would block the line for its whole TTL: retry the
        // revoke until it succeeds or the lease could have expired anyway (its TTL
        // again for a leader change, which renews it). In session mode the key lives
        // as long as this client: retry for as long. Counted, so shutdown waits for it.
        let pending = self.inner.tracker.pending();
        let give_up = match self.session() {
            Some(_) => Duration::from_secs(365 * 24 * 3600),
            None => self
                .places()
                .get(&owner)
                .map_or(Duration::from_secs(60), |p| {
                    (p.ttl * 2 + Duration::from_secs(2)).max(Duration::from_secs(60))
                }),
        };
        runtime.spawn(async move {
            let _pending = pending;
            let deadline = tokio::time::Instant::now() + give_up;
            let mut pause = Duration::from_millis(50);
            while tokio::time::Instant::now() < deadline {
                // Every error is retried: a transient one can come back as a
                // non-retryable code (a reset connection reads as "unknown"), and
                // in session mode a key left here stays for the client's life.
                match self.release(&key, &owner).await {
                    Ok(_) => return,
                    Err(error) => {
                        tracing::debug!(target: "dlock::lease", %key, %error, "background release failed; retrying")
                    }
                }
                // In session mode, a client the application dropped is kept alive
                // here alone, and its session with it: let the session expire
                // instead, which takes the key.
                if self.session().is_some()
                    && Arc::strong_count(&self) == 1
                    && Arc::strong_count(&self.inner) == 1
                {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    }
}

/// One keep-alive request for `lease` and its answer; `false` if etcd no longer has
/// the lease (an expired lease shows up as an error at any of the three steps).
async fn refresh_once(mut c: etcd_client::Client, lease: i64) -> Result<bool, Error> {
    let gone_or = |e: etcd_client::Error| {
        if is_lease_not_found(&e) {
            Ok(false)
        } else {
            Err(from_etcd(e))
        }
    };
    let (mut keeper, mut answers) = match c.lease_keep_alive(lease).await {
        Ok(stream) => stream,
        Err(e) => return gone_or(e),
    };
    if let Err(e) = keeper.keep_alive().await {
        return gone_or(e);
    }
    match answers.message().await {
        Ok(Some(answer)) => Ok(answer.ttl() > 0),
        Ok(None) => Err(Error::unavailable("the lease keep-alive stream closed")),
        Err(e) => gone_or(e),
    }
}
