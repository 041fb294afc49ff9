//! Leader election on every backend: the leader is the holder of the election's
//! lock, and its value is what it published there. A backend with an election of
//! its own (etcd) plugs it in behind the same API ([`Lock::native_election`]).
//!
//! Timing follows client-go's leader election: a lease of `ttl`, renewed every
//! `retry_period`; a leader that has not renewed for `renew_deadline` steps down,
//! so it stops acting before another candidate can take the key. All three are
//! measured on the lease clock from when a renewal was sent.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::{
    future::BoxFuture,
    stream::{BoxStream, StreamExt},
};
use tokio::sync::{Notify, oneshot};

use crate::{
    Acquire, Capabilities, DynLock, Error, FenceToken, InvalidInput, Lease, LeaseHandle, LockExt,
    LockKey, LossReason, OwnerId, Wait, call::bounded, metrics, options::validate_ttl,
};

/// Where the elections built on a lock keep their keys: the election `name` is the
/// lock `dlock.election/<name>`, which [`LockExt::holder`] and `dlock status` read.
pub const ELECTION_KEY_PREFIX: &str = "dlock.election/";

/// How often [`LeaderChanges`] reads the leader on a backend without a native
/// election, unless [`Election::observe_every`] says otherwise.
pub const DEFAULT_OBSERVE_EVERY: Duration = Duration::from_millis(200);

/// The leader of an election, as everyone reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The value it campaigned with, or proclaimed since.
    pub value: Vec<u8>,
    /// Its leadership's fencing token: larger for every later leader.
    pub fence: FenceToken,
}

impl Leader {
    /// A leader as a backend reports it.
    pub fn new(value: Vec<u8>, fence: FenceToken) -> Self {
        Leader { value, fence }
    }
}

/// How a candidate campaigns: client-go's three durations, and how long to wait.
///
/// ```
/// use std::time::Duration;
/// use dlock_core::Campaign;
///
/// let opts = Campaign::ttl(Duration::from_secs(15))
///     .renew_deadline(Duration::from_secs(10))
///     .retry_period(Duration::from_secs(2))
///     .wait(Duration::from_secs(60));
/// assert_eq!(opts.renew_deadline_value(), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Campaign {
    ttl: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    wait: Wait,
}

impl Campaign {
    /// A lease of `ttl` (client-go's lease duration), renewed every fifth of it,
    /// stepping down after two thirds of it without a renewal; waits forever.
    pub fn ttl(ttl: Duration) -> Self {
        Campaign {
            ttl,
            renew_deadline: ttl.mul_f64(2.0 / 3.0),
            retry_period: ttl / 5,
            wait: Wait::Forever,
        }
    }

    /// Step down once this long has passed since the last successful renewal was
    /// sent. Less than the TTL, more than the retry period.
    pub fn renew_deadline(mut self, deadline: Duration) -> Self {
        self.renew_deadline = deadline;
        self
    }

    /// Renew this often. Less than the renew deadline.
    pub fn retry_period(mut self, period: Duration) -> Self {
        self.retry_period = period;
        self
    }

    /// Wait at most `limit` to be elected: [`Error::Timeout`] after that.
    pub fn wait(mut self, limit: Duration) -> Self {
        self.wait = Wait::For(limit);
        self
    }

