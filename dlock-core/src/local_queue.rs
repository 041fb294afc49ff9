//! `LocalQueue`: the waiters of one client, in arrival order, per key.
//!
//! For backends whose server has no queue (Redis, Redlock): only the head of a key's
//! local queue contends at the server; the tasks behind it wait here and are woken
//! in order. Tasks of one client then take a contended key in turn instead of
//! racing (and polling) the server, and a releaser that loops cannot barge ahead of
//! them.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

use crate::{LockKey, OwnerId, WakeSignal};

/// Per-key FIFO queues of one client's waiters. See the [module docs](self).
#[derive(Default)]
pub struct LocalQueue {
    keys: Mutex<HashMap<LockKey, VecDeque<Waiter>>>,
}

struct Waiter {
    owner: OwnerId,
    wake: Arc<Notify>,
}

/// Where a waiter stands in its key's queue.
pub enum Turn {
    /// First in line: contend at the server. The signal fires when this client
    /// releases the key ([`LocalQueue::wake_head`]), sooner than any notice from the
    /// server; wait on it beside the server's own.
    Head(WakeSignal),
    /// Behind others: wait for this, then ask again.
    Behind(WakeSignal),
}

impl LocalQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `owner` in `key`'s queue (once) and says whether it is the head.
    pub fn join(&self, key: &LockKey, owner: &OwnerId) -> Turn {
        let mut keys = self.keys();
        let queue = keys.entry(key.clone()).or_default();
        let wake = match queue.iter().find(|w| w.owner == *owner) {
            Some(w) => Arc::clone(&w.wake),
            None => {
                let wake = Arc::new(Notify::new());
                queue.push_back(Waiter {
                    owner: *owner,
                    wake: Arc::clone(&wake),
                });
                wake
            }
        };
        let head = queue.front().is_some_and(|w| w.owner == *owner);
        // notify_one stores a permit, so a wake between now and the await is kept.
        let signal: WakeSignal = Box::pin(async move { wake.notified().await });
        if head {
            Turn::Head(signal)
        } else {
            Turn::Behind(signal)
        }
    }

    /// Takes `owner` out of `key`'s queue (it was granted the lock, or gave up). If
    /// it was the head, the next waiter becomes head and is woken, so it learns the
    /// server's state (and the new holder's expiry) at once.
    pub fn leave(&self, key: &LockKey, owner: &OwnerId) {
        let mut keys = self.keys();
        let Some(queue) = keys.get_mut(key.as_str()) else {
            return;
        };
        let Some(at) = queue.iter().position(|w| w.owner == *owner) else {
            return;
        };
        queue.remove(at);
        if queue.is_empty() {
            keys.remove(key.as_str());
        } else if at == 0 {
            wake(queue);
        }
    }

    /// Wakes `key`'s head: the lock was just released by this client.
    pub fn wake_head(&self, key: &LockKey) {
        if let Some(queue) = self.keys().get(key.as_str()) {
            wake(queue);
        }
    }

    /// How many keys have local waiters.
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// No key has local waiters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<LockKey, VecDeque<Waiter>>> {
        // Every method completes its change before it could panic: the data stays sound.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn wake(queue: &VecDeque<Waiter>) {
    if let Some(head) = queue.front() {
        head.wake.notify_one();
    }
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue")
            .field("keys", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn waiters_take_turns_in_arrival_order() {
        let queue = LocalQueue::new();
        let key = LockKey::new("k").expect("valid");
        let [a, b, c] = [1, 2, 3].map(OwnerId::from_counter);
        assert!(matches!(queue.join(&key, &a), Turn::Head(_)));
        let Turn::Behind(mut b_wake) = queue.join(&key, &b) else {
            panic!("b jumped the queue")
        };
        let Turn::Behind(mut c_wake) = queue.join(&key, &c) else {
            panic!("c jumped the queue")
        };
        assert!(
            matches!(queue.join(&key, &a), Turn::Head(_)),
            "joining again keeps the place"
        );
        assert!((&mut b_wake).now_or_never().is_none());
        queue.leave(&key, &a);
        assert!(
            (&mut b_wake).now_or_never().is_some(),
            "the new head was not woken"
        );
        assert!(
            (&mut c_wake).now_or_never().is_none(),
            "c was woken out of turn"
        );
        let Turn::Head(mut b_local) = queue.join(&key, &b) else {
            panic!("b is not head")
        };
        // The holder's release in this client wakes the head at once.
        assert!((&mut b_local).now_or_never().is_none());
        queue.wake_head(&key);
        assert!(
            (&mut b_local).now_or_never().is_some(),
            "wake_head did not reach the head"
        );
        // A waiter behind the head leaving wakes nobody.
        queue.leave(&key, &c);
        queue.leave(&key, &b);
        assert!(queue.is_empty(), "an empty queue left an entry behind");
    }
}
