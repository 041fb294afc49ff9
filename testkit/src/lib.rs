//! Test fixtures for dlock's integration tests: real servers in containers.
//!
//! - Images come from `DLOCK_REDIS_IMAGE` / `DLOCK_ETCD_IMAGE` (default: the official
//!   images); `scripts/test-images.sh` builds local ones from Debian's packages.
//! - The shared server of a kind is one container for the whole test run, reused by
//!   every test process (nextest runs each test in its own process): it is found by
//!   name, and a file lock keeps two processes from starting it twice.
//! - Every container carries the label `dlock.test`; the test command removes them
//!   at the end (`scripts/test.sh`).
//! - Clients connect to 127.0.0.1 and the published port: the address testcontainers
//!   reports for the host may be a private bridge address that tests must not use.
//! - No Docker is a loud failure, never a skip.

#![forbid(unsafe_code)]

mod cluster;
mod container;
mod etcd;
mod proxy;
mod redis;
mod tls;

pub use cluster::{ELECTION_TIMEOUT_MS, EtcdCluster, HEARTBEAT_MS};
pub use container::{LABEL, Server, free_port};
pub use etcd::{etcd_image, shared_etcd_url, start_etcd, start_etcd_tls};
pub use proxy::{Link, Proxy};
pub use redis::{
    RedisOptions, redis_image, shared_redis_nodes, shared_redis_url, shared_redlock_url,
    start_redis, start_redis_tls,
};
pub use tls::TestCertificate;