    /// How long to wait to be elected.
    pub fn wait_mode(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// The lease's TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }

    /// The renew deadline.
    pub fn renew_deadline_value(&self) -> Duration {
        self.renew_deadline
    }

    /// The retry period.
    pub fn retry_period_value(&self) -> Duration {
        self.retry_period
    }

    /// The wait mode.
    pub fn wait_value(&self) -> Wait {
        self.wait
    }

    /// How long before `valid_until` (which already has the backend's drift taken
    /// off) a leader steps down, so that it does exactly at the renew deadline after
    /// its last renewal was sent.
    pub fn step_down_margin(&self, caps: &Capabilities) -> Duration {
        self.ttl
            .saturating_sub(caps.drift(self.ttl))
            .saturating_sub(self.renew_deadline)
    }

    /// Checks client-go's rule, ttl > renew deadline > retry period > 0, and the TTL
    /// against the backend, before any I/O.
    pub fn validate(&self, caps: &Capabilities) -> Result<(), InvalidInput> {
        validate_ttl(self.ttl, caps)?;
        let refuse = |name, reason: &str| {
            Err(InvalidInput::Option {
                name,
                reason: reason.into(),
            })
        };
        if self.retry_period.is_zero() {
            return refuse("retry_period", "must be more than zero");
        }
        if self.renew_deadline >= self.ttl.saturating_sub(caps.drift(self.ttl)) {
            return refuse(
                "renew_deadline",
                "must be less than the TTL (less the backend's clock drift)",
            );
        }
        if self.retry_period >= self.renew_deadline {
            return refuse("retry_period", "must be less than the renew deadline");
        }
        if self.wait == Wait::For(Duration::ZERO) {
            return Err(InvalidInput::ZeroWait);
        }
        Ok(())
    }
}

/// A backend's own election, behind [`Election`]; see [`Lock::native_election`](crate::Lock::native_election).
#[async_trait]
pub trait NativeElection: Send + Sync + 'static {
    /// Waits until this candidate leads (the caller bounds the wait and validates
    /// `options`), with `value` readable by everyone from the moment it leads.
    async fn campaign(
        &self,
        value: Vec<u8>,
        options: Campaign,
    ) -> Result<Box<dyn NativeLeadership>, Error>;

    /// The current leader, if any.
    async fn leader(&self) -> Result<Option<Leader>, Error>;

    /// Every leader from the current one on; an error ends nothing but that item.
    fn observe(&self) -> BoxStream<'static, Result<Leader, Error>>;
}

/// A backend's own leadership, behind [`Leadership`].
#[async_trait]
pub trait NativeLeadership: Send + Sync + 'static {
    /// The leadership's fencing token.
    fn fence(&self) -> FenceToken;
    /// Still leading, as far as this client knows.
    fn is_leader(&self) -> bool;
    /// Until when the backend surely keeps the leadership: the last renewal's send
    /// time plus the TTL, less drift.
    fn valid_until(&self) -> crate::BootInstant;
    /// Resolves when this client can no longer assume it leads.
    fn lost(&self) -> BoxFuture<'static, ()>;
    /// Announces a new value.
    async fn proclaim(&self, value: Vec<u8>) -> Result<(), Error>;
    /// Steps down.
    async fn resign(self: Box<Self>) -> Result<(), Error>;
    /// Stops renewing, leaving the leadership to expire on the backend.
    fn leave_to_expire(self: Box<Self>);
}

/// An election among every client of a backend that campaigns under one name.
///
/// ```no_run
/// # async fn demo(lock: dlock_core::DynLock) -> Result<(), dlock_core::Error> {
/// use std::time::Duration;
/// use dlock_core::{Campaign, LockExt};
///
/// let election = lock.election("scheduler")?;
/// let leadership = election.campaign("host-a", Campaign::ttl(Duration::from_secs(15))).await?;
/// assert_eq!(election.leader().await?.map(|l| l.value), Some(b"host-a".to_vec()));
/// // Lead until told to stop, or until leadership is lost.
/// tokio::select! {
///     () = leadership.lost() => eprintln!("no longer the leader"),
///     () = tokio::time::sleep(Duration::from_secs(60)) => {}
/// }
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    lock: DynLock,
    name: Arc<str>,
    key: LockKey,
    native: Option<Arc<dyn NativeElection>>,
    observe_every: Duration,
}

