//! Leader election on etcd's election API: one leader per name at a time, with
//! the leader's value readable and observable by everyone. It is what
//! [`dlock_core::Election`] uses on etcd (through [`Lock::native_election`]), and
//! can be used on its own.
//!
//! [`Lock::native_election`]: dlock_core::Lock::native_election

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dlock_core::{
    BootInstant, Campaign, Error, FenceToken, Leader, LockKey, NativeElection, NativeLeadership,
    clock,
};
use etcd_client::{LeaderKey, ProclaimOptions};
use futures::{future::BoxFuture, stream::BoxStream};
use tokio::{sync::Notify, task::JoinHandle};

use crate::{EtcdLock, errors::from_etcd};

/// An election among the clients of one etcd cluster.
///
/// ```no_run
/// # async fn demo(locks: dlock_etcd::EtcdLock) -> Result<(), dlock_core::Error> {
/// use std::time::Duration;
/// use dlock_etcd::EtcdElection;
///
/// let election = EtcdElection::new(&locks, "scheduler")?;
/// let options = dlock_core::Campaign::ttl(Duration::from_secs(15));
/// let leadership = election.campaign("host-a", options).await?; // waits
/// tokio::select! {
///     () = leadership.lost() => eprintln!("no longer the leader"),
///     () = tokio::time::sleep(Duration::from_secs(60)) => {}
/// }
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdElection {
    lock: EtcdLock,
    name: String,
}

/// This client leads the election until it resigns or [`lost`](Self::lost) fires.
///
/// Leadership lives on an etcd lease kept alive in the background; dropping it
/// resigns in the background, best effort (the lease's TTL ends it otherwise).
pub struct Leadership {
    lock: EtcdLock,
    leader: LeaderKey,
    state: Arc<LeaderState>,
    keep_alive: JoinHandle<()>,
    resigned: bool,
}

struct LeaderState {
    lost: AtomicBool,
    changed: Notify,
    /// The leader key, once elected: its deletion also ends the leadership.
    key: std::sync::Mutex<Option<Vec<u8>>>,
    /// Until when the lease surely lives: the last refresh's send time plus the TTL,
    /// less drift, on the lease clock (which counts suspended time).
    valid_until: std::sync::Mutex<BootInstant>,
    /// How long before `valid_until` the leader steps down (the TTL beyond the
    /// renew deadline).
    margin: Duration,
    /// The election's name, and whether this process leads it: for the metrics.
    name: String,
    leading: AtomicBool,
}

impl LeaderState {
    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.step_down();
    }

    fn lead(&self) {
        if !self.leading.swap(true, Ordering::AcqRel) {
            dlock_core::metrics::election_role(&self.name, true);
        }
    }

    fn step_down(&self) {
        if self.leading.swap(false, Ordering::AcqRel) {
            dlock_core::metrics::election_role(&self.name, false);
        }
    }

    fn valid_until(&self) -> BootInstant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refreshed(&self, valid_until: BootInstant) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = valid_until;
    }

    /// When the leader steps down unless refreshed.
    fn step_down_at(&self) -> BootInstant {
        self.valid_until().saturating_sub(self.margin)
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.step_down_at().has_passed()
    }
}

/// While campaigning: stops the keep-alive and gives the lease back if the campaign
/// ends without a leadership (an error, or the future dropped), so no ghost
/// candidate, or ghost leader, outlives it.
struct Campaigning {
    lock: EtcdLock,
    lease: i64,
    keep_alive: Option<JoinHandle<()>>,
}

impl Drop for Campaigning {
    fn drop(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (lock, lease) = (self.lock.clone(), self.lease);
                runtime.spawn(async move {
                    let _ = lock.revoke(lease).await;
                });
            }
        }
    }
}

impl EtcdElection {
    /// The election `name` (any key dlock accepts) on `lock`'s cluster and prefix.
    pub fn new(lock: &EtcdLock, name: &str) -> Result<Self, Error> {
        LockKey::check(name)?;
        Ok(EtcdElection {
            lock: lock.clone(),
            name: lock.layout().election(name),
        })
    }

