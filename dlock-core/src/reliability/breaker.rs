//! A circuit breaker: stop calling a dependency that keeps failing, and try it
//! again, one call at a time, after a pause.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::SharedString;
use tokio::time::Instant;

use super::{BreakerError, BreakerOpen, ConfigError};

/// Gauge: a breaker's state, labelled by `name`: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "dlock_breaker_state";
/// Counter: state changes, labelled by `name`, `from` and `to`
/// (`closed`, `open`, `half_open`).
pub const BREAKER_TRANSITIONS_TOTAL: &str = "dlock_breaker_transitions_total";

/// Calls running longer than this count as failures, by default.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The breaker opens when this share of the calls in the window failed, by default.
const DEFAULT_THRESHOLD_PERCENT: f64 = 50.0;
/// How long the breaker stays open before a trial call, by default.
const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// How far back the error rate looks, by default.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// How many buckets the window is cut into, by default.
const DEFAULT_BUCKETS: usize = 10;
/// Fewer calls than this in the window never open the breaker, by default.
const DEFAULT_MIN_CALLS: usize = 10;
/// The most buckets a window may have.
const MAX_BUCKETS: usize = 1000;

/// Where a [`CircuitBreaker`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused at once until the reset timeout has passed.
    Open,
    /// One trial call goes through; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The name used in metrics and logs: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of a breaker's state, as given to the
/// [`on_transition`](CircuitBreakerBuilder::on_transition) listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// When it happened.
    pub at: Instant,
}

type Listener = Arc<dyn Fn(&str, Transition) + Send + Sync>;

/// A circuit breaker.
///
/// - **Closed**: calls go through. Their outcomes are counted over a rolling window
///   (default 10 s, in 10 buckets; outcomes leave the window a bucket at a time).
///   Once the window holds at least `min_calls` calls (default 10) and the share of
///   failures reaches the threshold (default 50 %), the breaker opens. Calls longer
///   than the call timeout (default 3 s) count as failures.
/// - **Open**: calls are refused at once with [`BreakerOpen`], for the reset timeout
///   (default 5 s).
/// - **Half-open**: exactly one trial call goes through; others are refused. Its
///   success closes the breaker (with an empty window), its failure opens it again.
///   The move from open to half-open happens at the first look after the reset
///   timeout.
///
/// Each change emits a `tracing` event, sets the [`BREAKER_STATE`] gauge, counts in
/// [`BREAKER_TRANSITIONS_TOTAL`] and calls the optional listener.
///
/// Two ways in: [`call`](Self::call) wraps a future; or
/// [`try_acquire_permit`](Self::try_acquire_permit) asks "may I call now?" without
/// any future, and the caller reports the outcome on the permit. The second suits a
/// client that keeps one breaker per server and skips the ones that are down.
/// Cloning is cheap and clones share the state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use dlock_core::reliability::CircuitBreaker;
///
/// let breaker = CircuitBreaker::builder()
///     .name("redis-1")
///     .reset_timeout(Duration::from_secs(5))
///     .on_transition(|name, t| eprintln!("{name}: {} -> {}", t.from, t.to))
///     .build()?;
///
/// // Wrapping a future:
/// let pong = breaker.call(async { Ok::<_, std::io::Error>("PONG") }).await?;
/// assert_eq!(pong, "PONG");
///
/// // Or asking first, and reporting the outcome:
/// if let Ok(permit) = breaker.try_acquire_permit() {
///     permit.success();
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    name: SharedString,
    config: Config,
    listener: Option<Listener>,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    call_timeout: Duration,
    threshold_percent: f64,
    reset_timeout: Duration,
    window: Duration,
    buckets: usize,
    min_calls: usize,
}

struct State {
    phase: Phase,
    // Bumped on every transition, so that outcomes of calls let through in an
    // earlier phase are ignored.
    generation: u64,
    window: Window,
}