impl Election {
    /// The election `name` (any key dlock accepts) on `lock`'s backend.
    /// [`Error::Unsupported`] on a backend that can neither publish values nor
    /// offers its own election.
    pub fn new(lock: DynLock, name: &str) -> Result<Self, Error> {
        LockKey::check(name)?;
        let key = LockKey::new(&format!("{ELECTION_KEY_PREFIX}{name}")).map_err(|_| {
            InvalidInput::KeyTooLong {
                len: name.len(),
                max: crate::MAX_KEY_LEN - ELECTION_KEY_PREFIX.len(),
            }
        })?;
        let native = lock.native_election(name).transpose()?;
        let caps = lock.capabilities();
        // Without fencing every leader's token would be 0: nothing downstream could
        // refuse a deposed leader, and observers could miss a change of leader.
        if native.is_none() && !(caps.inspect && caps.publish && caps.fencing) {
            return Err(Error::Unsupported {
                backend: caps.name,
                operation: "election (it needs inspect, publish and fencing)",
            });
        }
        Ok(Election {
            lock,
            name: Arc::from(name),
            key,
            native,
            observe_every: DEFAULT_OBSERVE_EVERY,
        })
    }

    /// How often [`observe`](Self::observe) reads the leader, where the backend has
    /// no native election to push changes (every backend but etcd).
    pub fn observe_every(mut self, period: Duration) -> Self {
        self.observe_every = period.max(Duration::from_millis(1));
        self
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until this candidate leads, then returns its leadership, kept alive in
    /// the background. Candidates are elected in the order they campaigned where the
    /// backend is FIFO. Cancel by dropping the future: the candidacy is withdrawn.
    pub async fn campaign(
        &self,
        value: impl Into<Vec<u8>>,
        options: Campaign,
    ) -> Result<Leadership, Error> {
        options.validate(&self.lock.capabilities())?;
        let value = value.into();
        let inner = match &self.native {
            Some(native) => Inner::Native(self.campaign_native(native, value, options).await?),
            None => Inner::Built(self.campaign_on_lock(value, options).await?),
        };
        Ok(Leadership { inner })
    }

    async fn campaign_native(
        &self,
        native: &Arc<dyn NativeElection>,
        value: Vec<u8>,
        options: Campaign,
    ) -> Result<Box<dyn NativeLeadership>, Error> {
        let timeout = |waited| Error::Timeout {
            key: self.name.to_string(),
            waited,
            cause: None,
        };
        let (limit, waited) = match options.wait_value() {
            Wait::Forever => return native.campaign(value, options).await,
            Wait::For(limit) => (limit, limit),
            Wait::No => {
                // Do not queue behind a leader; the campaign itself still takes a
                // few round trips, and a leader elected meanwhile is "busy" too.
                if self.leader().await?.is_some() {
                    return Err(timeout(Duration::ZERO));
                }
                (self.lock.operation_timeout(), Duration::ZERO)
            }
        };
        tokio::time::timeout(limit, native.campaign(value, options))
            .await
            .map_err(|_| timeout(waited))?
    }

    async fn campaign_on_lock(&self, value: Vec<u8>, options: Campaign) -> Result<Built, Error> {
        let fraction = options.retry_period.as_secs_f64() / options.ttl.as_secs_f64();
        let acquire = Acquire::ttl(options.ttl)
            .wait_mode(options.wait)
            .keep_alive(fraction);
        let lease = self.lock.acquire(self.key.as_str(), acquire).await?;
        // Readable once published: until then `leader()` reports nobody, so no
        // observer ever sees a leader without its value.
        let margin = options.step_down_margin(&self.lock.capabilities());
        publish(&self.lock, &self.key, &lease.handle(), margin, &value).await?;
        let margin = options.step_down_margin(&self.lock.capabilities());
        Ok(Built::start(
            Arc::clone(&self.lock),
            self.key.clone(),
            lease,
            Arc::clone(&self.name),
            margin,
        ))
    }

    /// The current leader, if there is one.
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        if let Some(native) = &self.native {
            return native.leader().await;
        }
        let holder = self.lock.holder(self.key.as_str()).await?;
        // A holder whose token cannot be told yet names no leader: Redlock while
        // the holder's keys expire on some nodes before others, or before its
        // token round ended (its nodes' counters differ). A leader is reported
        // with the token its writes carry, never 0.
        Ok(holder.and_then(|h| Some(Leader::new(h.value?, h.fence?))))
    }