    /// Waits until this candidate leads, then returns its leadership, which lives on
    /// a lease of the options' TTL (whole seconds, at least 2 s), refreshed every
    /// retry period in the background; the leader steps down once the renew deadline
    /// passes without a refresh. Candidates are elected in the order they campaigned.
    pub async fn campaign(
        &self,
        value: impl Into<Vec<u8>>,
        options: Campaign,
    ) -> Result<Leadership, Error> {
        let caps = dlock_core::Lock::capabilities(&self.lock);
        options.validate(&caps)?;
        let ttl = options.ttl_value();
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = BootInstant::now();
        let lease = self
            .lock
            .endpoints()
            .call(|mut c| async move { c.lease_grant(seconds, None).await.map_err(from_etcd) })
            .await?
            .id();
        let state = Arc::new(LeaderState {
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            key: std::sync::Mutex::new(None),
            valid_until: std::sync::Mutex::new(
                sent.saturating_add(ttl).saturating_sub(caps.drift(ttl)),
            ),
            margin: options.step_down_margin(&caps),
            name: self.name.clone(),
            leading: AtomicBool::new(false),
        });
        // Kept alive while campaigning too: the wait for leadership can outlast the TTL.
        let mut campaigning = Campaigning {
            lock: self.lock.clone(),
            lease,
            keep_alive: Some(tokio::spawn(keep_alive(
                self.lock.clone(),
                lease,
                options,
                caps.drift(ttl),
                Arc::clone(&state),
            ))),
        };
        let (name, value) = (self.name.clone(), value.into());
        // Blocks until elected: through the client without a request timeout.
        let campaign = self.lock.endpoints().call_waiting(|mut c| async move {
            c.campaign(name, value, lease).await.map_err(from_etcd)
        });
        let elected = tokio::select! {
            elected = campaign => elected,
            () = wait_lost(Arc::clone(&state)) => Err(Error::lease_lost(self.name.as_str(), dlock_core::LossReason::Expired)),
        };
        // On any error, dropping `campaigning` stops the keep-alive and revokes the lease.
        let leader = elected?
            .take_leader()
            .ok_or_else(|| Error::backend("etcd elected no leader key"))?;
        *state.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader.key().to_vec());
        state.lead();
        let keep_alive = campaigning
            .keep_alive
            .take()
            .ok_or_else(|| Error::backend("the campaign's keep-alive is gone"))?;
        Ok(Leadership {
            lock: self.lock.clone(),
            leader,
            state,
            keep_alive,
            resigned: false,
        })
    }

    /// The current leader, if there is one.
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let name = self.name.clone();
        let answer = self
            .lock
            .endpoints()
            .call(|mut c| async move {
                match c.leader(name).await {
                    Ok(answer) => Ok(answer.kv().map(leader_of)),
                    // etcd answers "no leader" with an error; not to be mistaken
                    // for a member without a raft leader ("etcdserver: no leader"),
                    // which knows nothing and is retried on another member.
                    Err(e) if e.to_string().contains("election: no leader") => Ok(None),
                    Err(e) => Err(from_etcd(e)),
                }
            })
            .await?;
        Ok(answer)
    }

    /// Every leader's value as it is elected (or proclaims a new one), starting with
    /// the current leader's. With no leader yet, the first [`next`](LeaderChanges::next)
    /// waits for one, as long as it takes; an error from it means the observer was
    /// lost (the connection failed), not that there is no leader.
    pub async fn observe(&self) -> Result<LeaderChanges, Error> {
        Ok(LeaderChanges {
            election: self.clone(),
            stream: None,
        })
    }
}

/// The values of successive leaders; see [`EtcdElection::observe`].
pub struct LeaderChanges {
    election: EtcdElection,
    /// Opened by the first `next`: etcd answers an observer only once there is a
    /// leader, so opening it is itself a wait.
    stream: Option<etcd_client::ObserveStream>,
}

impl LeaderChanges {
    /// The next leader; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Result<Leader, Error>> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let name = self.election.name.clone();
                let opened = self
                    .election
                    .lock
                    .endpoints()
                    .call_waiting(|mut c| async move { c.observe(name).await.map_err(from_etcd) })
                    .await;
                match opened {
                    Ok(stream) => self.stream.insert(stream),
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        match stream.message().await {
            Ok(Some(answer)) => match answer.kv() {
                Some(kv) => Some(Ok(leader_of(kv))),
                None => Some(Err(Error::backend("etcd observed a leader without a key"))),
            },
            Ok(None) => None,
            Err(e) => {
                // Opened again by the next call: one failure ends nothing.
                self.stream = None;
                Some(Err(from_etcd(e)))
            }
        }
    }
}

impl std::fmt::Debug for LeaderChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderChanges").finish_non_exhaustive()
    }
}

impl Leadership {
    /// A fencing token for the leader's writes: its key's revision, larger for every
    /// later leader.
    pub fn fence(&self) -> FenceToken {
        FenceToken(u64::try_from(self.leader.rev()).unwrap_or_default())
    }

    /// Still the leader, as far as this client knows: not resigned, not lost, and
    /// refreshed within the renew deadline.
    pub fn is_leader(&self) -> bool {
        !self.resigned && !self.state.is_lost()
    }

