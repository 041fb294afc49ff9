#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod errors;
mod gate;
mod keys;
mod lock;
mod node;
mod notify;
mod scripts;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, RedisConfig, RedisConfigBuilder,
};
pub use gate::RedisFenceGate;
pub use lock::RedisLock;
pub use node::{NodeExtend, NodeGrant, PLACE_TTL, RedisNode};
