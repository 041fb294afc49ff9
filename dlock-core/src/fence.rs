//! Fencing: tokens that increase with every acquisition, and the resource-side
//! gate that refuses writes carrying an older token.

use std::fmt;

use async_trait::async_trait;

use crate::Error;

/// A fencing token: strictly increases with every acquisition of a key.
///
/// A `u64`, so an etcd revision fits and so does a SQL `BIGINT`. Pass it with every
/// write to the protected resource and let a [`FenceGate`] refuse older ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct FenceToken(pub u64);

impl FenceToken {
    /// The token's number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FenceToken> for u64 {
    fn from(token: FenceToken) -> u64 {
        token.0
    }
}

/// Issues tokens that strictly increase per resource, without taking a lock.
///
/// Every lock backend also issues a token with each lease, in the same atomic step
/// as the acquisition, so token order is lock order. Use a `FenceSource` directly
/// only where the token's order need not follow a lock.
#[async_trait]
pub trait FenceSource: Send + Sync {
    /// The next token for `resource`: larger than every token issued for it before.
    async fn next_fence(&self, resource: &str) -> Result<FenceToken, Error>;
}

/// What a [`FenceGate`] decided about a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Admission {
    /// The token was at least the highest seen: the write was stored and the token recorded.
    Accepted,
    /// The token was older than one already admitted: nothing was written.
    Stale {
        /// The highest token the gate has admitted for this resource.
        highest: FenceToken,
    },
}

impl Admission {
    /// The write was stored.
    pub fn is_accepted(self) -> bool {
        matches!(self, Admission::Accepted)
    }
}

/// What [`FenceGate::read_for_update`] found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FencedRead {
    /// The token was at least the highest seen and is now the highest: here is the
    /// last value written (`None`: never written). Until a higher token comes, a
    /// write with this token is admitted and nobody else's is.
    Current(Option<Vec<u8>>),
    /// The token was older than one already admitted: a newer holder has read or
    /// written the resource. Nothing was changed.
    Stale {
        /// The highest token the gate has admitted for this resource.
        highest: FenceToken,
    },
}

/// The resource side of fencing: a register per resource that admits an operation
/// only if its token is at least the highest it has admitted, and records that
/// token, in one atomic step.
///
/// # Guarantee
///
/// - [`write`](Self::write) with token `t` stores its value only if no operation
///   with a token above `t` was admitted before it.
/// - [`read_for_update`](Self::read_for_update) with token `t` raises the highest
///   token to `t`, so from then on every write with a lower token is refused.
/// - Together: an update made as `read_for_update(t)`, then `write(t)`, is
///   admitted only if no other holder's operation came in between, so the value it
///   writes was computed from the latest value. No update is lost, however long a
///   holder stalls between its read and its write. [`FenceGateExt::update`] does
///   both steps.
/// - Operations with equal tokens (one lease, or clones of its handle) are not
///   ordered against each other: make one update at a time per lease.
///
/// Fencing writes alone is not enough for a read-modify-write: a stale holder A
/// (token 5) reads, stalls, and B (token 6) reads the same value; A's write is
/// admitted (5 is the highest so far), then B's (6 ≥ 5), and A's update is lost.
/// With `read_for_update`, B's read raises the gate to 6 and A's write is refused.
///
/// Checking "is my token still current?" in application code and then writing is a
/// race; the check and the write must be one step. In SQL each step is one
/// statement:
///
/// ```sql
/// -- read for update: raise the fence and read, in one statement
/// UPDATE accounts SET fence = $t WHERE id = $id AND fence <= $t RETURNING balance;
/// -- write: store only if no newer token came since
/// UPDATE accounts SET balance = $new, fence = $t WHERE id = $id AND fence <= $t;
/// -- zero rows in either: the token is stale
/// ```
///
/// A gate is keyed by its resource name, which need not be the lock key.
///
/// # Tokens of one backend only
///
/// Tokens of different backends do not compare: Redis tokens start near the server
/// clock in microseconds (about 10^15), etcd's are revisions, memory's count from 1.
/// A gate that admitted Redis tokens refuses every etcd token after a switch. When
/// moving a resource to another backend, start a new resource name (or reset its
/// fence column). The gates log a warning at `dlock::fence` when a refused token is
/// more than a million times below the highest, which is what such a switch looks like.
#[async_trait]
pub trait FenceGate: Send + Sync {
    /// Stores `value` under `resource` if `token` is at least the highest token
    /// admitted for it so far, recording `token`.
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error>;

    /// Reads `resource` as the first step of an update: if `token` is at least the
    /// highest admitted, records `token` as the highest and returns the value, in one
    /// atomic step.
    async fn read_for_update(&self, resource: &str, token: FenceToken)
    -> Result<FencedRead, Error>;

    /// The highest token admitted for `resource` (by a write or a read for update)
    /// and the last value written; `None` if nothing was ever written. A plain read:
    /// for an update, use [`read_for_update`](Self::read_for_update).
    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error>;
}

/// A shared, type-erased fence gate, as [`DynLock`](crate::DynLock) is for locks.
pub type DynFenceGate = std::sync::Arc<dyn FenceGate>;

/// Conveniences on every [`FenceGate`]; nobody implements it by hand.
pub trait FenceGateExt: FenceGate {
    /// A safe read-modify-write: [`read_for_update`](FenceGate::read_for_update) with
    /// `token` (a [`FenceToken`], or the `&Lease` / `&LeaseHandle` it came with),
    /// `change` of the value read, then [`write`](FenceGate::write) of its result. `Stale` if another holder's operation came in between, and then
    /// nothing was written.
    ///
    /// ```
    /// # async fn demo(gate: &dyn dlock_core::FenceGate, lease: &dlock_core::LeaseHandle)
    /// # -> Result<(), dlock_core::Error> {
    /// use dlock_core::FenceGateExt;
    ///
    /// let admission = gate
    ///     .update("account:7", lease, |balance| {
    ///         let balance: u64 = balance.map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap_or(0));
    ///         balance.saturating_sub(100).to_string().into_bytes()
    ///     })
    ///     .await?;
    /// # let _ = admission; Ok(()) }
    /// ```
    fn update<F>(
        &self,
        resource: &str,
        token: impl Into<FenceToken>,
        change: F,
    ) -> impl std::future::Future<Output = Result<Admission, Error>> + Send
    where
        F: FnOnce(Option<&[u8]>) -> Vec<u8> + Send,
    {
        let token = token.into();
        async move {
            match self.read_for_update(resource, token).await? {
                FencedRead::Stale { highest } => Ok(Admission::Stale { highest }),
                FencedRead::Current(value) => {
                    let new = change(value.as_deref());
                    self.write(resource, token, &new).await
                }
            }
        }
    }
}

impl<G: FenceGate + ?Sized> FenceGateExt for G {}

/// Logs a refused token, and warns when it looks like tokens of another backend.
/// For gate implementations.
pub fn stale_token(gate: &'static str, resource: &str, token: FenceToken, highest: FenceToken) {
    crate::metrics::fence_rejected(gate);
    if highest.get() / 1_000_000 > token.get() {
        tracing::warn!(
            target: "dlock::fence",
            gate,
            resource,
            token = token.get(),
            highest = highest.get(),
            "stale token refused, a million times below the highest: were tokens of another backend written here? They do not compare"
        );
    } else {
        // A holder wrote after losing its lease: the gate did its job, and the
        // operator should know the holder overran.
        tracing::warn!(
            target: "dlock::fence",
            gate,
            resource,
            token = token.get(),
            highest = highest.get(),
            "stale token refused"
        );
    }
}
