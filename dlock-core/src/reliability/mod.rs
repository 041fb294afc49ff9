//! Reliability helpers, used by the lock machinery and offered to applications.

mod jitter;

pub use jitter::{DecorrelatedJitter, FullJitter};
