//! Release notifications: one pattern subscription per client, fanned out to the
//! keys this client is waiting on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use dlock_core::{LockKey, WakeSignal};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use crate::keys::{KeyLayout, escape};

/// Waiters by escaped key. Entries are weak: a key nobody waits on costs nothing.
pub(crate) struct ReleaseNotifier {
    layout: KeyLayout,
    waiting: Mutex<HashMap<String, Weak<Notify>>>,
}

impl ReleaseNotifier {
    pub(crate) fn new(layout: KeyLayout) -> Self {
        ReleaseNotifier {
            layout,
            waiting: Mutex::default(),
        }
    }

    /// A signal that fires at the next release of `key` published after this call:
    /// it is armed before it is returned, so call it before sending the attempt.
    pub(crate) fn listen(self: &Arc<Self>, key: &LockKey) -> WakeSignal {
        let escaped = escape(key.as_str());
        let notify = {
            let mut waiting = self.waiting();
            match waiting.get(&escaped).and_then(Weak::upgrade) {
                Some(notify) => notify,
                None => {
                    let notify = Arc::new(Notify::new());
                    waiting.insert(escaped.clone(), Arc::downgrade(&notify));
                    notify
                }
            }
        };
        let mut notified = Box::pin(Arc::clone(&notify).notified_owned());
        notified.as_mut().enable();
        let guard = Listening {
            notifier: Arc::clone(self),
            escaped,
            notify,
        };
        Box::pin(async move {
            notified.await;
            drop(guard);
        })
    }

    /// The subscriber connection's push handler; runs on redis-rs's connection task.
    pub(crate) fn on_push(&self, push: PushInfo) {
        if push.kind != PushKind::PMessage {
            return;
        }
        // PMESSAGE data: pattern, channel, payload.
        let Some(Value::BulkString(channel)) = push.data.get(1) else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        let Some(escaped) = self.layout.escaped_key_of_channel(channel) else {
            return;
        };
        let notify = self.waiting().get(escaped).and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Weak<Notify>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a key's entry when its last listener goes away.
struct Listening {
    notifier: Arc<ReleaseNotifier>,
    escaped: String,
    notify: Arc<Notify>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut waiting = self.notifier.waiting();
        // Ours is the last strong reference: nobody else listens to this key.
        if Arc::strong_count(&self.notify) == 1 {
            waiting.remove(&self.escaped);
        }
    }
}
