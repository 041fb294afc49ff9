//! The whole conformance suite against a real Redis in a container.

use std::sync::Arc;

use async_trait::async_trait;
use dlock_core::{DynLock, conformance::Harness};
use dlock_redis::RedisLock;

struct RedisHarness {
    url: String,
}

#[async_trait]
impl Harness for RedisHarness {
    async fn client(&self) -> DynLock {
        Arc::new(
            RedisLock::connect(&self.url)
                .await
                .expect("connect to the test Redis"),
        )
    }

    async fn delete_key(&self, key: &str) {
        let admin = RedisLock::connect(&self.url).await.expect("connect");
        assert!(
            admin.force_release(key).await.expect("force release"),
            "no lock at {key}"
        );
    }
}

dlock_core::conformance_tests!(RedisHarness {
    url: dlock_testkit::shared_redis_url().await
});

mod gate {
    dlock_core::gate_conformance_tests!({
        let url = dlock_testkit::shared_redis_url().await;
        let lock = dlock_redis::RedisLock::connect(&url)
            .await
            .expect("connect");
        std::sync::Arc::new(dlock_redis::RedisFenceGate::new(&lock))
    });
}
