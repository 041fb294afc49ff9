#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod health;
mod lock;

pub use config::{DEFAULT_MAX_TTL, MIN_PER_NODE_TIMEOUT, RedlockConfig, RedlockConfigBuilder};
pub use lock::RedlockLock;
