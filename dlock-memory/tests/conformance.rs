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

/// The same suite through a bulkhead: the adapter must keep the whole contract.
mod bulkheaded {
    use std::sync::Arc;

    use async_trait::async_trait;
    use dlock_core::{Bulkheaded, DynLock, conformance::Harness, reliability::Bulkhead};
    use dlock_memory::MemoryLock;

    struct BulkheadedHarness {
        lock: Bulkheaded<MemoryLock>,
    }

    #[async_trait]
    impl Harness for BulkheadedHarness {
        async fn client(&self) -> DynLock {
            Arc::new(self.lock.clone())
        }

        async fn delete_key(&self, key: &str) {
            self.lock.inner().force_release(key);
        }
    }

    dlock_core::conformance_tests!(BulkheadedHarness {
        lock: Bulkheaded::new(
            MemoryLock::new(),
            Bulkhead::with_name("conformance", 64, 256).expect("valid limits"),
        ),
    });
}

mod gate {
    dlock_core::gate_conformance_tests!(std::sync::Arc::new(dlock_memory::MemoryFenceGate::new()));
}