    /// Every leader as it is elected or proclaims a new value, starting with the
    /// current one. With no leader yet, the first [`next`](LeaderChanges::next)
    /// waits for one. An `Err` means this observation failed (the backend is
    /// unreachable), not that there is no leader; `next` may be called again.
    pub fn observe(&self) -> LeaderChanges {
        match &self.native {
            Some(native) => LeaderChanges::Native(native.observe()),
            None => LeaderChanges::Polling {
                election: self.clone(),
                last: None,
                failed: false,
            },
        }
    }
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("backend", &self.lock.capabilities().name)
            .field("name", &self.name)
            .field("native", &self.native.is_some())
            .finish_non_exhaustive()
    }
}

/// Publishes `value` as the leader's, within the leadership: a value that lands
/// after the leader stepped down is reported as lost, not stored.
async fn publish(
    lock: &DynLock,
    key: &LockKey,
    lease: &LeaseHandle,
    margin: Duration,
    value: &[u8],
) -> Result<(), Error> {
    let step_down_at = || lease.valid_until().saturating_sub(margin);
    let lost = || {
        Error::lease_lost(
            key.as_str(),
            lease.lost_reason().unwrap_or(LossReason::Expired),
        )
    };
    if !lease.is_valid() || step_down_at().has_passed() {
        return Err(lost());
    }
    let owner: OwnerId = lease.owner();
    let budget = lock.operation_timeout().min(step_down_at().remaining());
    let published = bounded("publish", budget, lock.publish(key, &owner, value)).await;
    crate::tracker::observe(lock.as_ref(), &published);
    published?;
    if !lease.is_valid() || step_down_at().has_passed() {
        return Err(lost());
    }
    Ok(())
}

/// The values of successive leaders; see [`Election::observe`].
pub enum LeaderChanges {
    /// Read from the election's lock every `observe_every`.
    #[doc(hidden)]
    Polling {
        /// The election read.
        election: Election,
        /// The last leader reported.
        last: Option<Leader>,
        /// The last read failed: pause before the next, so a caller's loop does not
        /// spin through an outage.
        failed: bool,
    },
    /// The backend's own stream.
    #[doc(hidden)]
    Native(BoxStream<'static, Result<Leader, Error>>),
}

impl LeaderChanges {
    /// The next leader; `None` when a native stream ends.
    pub async fn next(&mut self) -> Option<Result<Leader, Error>> {
        match self {
            LeaderChanges::Native(stream) => stream.next().await,
            LeaderChanges::Polling {
                election,
                last,
                failed,
            } => loop {
                if std::mem::take(failed) {
                    tokio::time::sleep(election.observe_every).await;
                }
                match election.leader().await {
                    Ok(Some(leader)) if last.as_ref() != Some(&leader) => {
                        *last = Some(leader.clone());
                        return Some(Ok(leader));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        *failed = true;
                        return Some(Err(error));
                    }
                }
                tokio::time::sleep(election.observe_every).await;
            },
        }
    }
}

impl fmt::Debug for LeaderChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderChanges").finish_non_exhaustive()
    }
}

/// This client leads the election until it resigns or [`lost`](Self::lost) fires.
///
/// Pass [`fence`](Self::fence) with every write the leader makes, so a deposed
/// leader's late writes are refused downstream (a [`FenceGate`](crate::FenceGate)).
/// Dropping it steps down in the background, best effort.
pub struct Leadership {
    inner: Inner,
}

enum Inner {
    Built(Built),
    Native(Box<dyn NativeLeadership>),
}

