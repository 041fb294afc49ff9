#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connect;

pub use connect::{connect, connect_with_gate};
#[doc(inline)]
pub use dlock_core::{
    Acquire, Admission, Attempt, AttemptRequest, BootInstant, Bulkheaded, Campaign, Capabilities,
    DynFenceGate, DynLock, ELECTION_KEY_PREFIX, Election, Error, ExpiryScope, FenceGate,
    FenceGateExt, FenceSource, FenceToken, FencedRead, Holder, InvalidInput, Leader, LeaderChanges,
    Leadership, Lease, LeaseHandle, Lock, LockExt, LockKey, LossReason, MAX_KEY_LEN, OwnerId,
    ShutdownReport, Wait, metrics, redact_url, reliability,
};
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
#[doc(inline)]
pub use dlock_etcd::{EtcdConfig, EtcdFenceGate, EtcdLock};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use dlock_memory::{MemoryFenceGate, MemoryLock};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use dlock_redis::{RedisConfig, RedisFenceGate, RedisLock};
#[cfg(feature = "redlock")]
#[cfg_attr(docsrs, doc(cfg(feature = "redlock")))]
#[doc(inline)]
pub use dlock_redlock::{RedlockConfig, RedlockLock};
