#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod election;
mod endpoints;
mod errors;
mod gate;
mod keys;
mod lock;
mod owners;
mod session;

pub use config::{DEFAULT_PREFIX, EtcdConfig, EtcdConfigBuilder};
pub use election::{EtcdElection, LeaderChanges, Leadership};
pub use gate::EtcdFenceGate;
pub use lock::EtcdLock;