#[derive(Clone, Copy)]
enum Phase {
    Closed,
    // `None`: the reset timeout is too long to reach.
    Open { until: Option<Instant> },
    HalfOpen { trial_running: bool },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Success,
    Failure,
    // The permit was dropped without a verdict (the call was cancelled).
    Abandoned,
}

impl CircuitBreaker {
    /// A breaker with the default settings, named `name` in metrics and logs.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CircuitBreakerBuilder::default().name(name).assemble()
    }

    /// A breaker to configure, starting from the defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// The `name` label of its metrics and logs.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The time after which [`call`](Self::call) gives up and counts a failure.
    /// Callers of [`try_acquire_permit`](Self::try_acquire_permit) apply it themselves.
    pub fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    /// The current state (moving from open to half-open if the reset timeout passed).
    pub fn state(&self) -> BreakerState {
        self.inner
            .update(Instant::now(), |state| state.phase.state())
    }

    /// May a call go out now? Cheap and never waits: a permit if the breaker is
    /// closed, or half-open with no trial running (the permit is then the trial);
    /// otherwise [`BreakerOpen`]. Report the call's outcome with
    /// [`BreakerPermit::success`] or [`BreakerPermit::failure`]; a permit dropped
    /// without either counts for nothing (and frees the trial slot).
    pub fn try_acquire_permit(&self) -> Result<BreakerPermit, BreakerOpen> {
        let now = Instant::now();
        self.inner.update(now, |state| {
            let trial = match state.phase {
                Phase::Closed => false,
                Phase::HalfOpen {
                    trial_running: false,
                } => {
                    state.phase = Phase::HalfOpen {
                        trial_running: true,
                    };
                    true
                }
                Phase::HalfOpen {
                    trial_running: true,
                } => return Err(BreakerOpen { retry_after: None }),
                Phase::Open { until } => {
                    let retry_after =
                        until.map_or(Duration::MAX, |until| until.saturating_duration_since(now));
                    return Err(BreakerOpen {
                        retry_after: Some(retry_after),
                    });
                }
            };
            Ok(BreakerPermit {
                inner: Arc::clone(&self.inner),
                generation: state.generation,
                trial,
                settled: false,
            })
        })
    }

    /// Runs `fut` if the breaker lets it, within the call timeout, and counts the
    /// outcome: `Err` and timeouts are failures. Dropping this future counts nothing.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire_permit()?;
        match super::timeout(self.inner.config.call_timeout, fut).await {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(err)) => {
                permit.failure();
                Err(BreakerError::Inner(err))
            }
            Err(elapsed) => {
                permit.failure();
                Err(BreakerError::Timeout(elapsed))
            }
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held, but never let poison spread.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state, after the time-driven move from open to half-open,
    /// which is reported once the lock is released.
    fn update<R>(&self, now: Instant, f: impl FnOnce(&mut State) -> R) -> R {
        let mut transition = None;
        let result = {
            let mut state = self.lock();
            if let Phase::Open { until: Some(until) } = state.phase
                && now >= until
            {
                let half_open = Phase::HalfOpen {
                    trial_running: false,
                };
                transition = Some(self.enter(&mut state, half_open, now));
            }
            f(&mut state)
        };
        self.notify(transition);
        result
    }

    /// Moves to `phase`, with a fresh generation, and emits metrics and logs while
    /// the lock is held so that they stay in order.
    fn enter(&self, state: &mut State, phase: Phase, now: Instant) -> Transition {
        let t = Transition {
            from: state.phase.state(),
            to: phase.state(),
            at: now,
        };
        state.phase = phase;
        state.generation = state.generation.wrapping_add(1);
        state.window.clear();
        metrics::gauge!(BREAKER_STATE, "name" => self.name.clone()).set(t.to.gauge_value());
        metrics::counter!(
            BREAKER_TRANSITIONS_TOTAL,
            "name" => self.name.clone(),
            "from" => t.from.as_str(),
            "to" => t.to.as_str(),
        )
        .increment(1);
        if t.to == BreakerState::Open {
            tracing::warn!(target: "dlock::breaker", breaker = %self.name, from = %t.from, "circuit breaker opened");
        } else {
            tracing::info!(target: "dlock::breaker", breaker = %self.name, from = %t.from, to = %t.to, "circuit breaker state changed");
        }
        t
    }

    fn open(&self, state: &mut State, now: Instant) -> Transition {
        let until = now.checked_add(self.config.reset_timeout);
        self.enter(state, Phase::Open { until }, now)
    }

    fn settle(&self, generation: u64, trial: bool, outcome: Outcome) {
        let now = Instant::now();
        let mut transition = None;
        {
            let mut state = self.lock();
            // Let through in an earlier phase: that phase's verdict is already in.
            if state.generation != generation {
                return;
            }
            match (state.phase, trial, outcome) {
                (Phase::Closed, false, Outcome::Abandoned) => {}
                (Phase::Closed, false, outcome) => {
                    state.window.record(now, outcome == Outcome::Success);
                    let (calls, failures) = state.window.totals(now);
                    if self.should_trip(calls, failures) {
                        transition = Some(self.open(&mut state, now));
                    }
                }
                (Phase::HalfOpen { .. }, true, Outcome::Success) => {
                    transition = Some(self.enter(&mut state, Phase::Closed, now));
                }
                (Phase::HalfOpen { .. }, true, Outcome::Failure) => {
                    transition = Some(self.open(&mut state, now));
                }
                (Phase::HalfOpen { .. }, true, Outcome::Abandoned) => {
                    state.phase = Phase::HalfOpen {
                        trial_running: false,
                    };
                }
                // Generations make other combinations impossible.
                _ => {}
            }
        }
        self.notify(transition);
    }

    fn notify(&self, transition: Option<Transition>) {
        if let (Some(listener), Some(t)) = (&self.listener, transition) {
            listener(&self.name, t);
        }
    }

    fn should_trip(&self, calls: u64, failures: u64) -> bool {
        calls >= self.config.min_calls as u64
            && failures > 0
            && failures as f64 * 100.0 >= self.config.threshold_percent * calls as f64
    }
}

