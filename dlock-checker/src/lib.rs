//! The safety checker: workers take a lock, read two registers, work, write them
//! and release, while a real fault hits the backend or a worker; the whole history
//! is then checked against a mutex, the fencing tokens against real time, and the
//! registers for lost updates. `docs/safety.md` is its table.
//!
//! ```text
//! cargo run --release -p dlock-checker -- table --seconds 60 > docs/safety.md
//! cargo run --release -p dlock-checker -- run --backend redis --fault client-pause --seconds 300
//! ```

#![forbid(unsafe_code)]

pub mod check;
pub mod history;
pub mod scenario;
pub mod table;
pub mod worker;
