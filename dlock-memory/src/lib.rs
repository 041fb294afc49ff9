#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod gate;
mod lock;
mod table;

pub use gate::MemoryFenceGate;
pub use lock::MemoryLock;