/// Leave to make one call through a [`CircuitBreaker`]; report how it went.
#[derive(Debug)]
#[must_use = "report the call's outcome with success() or failure()"]
pub struct BreakerPermit {
    inner: Arc<Inner>,
    generation: u64,
    trial: bool,
    settled: bool,
}

impl BreakerPermit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.settle(Outcome::Success);
    }

    /// The call failed or timed out.
    pub fn failure(mut self) {
        self.settle(Outcome::Failure);
    }

    /// This is the half-open breaker's single trial call.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    fn settle(&mut self, outcome: Outcome) {
        self.settled = true;
        self.inner.settle(self.generation, self.trial, outcome);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Outcome::Abandoned);
        }
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").field("name", &self.name).finish()
    }
}

/// Configures a [`CircuitBreaker`]; [`build`](Self::build) checks the values. Clone
/// it to build one breaker per server from the same settings.
#[derive(Clone)]
pub struct CircuitBreakerBuilder {
    name: SharedString,
    config: Config,
    listener: Option<Listener>,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        CircuitBreakerBuilder {
            name: SharedString::from("breaker"),
            config: Config {
                call_timeout: DEFAULT_CALL_TIMEOUT,
                threshold_percent: DEFAULT_THRESHOLD_PERCENT,
                reset_timeout: DEFAULT_RESET_TIMEOUT,
                window: DEFAULT_WINDOW,
                buckets: DEFAULT_BUCKETS,
                min_calls: DEFAULT_MIN_CALLS,
            },
            listener: None,
        }
    }
}

