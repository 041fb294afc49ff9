//! The whole conformance suite against Redlock over three real Redis servers, once
//! over five, and once over three without fencing tokens (whose votes are plain
//! commands instead of the acquire script).

use std::sync::Arc;

use async_trait::async_trait;
use dlock_core::{DynLock, conformance::Harness};
use dlock_redlock::{RedlockConfig, RedlockLock};

struct RedlockHarness {
    urls: Vec<String>,
    fencing: bool,
}

impl RedlockHarness {
    async fn nodes(n: usize) -> Self {
        RedlockHarness {
            urls: dlock_testkit::shared_redis_nodes(n).await,
            fencing: true,
        }
    }

    async fn without_tokens() -> Self {
        RedlockHarness {
            fencing: false,
            ..Self::nodes(3).await
        }
    }

    async fn connect(&self) -> RedlockLock {
        let mut builder = RedlockConfig::builder().fencing(self.fencing);
        for url in &self.urls {
            builder = builder.node_url(url.as_str());
        }
        RedlockLock::connect_with(builder.build().expect("config"))
            .await
            .expect("connect to the test nodes")
    }
}

#[async_trait]
impl Harness for RedlockHarness {
    async fn client(&self) -> DynLock {
        Arc::new(self.connect().await)
    }

    async fn delete_key(&self, key: &str) {
        assert!(
            self.connect()
                .await
                .force_release(key)
                .await
                .expect("force release"),
            "no lock at {key} on a majority"
        );
    }
}

dlock_core::conformance_tests!(RedlockHarness::nodes(3).await);

mod five_nodes {
    use super::RedlockHarness;

    dlock_core::conformance_tests!(RedlockHarness::nodes(5).await);
}

mod without_tokens {
    use super::RedlockHarness;

    dlock_core::conformance_tests!(RedlockHarness::without_tokens().await);
}
