//! The log tells an operator's story, once per event and without secrets: a
//! backend pause is one "unreachable" and one "reachable again", keep-alive's
//! retries during it are one warning and one recovery, a stale write refused and
//! a lease lost are one warning each, with key, backend and fence. The password in
//! the URL appears nowhere.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use dlock_core::{Acquire, Admission, FenceGate, FenceToken, LockExt, LossReason};
use dlock_redis::{RedisConfig, RedisFenceGate, RedisLock};
use dlock_testkit::{RedisOptions, start_redis};
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    Layer,
    layer::{Context, SubscriberExt},
};

const PASSWORD: &str = "hunter2-do-not-log";

/// One event as captured: level, target, and its fields rendered `name=value`.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    target: String,
    text: String,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().expect("the capture").push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: fields.0,
        });
    }
}

impl Capture {
    fn matching(&self, level: Level, target: &str, needle: &str) -> Vec<Captured> {
        self.0
            .lock()
            .expect("the capture")
            .iter()
            .filter(|e| e.level == level && e.target == target && e.text.contains(needle))
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Captured> {
        self.0.lock().expect("the capture").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tells_the_story_once_per_event() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .expect("install the capture");

    let server = start_redis(RedisOptions {
        args: vec!["--requirepass".into(), PASSWORD.into()],
        ..RedisOptions::default()
    })
    .await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port());
    let config = RedisConfig::builder()
        .url(&url)
        .operation_timeout(Duration::from_millis(300))
        .build()
        .expect("config");
    let lock = RedisLock::connect_with(config).await.expect("connect");
    let key = "dlock-logs:order-7";
    // Extended every second, so a 4 s pause costs several retries but not the lease.
    let lease = lock
        .acquire(
            key,
            Acquire::ttl(Duration::from_secs(9)).keep_alive(1.0 / 9.0),
        )
        .await
        .expect("acquire");
    let fence = lease.fence().get().to_string();

    server.pause().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.unpause().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(lease.is_valid(), "the lease did not survive the pause");

    let failed = capture.matching(
        Level::WARN,
        "dlock::keep_alive",
        "keep-alive extension failed",
    );
    assert_eq!(failed.len(), 1, "keep-alive warnings: {failed:#?}");
    assert!(
        failed[0].text.contains(key) && failed[0].text.contains(&fence),
        "{failed:?}"
    );
    let retried = capture.matching(Level::DEBUG, "dlock::keep_alive", "failed again");
    assert!(
        !retried.is_empty(),
        "no retry during a 4 s pause: {:#?}",
        capture.all()
    );
    let recovered = capture.matching(Level::INFO, "dlock::keep_alive", "extended the lease again");
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    let down = capture.matching(Level::WARN, "dlock::backend", "backend unreachable");
    assert_eq!(down.len(), 1, "{down:#?}");
    assert!(down[0].text.contains("backend=\"redis\""), "{down:?}");
    let up = capture.matching(Level::INFO, "dlock::backend", "reachable again");
    assert_eq!(up.len(), 1, "{up:#?}");

    // A stale write refused.
    let gate = RedisFenceGate::new(&lock);
    let resource = "dlock-logs:account-7";
    let fresh = gate
        .write(resource, lease.fence(), b"100")
        .await
        .expect("write");
    assert_eq!(fresh, Admission::Accepted);
    let stale = gate
        .write(resource, FenceToken(lease.fence().get() - 1), b"0")
        .await
        .expect("write");
    assert!(matches!(stale, Admission::Stale { .. }), "{stale:?}");
    let refused = capture.matching(Level::WARN, "dlock::fence", "stale token refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].text.contains(resource), "{refused:?}");

    // A lease lost: the key deleted behind the holder's back.
    assert!(lock.force_release(key).await.expect("force release"));
    tokio::time::timeout(Duration::from_secs(3), lease.lost())
        .await
        .expect("the loss was not noticed");
    assert_eq!(lease.lost_reason(), Some(LossReason::Gone));
    // The loss is published (and lost() may resolve) a moment before the task that
    // found it writes the line: give it that moment.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(1);
    let lost = loop {
        let lost = capture.matching(Level::WARN, "dlock::lease", "lease lost");
        if !lost.is_empty() || tokio::time::Instant::now() >= give_up {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(lost.len(), 1, "{lost:#?}");
    for field in [key, fence.as_str(), "backend=\"redis\"", "reason=\"gone\""] {
        assert!(lost[0].text.contains(field), "no {field} in {:?}", lost[0]);
    }

    let everything = capture.all();
    assert!(
        everything.iter().all(|e| !e.text.contains(PASSWORD)),
        "the password was logged: {everything:#?}"
    );
    drop(lease);
}
