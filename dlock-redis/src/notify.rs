//! Release notifications, sent only to the clients waiting on the key.
//!
//! A client subscribes to a key's release channel while one of its waiters waits on
//! that key (and a moment longer, so a waiter's next attempt finds it subscribed),
//! and the release script publishes only when the channel has a subscriber: a
//! release costs the same with one connected client or hundreds, and sends nothing
//! when nobody waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use dlock_core::{LockKey, OwnerId, WakeSignal};
use redis::{PushInfo, PushKind, Value, aio::ConnectionManager};
use tokio::sync::{Notify, mpsc, watch};

use crate::keys::{KeyLayout, escape};

/// How long a key's subscription outlives its last waiter: a waiter's next attempt,
/// or the next waiter of a busy key, finds it still there.
const LINGER: Duration = Duration::from_secs(2);

/// Waiters by escaped key, and the commands for the task that owns the subscriber
/// connection.
pub(crate) struct ReleaseNotifier {
    layout: KeyLayout,
    waiting: Mutex<HashMap<String, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
}

struct Entry {
    /// Woken by every notice: listeners for any release (Redlock's waiters).
    notify: Arc<Notify>,
    /// Woken by the notices that name them (a release handing the key to this
    /// waiter), and by the ones that name nobody: listeners in the key's line, by
    /// owner id (hex).
    targeted: HashMap<String, Weak<Notify>>,
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
    pub(crate) fn new(layout: KeyLayout) -> (Arc<Self>, Subscriptions) {
        let (commands, queue) = mpsc::unbounded_channel();
        let notifier = Arc::new(ReleaseNotifier {
            layout,
            waiting: Mutex::default(),
            commands,
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
    pub(crate) fn armed(
        self: &Arc<Self>,
        key: &LockKey,
        owner: Option<&OwnerId>,
    ) -> Option<WakeSignal> {
        let escaped = escape(key.as_str());
        {
            let waiting = self.waiting();
            let entry = waiting.get(&escaped)?;
            if !*entry.ready.borrow() {
                return None;
            }
        }
        Some(self.listen_escaped(escaped, owner))
    }

    /// A signal that fires at the next release of `key` published after this call;
    /// with an `owner`, only at a release that hands the key to that waiter (or
    /// names nobody). Where this client was not subscribed to the key yet, it
    /// subscribes, and the signal fires once the server confirmed it, so the caller
    /// tries again: a release between its attempt and the subscription is not missed.
    pub(crate) fn listen(self: &Arc<Self>, key: &LockKey, owner: Option<&OwnerId>) -> WakeSignal {
        self.listen_escaped(escape(key.as_str()), owner)
    }

    fn listen_escaped(self: &Arc<Self>, escaped: String, owner: Option<&OwnerId>) -> WakeSignal {
        let (notify, mut ready, new) = {
            let mut waiting = self.waiting();
            let new = !waiting.contains_key(&escaped);
            let entry = waiting.entry(escaped.clone()).or_insert_with(|| Entry {
                notify: Arc::new(Notify::new()),
                targeted: HashMap::new(),
                listeners: 0,
                generation: 0,
                ready: watch::Sender::new(false),
            });
            entry.listeners += 1;
            entry.generation += 1;
            let notify = match owner {
                None => Arc::clone(&entry.notify),
                Some(owner) => {
                    let hex = owner.to_hex();
                    match entry.targeted.get(&hex).and_then(Weak::upgrade) {
                        Some(notify) => notify,
                        None => {
                            let notify = Arc::new(Notify::new());
                            entry.targeted.insert(hex, Arc::downgrade(&notify));
                            notify
                        }
                    }
                }
            };
            (notify, entry.ready.subscribe(), new)
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

    /// Wakes this client's waiter `owner` (hex) on `key`, if it has one: a release
    /// by this client handed the key to it.
    pub(crate) fn wake_owner(&self, key: &LockKey, owner: &str) {
        let escaped = escape(key.as_str());
        let notify = self
            .waiting()
            .get(&escaped)
            .and_then(|entry| entry.targeted.get(owner))
            .and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
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
        // MESSAGE data: channel, payload (the waiter the key was handed to, or
        // nothing).
        let Some(escaped) = self.escaped_key(data) else {
            return;
        };
        let payload = match data.get(1) {
            Some(Value::BulkString(payload)) => payload.as_slice(),
            _ => &[],
        };
        let waiting = self.waiting();
        let Some(entry) = waiting.get(escaped) else {
            return;
        };
        entry.notify.notify_waiters();
        if payload.is_empty() {
            entry.wake_all();
        } else if let Some(notify) = std::str::from_utf8(payload)
            .ok()
            .and_then(|owner| entry.targeted.get(owner))
            .and_then(Weak::upgrade)
        {
            notify.notify_waiters();
        }
    }

    /// A subscription the server confirmed, first or again after a reconnect.
    fn on_subscribed(&self, data: &[Value]) {
        if let Some(escaped) = self.escaped_key(data)
            && let Some(entry) = self.waiting().get(escaped)
        {
            entry.ready.send_replace(true);
            // Whatever was released while the connection was down is seen now.
            entry.notify.notify_waiters();
            entry.wake_all();
        }
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

impl Entry {
    fn wake_all(&self) {
        for notify in self.targeted.values().filter_map(Weak::upgrade) {
            notify.notify_waiters();
        }
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
            entry.targeted.retain(|_, notify| notify.strong_count() > 0);
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
        while let Some(command) = self.queue.recv().await {
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