impl CircuitBreakerBuilder {
    /// The `name` label of its metrics and logs (default `"breaker"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = SharedString::from(name.into());
        self
    }

    /// Calls through [`CircuitBreaker::call`] running longer than this are dropped
    /// and count as failures (default 3 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// The breaker opens when at least this share of the calls in the window failed,
    /// in percent, 0..=100 (default 50). At 0 any failure opens it.
    pub fn threshold_percent(mut self, percent: f64) -> Self {
        self.config.threshold_percent = percent;
        self
    }

    /// How long the breaker stays open before a trial call (default 5 s).
    pub fn reset_timeout(mut self, timeout: Duration) -> Self {
        self.config.reset_timeout = timeout;
        self
    }

    /// How far back the error rate looks (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// How many buckets the window is cut into (default 10, at most 1000); outcomes
    /// leave the window one bucket at a time.
    pub fn buckets(mut self, buckets: usize) -> Self {
        self.config.buckets = buckets;
        self
    }

    /// Below this many calls in the window the breaker never opens (default 10).
    pub fn min_calls(mut self, min_calls: usize) -> Self {
        self.config.min_calls = min_calls;
        self
    }

    /// Called with the breaker's name after each change of state, outside the
    /// breaker's lock (so it may call the breaker).
    pub fn on_transition(
        mut self,
        listener: impl Fn(&str, Transition) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Checks the values and returns the breaker, closed.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let c = &self.config;
        let zero = |what| Err(ConfigError::Zero { what });
        if c.call_timeout.is_zero() {
            return zero("call_timeout");
        }
        if !(0.0..=100.0).contains(&c.threshold_percent) {
            return Err(ConfigError::Threshold {
                percent: c.threshold_percent,
            });
        }
        if c.reset_timeout.is_zero() {
            return zero("reset_timeout");
        }
        if c.window.is_zero() {
            return zero("window");
        }
        if c.buckets == 0 {
            return zero("buckets");
        }
        if c.min_calls == 0 {
            return zero("min_calls");
        }
        let max_buckets =
            MAX_BUCKETS.min(usize::try_from(c.window.as_nanos()).unwrap_or(usize::MAX));
        if c.buckets > max_buckets {
            return Err(ConfigError::TooLarge {
                what: "buckets",
                value: c.buckets,
                max: max_buckets,
            });
        }
        Ok(self.assemble())
    }

    // Only for checked (or default) settings.
    fn assemble(self) -> CircuitBreaker {
        let now = Instant::now();
        metrics::gauge!(BREAKER_STATE, "name" => self.name.clone())
            .set(BreakerState::Closed.gauge_value());
        CircuitBreaker {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    phase: Phase::Closed,
                    generation: 0,
                    window: Window::new(now, self.config.window, self.config.buckets),
                }),
                name: self.name,
                config: self.config,
                listener: self.listener,
            }),
        }
    }
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

/// Outcome counts over a rolling window, in buckets of equal width. Bucket `i` holds
/// the bucket-epoch it was last written in; a stale epoch means "empty".
struct Window {
    origin: Instant,
    width_nanos: u128,
    buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    successes: u64,
    failures: u64,
}

impl Window {
    fn new(origin: Instant, window: Duration, buckets: usize) -> Self {
        Window {
            origin,
            // At least 1: `build` keeps `buckets` at or below the window in nanoseconds.
            width_nanos: (window.as_nanos() / buckets.max(1) as u128).max(1),
            buckets: vec![Bucket::default(); buckets.max(1)],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, success: bool) {
        let epoch = self.epoch(now);
        let slot = (epoch % self.buckets.len() as u64) as usize;
        if let Some(bucket) = self.buckets.get_mut(slot) {
            if bucket.epoch != epoch {
                *bucket = Bucket {
                    epoch,
                    ..Bucket::default()
                };
            }
            if success {
                bucket.successes += 1;
            } else {
                bucket.failures += 1;
            }
        }
    }

    /// (calls, failures) in the buckets that are still inside the window.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        let span = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < span)
            .fold((0, 0), |(calls, failures), b| {
                (calls + b.successes + b.failures, failures + b.failures)
            })
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
    }
}
