//! The whole conformance suite against the memory backend.

use std::sync::Arc;

use async_trait::async_trait;
use dlock_core::{DynLock, conformance::Harness};
use dlock_memory::MemoryLock;

/// Clients are clones of one `MemoryLock`: they share its table, as processes share a server.
struct MemoryHarness {
    lock: MemoryLock,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn client(&self) -> DynLock {
        Arc::new(self.lock.clone())
    }

    async fn delete_key(&self, key: &str) {
        self.lock.force_release(key);
    }
}

dlock_core::conformance_tests!(MemoryHarness {
    lock: MemoryLock::new()
});
