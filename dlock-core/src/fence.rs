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
    /// The token was older than one already accepted: nothing was written.
    Stale {
        /// The highest token the gate has accepted for this resource.
        highest: FenceToken,
    },
}

impl Admission {
    /// The write was stored.
    pub fn is_accepted(self) -> bool {
        matches!(self, Admission::Accepted)
    }
}

/// The resource side of fencing: a register per resource that stores a write only if
/// its token is at least the highest it has accepted, and records that token, in one
/// atomic step.
///
/// Checking "is my token still current?" in application code and then writing is a
/// race; the check and the write must be one step. In SQL the same gate is one
/// statement:
///
/// ```sql
/// UPDATE orders SET state = $1, fence = $2 WHERE id = $3 AND fence <= $2;
/// -- zero rows updated: the token was stale
/// ```
///
/// A gate is keyed by its resource name, which need not be the lock key.
#[async_trait]
pub trait FenceGate: Send + Sync {
    /// Stores `value` under `resource` if `token` is at least the highest token
    /// accepted for it so far, recording `token`.
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error>;

    /// The last accepted write for `resource`: its token and value.
    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error>;
}
