//! Release notices, sent only to the clients that wait.
//!
//! A waiter in a key's line (dlock-redis's) is woken through its client's own
//! channel, which the client subscribes to once, at connect: a release that hands
//! the key to a waiter publishes one message, to that waiter's client, naming it.
//! A listener for any release (a Redlock waiter, which does not queue) subscribes to
//! the key's release channel while it waits (and a moment longer, so its next
//! attempt finds it subscribed), and a release with nobody in line publishes there
//! only if someone listens. A release costs the same with one connected client or
//! hundreds, and sends nothing when nobody waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use dlock_core::{LockKey, OwnerId, WakeSignal};
use redis::{PushInfo, PushKind, Value, aio::ConnectionManager};
use tokio::sync::{Notify, mpsc, watch};

use crate::keys::{KeyLayout, escape};

/// How long the notice connection sits idle before a PING checks it.
const PROBE_IDLE: Duration = Duration::from_secs(3);

/// How long a key's subscription outlives its last waiter: a waiter's next attempt,
/// or the next waiter of a busy key, finds it still there.
const LINGER: Duration = Duration::from_secs(2);

/// Waiters by escaped key, and the commands for the task that owns the subscriber
/// connection.
pub(crate) struct ReleaseNotifier {
    layout: KeyLayout,
    waiting: Mutex<HashMap<String, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    /// This client's own channel, where a release names the waiter it handed a
    /// key to.
    client_channel: String,
    /// This client's waiters in line, and notices that came before their waiter
    /// listened.
    turns: Mutex<Turns>,
}

/// Waiters in line by owner id (hex), and the owners named by notices that found
/// no waiter listening yet: a waiter listens only once its attempt found the key
/// busy, and the notice handing it the key may come before that.
#[derive(Default)]
struct Turns {
    waiting: HashMap<String, Weak<Notify>>,
    /// Oldest first, with when each came: kept no longer than a place lasts.
    early: std::collections::VecDeque<(String, std::time::Instant)>,
}

/// How many early notices are kept: more than the waiters one client has in the
/// moment between an attempt's answer and its listening.
const EARLY_NOTICES: usize = 256;

struct Entry {
    notify: Arc<Notify>,
    /// Listeners alive now.
    listeners: usize,
    /// Bumped by every new listener: an unsubscribe planned before it is void.
    generation: u64,
    /// `true` once the server confirmed the subscription.
    ready: watch::Sender<bool>,
}

enum Command {
    Subscribe(String),
    /// Unsubscribe from the key if nobody listened since `generation`.
    Unsubscribe(String, u64),
}

impl ReleaseNotifier {
    /// A notifier whose subscriptions go through `subscriber` (once it is handed
    /// over with [`run`]).
    pub(crate) fn new(layout: KeyLayout, client_channel: String) -> (Arc<Self>, Subscriptions) {
        let (commands, queue) = mpsc::unbounded_channel();
        let notifier = Arc::new(ReleaseNotifier {
            layout,
            waiting: Mutex::default(),
            commands,
            client_channel,
            turns: Mutex::default(),
        });
        let subscriptions = Subscriptions {
            notifier: Arc::downgrade(&notifier),
            queue,
        };
        (notifier, subscriptions)
    }

    /// A signal that fires at the next release of `key` published after this call,
    /// if this client is subscribed to the key already (a waiter of it waits, or did
    /// a moment ago); `None` otherwise, at the cost of one lookup. Arm it before an
    /// attempt, and [`listen`](Self::listen) after one that found the key busy.
    pub(crate) fn armed(self: &Arc<Self>, key: &LockKey) -> Option<WakeSignal> {
        let escaped = escape(key.as_str());
        {
            let waiting = self.waiting();
            let entry = waiting.get(&escaped)?;
            if !*entry.ready.borrow() {
                return None;
            }
        }
        Some(self.listen_escaped(escaped))
    }

    /// A signal that fires at the next release of `key` published after this call.
    /// Where this client was not subscribed to the key yet, it subscribes, and the
    /// signal fires once the server confirmed it, so the caller tries again: a
    /// release between its attempt and the subscription is not missed.
    pub(crate) fn listen(self: &Arc<Self>, key: &LockKey) -> WakeSignal {
        self.listen_escaped(escape(key.as_str()))
    }

