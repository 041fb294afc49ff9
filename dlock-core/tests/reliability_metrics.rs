//! The metrics each helper emits, read back through a small in-test recorder.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dlock_core::reliability::{
    BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL, BULKHEAD_IN_FLIGHT, BULKHEAD_QUEUED,
    BULKHEAD_REJECTED_TOTAL, Bulkhead, CircuitBreaker,
};
use futures::poll;
use tokio::time::advance;

/// The process-wide recorder, installed on first use; each test uses its own `name`.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(Recorder(recorded)).expect("the only recorder");
        recorded
    })
}

/// A recorder that keeps the last value of each metric, keyed by name and labels.
#[derive(Default)]
struct Recorded(Mutex<HashMap<String, f64>>);

struct Handle(&'static Recorded, String);

impl Recorded {
    fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().expect("not poisoned").get(key).copied()
    }
    fn update(&self, key: &str, f: impl FnOnce(f64) -> f64) {
        let mut values = self.0.lock().expect("not poisoned");
        let value = values.entry(key.to_string()).or_default();
        *value = f(*value);
    }
}

impl metrics::CounterFn for Handle {
    fn increment(&self, n: u64) {
        self.0.update(&self.1, |v| v + n as f64);
    }
    fn absolute(&self, n: u64) {
        self.0.update(&self.1, |_| n as f64);
    }
}

impl metrics::GaugeFn for Handle {
    fn increment(&self, n: f64) {
        self.0.update(&self.1, |v| v + n);
    }
    fn decrement(&self, n: f64) {
        self.0.update(&self.1, |v| v - n);
    }
    fn set(&self, n: f64) {
        self.0.update(&self.1, |_| n);
    }
}

impl metrics::HistogramFn for Handle {
    fn record(&self, _: f64) {}
}

struct Recorder(&'static Recorded);

impl Recorder {
    fn handle(&self, key: &metrics::Key) -> Arc<Handle> {
        let labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        Arc::new(Handle(
            self.0,
            format!("{}{{{}}}", key.name(), labels.join(",")),
        ))
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.handle(key))
    }
}

#[tokio::test(start_paused = true)]
async fn each_breaker_transition_sets_the_state_gauge_and_counts() {
    let recorded = recorded();
    let breaker = CircuitBreaker::builder()
        .name("metered")
        .min_calls(1)
        .reset_timeout(Duration::from_secs(5))
        .build()
        .expect("valid");
    let state = format!("{BREAKER_STATE}{{name=metered}}");
    let moves = |from: &str, to: &str| {
        recorded.get(&format!(
            "{BREAKER_TRANSITIONS_TOTAL}{{name=metered,from={from},to={to}}}"
        ))
    };

    assert_eq!(recorded.get(&state), Some(0.0));
    breaker.try_acquire_permit().expect("closed").failure();
    assert_eq!(recorded.get(&state), Some(1.0));
    advance(Duration::from_secs(5)).await;
    let trial = breaker.try_acquire_permit().expect("the trial");
    assert_eq!(recorded.get(&state), Some(2.0));
    trial.success();
    assert_eq!(recorded.get(&state), Some(0.0));
    assert_eq!(moves("closed", "open"), Some(1.0));
    assert_eq!(moves("open", "half_open"), Some(1.0));
    assert_eq!(moves("half_open", "closed"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_gauges_follow_calls_in_flight_and_queued() {
    let recorded = recorded();
    let bulkhead = Bulkhead::with_name("gauged", 1, 1).expect("valid");
    let in_flight = || recorded.get(&format!("{BULKHEAD_IN_FLIGHT}{{name=gauged}}"));
    let queued = || recorded.get(&format!("{BULKHEAD_QUEUED}{{name=gauged}}"));
    let rejected = || recorded.get(&format!("{BULKHEAD_REJECTED_TOTAL}{{name=gauged}}"));

    let running = bulkhead.try_acquire().expect("free");
    let mut waiting = pin!(bulkhead.acquire());
    assert!(poll!(waiting.as_mut()).is_pending());
    assert!(bulkhead.acquire().await.is_err());
    assert_eq!(
        (in_flight(), queued(), rejected()),
        (Some(1.0), Some(1.0), Some(1.0))
    );

    drop(running);
    let next = waiting.await.expect("served");
    assert_eq!((in_flight(), queued()), (Some(1.0), Some(0.0)));
    drop(next);
    assert_eq!(in_flight(), Some(0.0));
}
