//! The whole conformance suite against a real etcd in a container, with a lease per
//! lock and in session mode.

use std::sync::Arc;

use async_trait::async_trait;
use dlock_core::{DynLock, conformance::Harness};
use dlock_etcd::EtcdLock;

struct EtcdHarness {
    url: String,
}

#[async_trait]
impl Harness for EtcdHarness {
    async fn client(&self) -> DynLock {
        Arc::new(
            EtcdLock::connect(&self.url)
                .await
                .expect("connect to the test etcd"),
        )
    }

    async fn delete_key(&self, key: &str) {
        let admin = EtcdLock::connect(&self.url).await.expect("connect");
        assert!(
            admin.force_release(key).await.expect("force release"),
            "no lock at {key}"
        );
    }
}

dlock_core::conformance_tests!(EtcdHarness {
    url: dlock_testkit::shared_etcd_url().await
});

/// Session mode: every lock of a client on one lease of 2 s.
mod session {
    use super::EtcdHarness;

    dlock_core::conformance_tests!(EtcdHarness {
        url: format!("{}/?session=2", dlock_testkit::shared_etcd_url().await)
    });
}

mod gate {
    dlock_core::gate_conformance_tests!({
        let url = dlock_testkit::shared_etcd_url().await;
        let lock = dlock_etcd::EtcdLock::connect(&url).await.expect("connect");
        std::sync::Arc::new(dlock_etcd::EtcdFenceGate::new(&lock))
    });
}