    fn listen_escaped(self: &Arc<Self>, escaped: String) -> WakeSignal {
        let (notify, mut ready, new) = {
            let mut waiting = self.waiting();
            let new = !waiting.contains_key(&escaped);
            let entry = waiting.entry(escaped.clone()).or_insert_with(|| Entry {
                notify: Arc::new(Notify::new()),
                listeners: 0,
                generation: 0,
                ready: watch::Sender::new(false),
            });
            entry.listeners += 1;
            entry.generation += 1;
            (Arc::clone(&entry.notify), entry.ready.subscribe(), new)
        };
        if new {
            let _ = self.commands.send(Command::Subscribe(escaped.clone()));
        }
        let mut notified = Box::pin(notify.notified_owned());
        notified.as_mut().enable();
        let subscribed = *ready.borrow_and_update();
        let guard = Listening {
            notifier: Arc::clone(self),
            escaped,
        };
        Box::pin(async move {
            if subscribed {
                notified.await;
            } else if ready.wait_for(|ready| *ready).await.is_err() {
                // The notifier is gone: no wake-up will come; the caller's own
                // timer (the holder's TTL, its backoff) decides.
                std::future::pending::<()>().await;
            }
            drop(guard);
        })
    }

    /// A signal that fires when a release hands a key to `owner`, this client's
    /// waiter in the key's line, or when the client's channel was subscribed again
    /// after a reconnect (a notice may have been missed). Take it once the attempt
    /// found the key busy: a notice that came before fires it at once.
    pub(crate) fn turn(self: &Arc<Self>, owner: &OwnerId) -> WakeSignal {
        let hex = owner.to_hex();
        let notify = Arc::new(Notify::new());
        let mut notified = Box::pin(Arc::clone(&notify).notified_owned());
        notified.as_mut().enable();
        {
            let mut turns = self.turns();
            if let Some(at) = turns.early.iter().position(|(early, _)| *early == hex) {
                turns.early.remove(at);
                return Box::pin(std::future::ready(()));
            }
            turns.waiting.insert(hex.clone(), Arc::downgrade(&notify));
        }
        let guard = Turn {
            notifier: Arc::clone(self),
            hex,
            _notify: notify,
        };
        Box::pin(async move {
            notified.await;
            drop(guard);
        })
    }

    /// Wakes this client's waiter `owner` (hex), or keeps the notice for it if it
    /// does not listen yet.
    pub(crate) fn wake_owner(&self, owner: &str) {
        let mut turns = self.turns();
        match turns.waiting.get(owner).and_then(Weak::upgrade) {
            Some(notify) => notify.notify_waiters(),
            None => {
                let now = std::time::Instant::now();
                while turns
                    .early
                    .front()
                    .is_some_and(|(_, at)| now.duration_since(*at) > crate::PLACE_TTL)
                    || turns.early.len() >= EARLY_NOTICES
                {
                    turns.early.pop_front();
                }
                turns.early.push_back((owner.to_owned(), now));
            }
        }
    }

    /// The subscriber connection's push handler; runs on redis-rs's connection task.
    pub(crate) fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message => self.on_message(&push.data),
            PushKind::Subscribe => self.on_subscribed(&push.data),
            _ => {}
        }
    }

    fn on_message(&self, data: &[Value]) {
        // MESSAGE data: channel, payload.
        if self.is_client_channel(data) {
            if let Some(Value::BulkString(owner)) = data.get(1)
                && let Ok(owner) = std::str::from_utf8(owner)
            {
                self.wake_owner(owner);
            }
            return;
        }
        let Some(escaped) = self.escaped_key(data) else {
            return;
        };
        let notify = self.waiting().get(escaped).map(|e| Arc::clone(&e.notify));
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// A subscription the server confirmed, first or again after a reconnect.
    fn on_subscribed(&self, data: &[Value]) {
        if self.is_client_channel(data) {
            // Again after a reconnect: a hand-over may have been missed meanwhile.
            let turns: Vec<_> = self
                .turns()
                .waiting
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            for notify in turns {
                notify.notify_waiters();
            }
            return;
        }
        if let Some(escaped) = self.escaped_key(data)
            && let Some(entry) = self.waiting().get(escaped)
        {
            entry.ready.send_replace(true);
            // Whatever was released while the connection was down is seen now.
            entry.notify.notify_waiters();
        }
    }

    fn is_client_channel(&self, data: &[Value]) -> bool {
        matches!(data.first(), Some(Value::BulkString(channel)) if channel.as_slice() == self.client_channel.as_bytes())
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn escaped_key<'a>(&self, data: &'a [Value]) -> Option<&'a str> {
        let Some(Value::BulkString(channel)) = data.first() else {
            return None;
        };
        let channel = std::str::from_utf8(channel).ok()?;
        self.layout.escaped_key_of_channel(channel)
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A waiter's turn signal alive: its owner stays registered.
struct Turn {
    notifier: Arc<ReleaseNotifier>,
    hex: String,
    _notify: Arc<Notify>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.notifier.turns().waiting.remove(&self.hex);
    }
}