    /// Resolves when this client can no longer assume it leads: its lease could not
    /// be kept alive, or its leader key is gone.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        wait_lost(Arc::clone(&self.state))
    }

    /// Announces a new value without another election. [`Error::LeaseLost`] if this
    /// client no longer leads.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.lost_error());
        }
        let options = ProclaimOptions::new().with_leader(self.leader.clone());
        let value = value.into();
        let proclaimed = self
            .lock
            .endpoints()
            .call(|mut c| async move {
                match c.proclaim(value, Some(options)).await {
                    Ok(_) => Ok(true),
                    // etcd's answer when the leader key is gone.
                    Err(e) if e.to_string().contains("not leader") => Ok(false),
                    Err(e) => Err(from_etcd(e)),
                }
            })
            .await?;
        if !proclaimed {
            self.state.mark_lost();
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// Stops renewing, as a crashed leader would: the next candidate leads once the
    /// lease's TTL runs out.
    pub fn leave_to_expire(mut self) {
        self.keep_alive.abort();
        self.resigned = true;
        self.state.mark_lost();
    }

    /// Steps down: the next candidate is elected at once. [`Error::LeaseLost`] if
    /// leadership was lost before.
    pub async fn resign(mut self) -> Result<(), Error> {
        let was_leader = self.is_leader();
        self.keep_alive.abort();
        self.resigned = true;
        self.state.step_down();
        // Revoking the lease deletes the leader key too: one request resigns, and
        // nothing is left behind if it fails halfway.
        let revoked = self.lock.revoke(self.leader.lease()).await;
        if !was_leader {
            return Err(self.lost_error());
        }
        match revoked {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost_error()),
            Err(e) => Err(e),
        }
    }

    fn lost_error(&self) -> Error {
        Error::lease_lost(self.state.name.as_str(), dlock_core::LossReason::Expired)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keep_alive.abort();
        self.state.step_down();
        if !self.resigned
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (lock, lease) = (self.lock.clone(), self.leader.lease());
            runtime.spawn(async move {
                let _ = lock.revoke(lease).await;
            });
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("fence", &self.fence())
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

async fn wait_lost(state: Arc<LeaderState>) {
    loop {
        let notified = state.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if state.is_lost() {
            return;
        }
        tokio::select! {
            () = notified => {}
            () = clock::sleep_until(state.step_down_at()) => {}
        }
    }
}

/// Refreshes the lease every retry period; declares the leadership lost when etcd
/// no longer has the lease or the leader key, or no refresh succeeded before the
/// renew deadline. Sleeps on the lease clock, so a suspend is noticed.
async fn keep_alive(
    lock: EtcdLock,
    lease: i64,
    options: Campaign,
    drift: Duration,
    state: Arc<LeaderState>,
) {
    let (ttl, period) = (options.ttl_value(), options.retry_period_value());
    let mut next = BootInstant::now().saturating_add(period);
    loop {
        clock::sleep_until(next.min(state.step_down_at())).await;
        if state.is_lost() {
            break;
        }
        let sent = BootInstant::now();
        let left = state.step_down_at().saturating_duration_since(sent);
        let key = state.key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let check = async {
            if !lock.refresh(lease).await? {
                return Ok(false);
            }
            match key {
                Some(key) => lock.exists(key).await,
                None => Ok(true),
            }
        };
        match tokio::time::timeout(left, check).await {
            Ok(Ok(true)) => {
                state.refreshed(sent.saturating_add(ttl).saturating_sub(drift));
                next = sent.saturating_add(period);
            }
            Ok(Ok(false)) => break,
            Ok(Err(error)) => {
                tracing::warn!(target: "dlock::election", %error, "election keep-alive failed; retrying");
                next = BootInstant::now().saturating_add((left / 4).max(Duration::from_millis(50)));
            }
            Err(_) => {}
        }
    }
    state.mark_lost();
    // Stepped down: give the lease back, so the next candidate need not wait out
    // the TTL (if etcd still has it).
    let _ = lock.revoke(lease).await;
}

/// A leader as etcd stores it: the value, and the key's creation revision, which
/// [`Leadership::fence`] reports too.
fn leader_of(kv: &etcd_client::KeyValue) -> Leader {
    Leader::new(
        kv.value().to_vec(),
        FenceToken(u64::try_from(kv.create_revision()).unwrap_or_default()),
    )
}

#[async_trait]
impl NativeElection for EtcdElection {
    async fn campaign(
        &self,
        value: Vec<u8>,
        options: Campaign,
    ) -> Result<Box<dyn NativeLeadership>, Error> {
        let leadership = EtcdElection::campaign(self, value, options).await?;
        Ok(Box::new(leadership))
    }

    async fn leader(&self) -> Result<Option<Leader>, Error> {
        EtcdElection::leader(self).await
    }

    fn observe(&self) -> BoxStream<'static, Result<Leader, Error>> {
        let changes = LeaderChanges {
            election: self.clone(),
            stream: None,
        };
        Box::pin(futures::stream::unfold(changes, |mut changes| async move {
            let next = changes.next().await?;
            Some((next, changes))
        }))
    }
}

#[async_trait]
impl NativeLeadership for Leadership {
    fn fence(&self) -> FenceToken {
        Leadership::fence(self)
    }

    fn is_leader(&self) -> bool {
        Leadership::is_leader(self)
    }

    fn valid_until(&self) -> BootInstant {
        self.state.valid_until()
    }

    fn lost(&self) -> BoxFuture<'static, ()> {
        Box::pin(Leadership::lost(self))
    }

    async fn proclaim(&self, value: Vec<u8>) -> Result<(), Error> {
        Leadership::proclaim(self, value).await
    }

    async fn resign(self: Box<Self>) -> Result<(), Error> {
        Leadership::resign(*self).await
    }

    fn leave_to_expire(self: Box<Self>) {
        Leadership::leave_to_expire(*self);
    }
}