impl Leadership {
    /// The fencing token for the leader's writes: larger for every later leader.
    pub fn fence(&self) -> FenceToken {
        match &self.inner {
            Inner::Built(built) => built.lease.fence(),
            Inner::Native(native) => native.fence(),
        }
    }

    /// Still the leader, as far as this client knows: not resigned, not lost, and
    /// renewed within the renew deadline.
    pub fn is_leader(&self) -> bool {
        match &self.inner {
            Inner::Built(built) => built.is_leader(),
            Inner::Native(native) => native.is_leader(),
        }
    }

    /// Until when the backend surely keeps this leadership unless it is renewed: the
    /// last renewal's send time plus the TTL, less drift. The leader steps down
    /// earlier, at the renew deadline, so it stops before anyone else can lead.
    pub fn valid_until(&self) -> crate::BootInstant {
        match &self.inner {
            Inner::Built(built) => built.lease.valid_until(),
            Inner::Native(native) => native.valid_until(),
        }
    }

    /// Resolves when this client can no longer assume it leads: the renew deadline
    /// passed without a renewal, the key was taken or deleted, or the lock was shut
    /// down. The future owns what it needs, so it can be moved into a task.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        match &self.inner {
            Inner::Built(built) => {
                let steward = Arc::clone(&built.steward);
                Box::pin(async move { steward.wait_lost().await }) as BoxFuture<'static, ()>
            }
            Inner::Native(native) => native.lost(),
        }
    }

    /// Announces a new value without another election. [`Error::LeaseLost`] if this
    /// client no longer leads.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        let value = value.into();
        match &self.inner {
            Inner::Built(built) => {
                if !built.is_leader() {
                    return Err(built.lost_error());
                }
                publish(&built.lock, &built.key, &built.lease, built.margin, &value).await
            }
            Inner::Native(native) => native.proclaim(value).await,
        }
    }

    /// Stops renewing without stepping down on the backend, as a leader that
    /// crashed or froze would: the election stays taken until the TTL runs out, and
    /// then the next candidate leads. For demos and tests of what a fence token
    /// guards against; a leader that means to stop should [`resign`](Self::resign).
    pub fn leave_to_expire(self) {
        match self.inner {
            Inner::Built(mut built) => built.leave_to_expire(),
            Inner::Native(native) => native.leave_to_expire(),
        }
    }

    /// Steps down and frees the election for the next candidate at once.
    /// [`Error::LeaseLost`] if leadership was lost before.
    pub async fn resign(self) -> Result<(), Error> {
        match self.inner {
            Inner::Built(mut built) => built.resign().await,
            Inner::Native(native) => native.resign().await,
        }
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("fence", &self.fence())
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

/// A leadership built on a lease: a steward task owns the lease, and gives the key
/// back as soon as the leader steps down, so the next candidate need not wait out
/// the TTL.
struct Built {
    lock: DynLock,
    key: LockKey,
    lease: LeaseHandle,
    margin: Duration,
    steward: Arc<Steward>,
    /// Tells the steward how the leadership ends. `None` once used.
    end: Option<oneshot::Sender<End>>,
}

struct Steward {
    lost: AtomicBool,
    changed: Notify,
    name: Arc<str>,
}

impl Steward {
    fn step_down(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            metrics::election_role(&self.name, false);
            tracing::info!(target: "dlock::election", election = %self.name, "stepped down");
        }
        self.changed.notify_waiters();
    }

    async fn wait_lost(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lost.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Built {
    fn start(lock: DynLock, key: LockKey, lease: Lease, name: Arc<str>, margin: Duration) -> Built {
        let handle = lease.handle();
        let steward = Arc::new(Steward {
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            name,
        });
        metrics::election_role(&steward.name, true);
        let (end, requests) = oneshot::channel();
        tokio::spawn(steward_task(lease, margin, Arc::clone(&steward), requests));
        Built {
            lock,
            key,
            lease: handle,
            margin,
            steward,
            end: Some(end),
        }
    }

    fn is_leader(&self) -> bool {
        !self.steward.lost.load(Ordering::Acquire)
            && self.lease.is_valid()
            && !self
                .lease
                .valid_until()
                .saturating_sub(self.margin)
                .has_passed()
    }

    fn lost_error(&self) -> Error {
        Error::lease_lost(
            self.key.as_str(),
            self.lease.lost_reason().unwrap_or(LossReason::Expired),
        )
    }

    async fn resign(&mut self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let Some(end) = self.end.take() else {
            return Err(self.lost_error());
        };
        if end.send(End::Resign(reply)).is_err() {
            return Err(self.lost_error());
        }
        answer.await.unwrap_or_else(|_| Err(self.lost_error()))
    }

    fn leave_to_expire(&mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(End::LeaveToExpire);
        }
    }
}

/// How a leadership built on a lease ends, as its steward is told.
enum End {
    /// Release, and answer with the outcome.
    Resign(oneshot::Sender<Result<(), Error>>),
    /// Stop renewing and leave the key to its TTL, as a crashed leader would.
    LeaveToExpire,
}

/// Owns the leadership's lease: releases it when the leader resigns or drops its
/// leadership, or as soon as it steps down (renew deadline passed, lease lost).
async fn steward_task(
    mut lease: Lease,
    margin: Duration,
    steward: Arc<Steward>,
    mut requests: oneshot::Receiver<End>,
) {
    // Declared after `lease`, so dropped before it: whatever ends this task (a
    // panic, its runtime shutting down), the leader steps down before the key can
    // be released.
    let _step_down = StepDownOnDrop(Arc::clone(&steward));
    let deadline = lease.handle().lost_or_within(margin);
    tokio::select! {
        request = &mut requests => {
            steward.step_down();
            match request {
                Ok(End::LeaveToExpire) => lease.leave_to_expire(),
                Ok(End::Resign(reply)) => {
                    let _ = reply.send(lease.release().await);
                }
                // The leadership was dropped.
                Err(_) => {
                    let _ = lease.release().await;
                }
            }
        }
        () = deadline => {
            // Step down first, so the leader stops acting before the key is free.
            steward.step_down();
            let key = lease.key().to_owned();
            let reason = lease.lost_reason();
            if reason.is_none() {
                tracing::warn!(target: "dlock::election", election = %steward.name, "renew deadline passed without a renewal; stepping down");
            }
            let _ = lease.release().await;
            if let Ok(End::Resign(reply)) = requests.await {
                let _ = reply.send(Err(Error::lease_lost(key, reason.unwrap_or(LossReason::Expired))));
            }
        }
    }
}

struct StepDownOnDrop(Arc<Steward>);

impl Drop for StepDownOnDrop {
    fn drop(&mut self) {
        self.0.step_down();
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        // The steward sees its request channel close, and releases.
        self.end.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_options_follow_client_go_rule() {
        let caps = Capabilities::default();
        let s = Duration::from_secs;
        assert!(Campaign::ttl(s(15)).validate(&caps).is_ok());
        assert!(
            Campaign::ttl(s(15))
                .renew_deadline(s(15))
                .validate(&caps)
                .is_err()
        );
        assert!(
            Campaign::ttl(s(15))
                .retry_period(s(10))
                .validate(&caps)
                .is_err()
        );
        assert!(
            Campaign::ttl(s(15))
                .retry_period(Duration::ZERO)
                .validate(&caps)
                .is_err()
        );
        assert!(Campaign::ttl(Duration::ZERO).validate(&caps).is_err());
        let exact = Capabilities {
            drift_factor: 0.0,
            drift_fixed: Duration::ZERO,
            ..caps
        };
        assert_eq!(Campaign::ttl(s(15)).step_down_margin(&exact), s(5));
        // The drift is already off `valid_until`: the margin does not count it again.
        assert_eq!(
            Campaign::ttl(s(15)).step_down_margin(&caps),
            s(5) - caps.drift(s(15))
        );
    }
}