/// A listener alive: its key stays subscribed.
struct Listening {
    notifier: Arc<ReleaseNotifier>,
    escaped: String,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let generation = {
            let mut waiting = self.notifier.waiting();
            let Some(entry) = waiting.get_mut(&self.escaped) else {
                return;
            };
            entry.listeners -= 1;
            if entry.listeners > 0 {
                return;
            }
            entry.generation
        };
        let (commands, escaped) = (self.notifier.commands.clone(), self.escaped.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    let _ = commands.send(Command::Unsubscribe(escaped, generation));
                });
            }
            Err(_) => {
                let _ = commands.send(Command::Unsubscribe(escaped, generation));
            }
        }
    }
}

/// The task that owns the subscriber connection and subscribes and unsubscribes in
/// the order the decisions were made, so an unsubscribe can never overtake the
/// subscribe of a waiter that came after it.
pub(crate) struct Subscriptions {
    notifier: Weak<ReleaseNotifier>,
    queue: mpsc::UnboundedReceiver<Command>,
}

impl Subscriptions {
    /// Runs until the notifier is dropped (with its lock).
    pub(crate) async fn run(mut self, mut subscriber: ConnectionManager) {
        loop {
            let command = tokio::select! {
                command = self.queue.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                // Idle for a while: a PING. The connection reconnects by itself only
                // a few times; after a longer outage it would stay down, and every
                // notice with it (waiters falling back to their timers). A failed
                // request makes it try again, and it resubscribes once back.
                () = tokio::time::sleep(PROBE_IDLE) => {
                    if self.notifier.strong_count() == 0 {
                        return;
                    }
                    let pong: redis::RedisResult<Value> =
                        redis::cmd("PING").query_async(&mut subscriber).await;
                    if let Err(error) = pong {
                        tracing::debug!(target: "dlock::backend", %error, "the release-notice connection is down; reconnecting");
                    }
                    continue;
                }
            };
            let Some(notifier) = self.notifier.upgrade() else {
                return;
            };
            match command {
                Command::Subscribe(escaped) => {
                    let channel = notifier.layout.released_channel_of_escaped(&escaped);
                    drop(notifier);
                    match subscriber.subscribe(&channel).await {
                        Ok(()) => {
                            if let Some(notifier) = self.notifier.upgrade()
                                && let Some(entry) = notifier.waiting().get(&escaped)
                            {
                                entry.ready.send_replace(true);
                            }
                        }
                        // The waiters fall back to their timers; the entry's next
                        // listener after it lapses subscribes again.
                        Err(error) => {
                            tracing::debug!(target: "dlock::backend", %error, "cannot subscribe to releases");
                        }
                    }
                }
                Command::Unsubscribe(escaped, generation) => {
                    let idle = {
                        let mut waiting = notifier.waiting();
                        let idle = waiting
                            .get(&escaped)
                            .is_some_and(|e| e.listeners == 0 && e.generation == generation);
                        if idle {
                            waiting.remove(&escaped);
                        }
                        idle
                    };
                    if idle {
                        let channel = notifier.layout.released_channel_of_escaped(&escaped);
                        drop(notifier);
                        let _ = subscriber.unsubscribe(&channel).await;
                    }
                }
            }
        }
    }
}
