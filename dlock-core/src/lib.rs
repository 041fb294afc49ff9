#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acquire;
mod bulkheaded;
mod call;
mod capabilities;
pub mod clock;
mod election;
mod error;
mod fence;
mod keep_alives;
mod key;
mod lease;
pub mod local_queue;
mod lock;
pub mod metrics;
mod options;
mod owner;
pub mod reliability;
mod tracker;
mod url;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use acquire::LockExt;
pub use bulkheaded::Bulkheaded;
pub use call::bounded;
pub use capabilities::{Capabilities, ExpiryScope};
pub use clock::BootInstant;
pub use election::{
    Campaign, DEFAULT_OBSERVE_EVERY, ELECTION_KEY_PREFIX, Election, Leader, LeaderChanges,
    Leadership, NativeElection, NativeLeadership,
};
pub use error::{BoxError, Error, InvalidInput, LossReason};
pub use fence::{
    Admission, DynFenceGate, FenceGate, FenceGateExt, FenceSource, FenceToken, FencedRead,
    stale_token,
};
pub use keep_alives::{Extension, KeepAlives, MAX_BATCH};
pub use key::{LockKey, MAX_KEY_LEN};
pub use lease::{Lease, LeaseHandle};
pub use lock::{Attempt, AttemptRequest, DynLock, Holder, Lock, WakeSignal, spawn_release};
pub use options::{
    Acquire, DEFAULT_KEEP_ALIVE, MAX_REPRESENTABLE_TTL, Wait, duration_setting, validate_ttl,
};
pub use owner::OwnerId;
pub use tracker::{Pending, ShutdownReport, Tracker};
pub use url::redact_url;
