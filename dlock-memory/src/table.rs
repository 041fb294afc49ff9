//! The lock table: key → holder and FIFO queue of waiters.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use dlock_core::{FenceToken, LockKey, OwnerId};
use tokio::{sync::Notify, time::Instant};

/// Sweep for expired entries after this many insertions since the last sweep,
/// or when the table doubled: keeps reclaiming amortised O(1).
const SWEEP_EVERY: usize = 1024;

pub(crate) struct Holder {
    pub(crate) owner: OwnerId,
    pub(crate) fence: FenceToken,
    pub(crate) expires: Instant,
}

struct Waiter {
    owner: OwnerId,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Entry {
    holder: Option<Holder>,
    /// Waiters in arrival order; only the head may take a free key, so a releaser
    /// that loops cannot barge ahead of tasks already waiting.
    waiters: VecDeque<Waiter>,
}

impl Entry {
    fn live_holder(&mut self, now: Instant) -> Option<&mut Holder> {
        if self.holder.as_ref().is_some_and(|h| h.expires <= now) {
            self.holder = None;
        }
        self.holder.as_mut()
    }

    fn is_idle(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    fn wake_head(&self) {
        if let Some(head) = self.waiters.front() {
            // notify_one stores a permit, so a head not yet awaiting still wakes.
            head.wake.notify_one();
        }
    }

    /// Removes `owner` from the queue; if it was the head of a free key, the next
    /// head is woken. Returns whether it was queued.
    fn leave_queue(&mut self, owner: &OwnerId) -> bool {
        let Some(at) = self.waiters.iter().position(|w| w.owner == *owner) else {
            return false;
        };
        self.waiters.remove(at);
        if at == 0 && self.holder.is_none() {
            self.wake_head();
        }
        true
    }
}

pub(crate) enum Outcome {
    Granted(FenceToken),
    Busy {
        wake: Option<Arc<Notify>>,
        retry_after: Option<Duration>,
    },
}

#[derive(Default)]
pub(crate) struct Table {
    entries: HashMap<LockKey, Entry>,
    next_fence: u64,
    inserted_since_sweep: usize,
    len_after_sweep: usize,
}

impl Table {
    pub(crate) fn attempt(
        &mut self,
        key: &LockKey,
        owner: &OwnerId,
        ttl: Duration,
        queue: bool,
        now: Instant,
    ) -> Outcome {
        if !self.entries.contains_key(key.as_str()) {
            self.note_insert(now);
        }
        let expires = now + ttl;
        let entry = self.entries.entry(key.clone()).or_default();
        match entry.live_holder(now) {
            // A retry of an attempt that already succeeded (its answer was lost).
            Some(holder) if holder.owner == *owner => {
                holder.expires = expires;
                return Outcome::Granted(holder.fence);
            }
            Some(holder) => {
                let retry_after = Some(holder.expires - now);
                return Outcome::Busy {
                    wake: queue.then(|| enqueue(&mut entry.waiters, owner)),
                    retry_after,
                };
            }
            None => {}
        }
        let our_turn = match entry.waiters.front() {
            None => true,
            Some(head) if head.owner == *owner => {
                entry.waiters.pop_front();
                true
            }
            Some(_) => false,
        };
        if !our_turn {
            // Free, but reserved for the head of the queue.
            let wake = queue.then(|| enqueue(&mut entry.waiters, owner));
            if !queue && entry.is_idle() {
                self.entries.remove(key.as_str());
            }
            return Outcome::Busy {
                wake,
                retry_after: None,
            };
        }
        self.next_fence += 1;
        let fence = FenceToken(self.next_fence);
        entry.holder = Some(Holder {
            owner: *owner,
            fence,
            expires,
        });
        Outcome::Granted(fence)
    }

    /// `Some(true)`: extended; `Some(false)`: not held by `owner`.
    pub(crate) fn extend(
        &mut self,
        key: &str,
        owner: &OwnerId,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        match entry.live_holder(now) {
            Some(holder) if holder.owner == *owner => {
                holder.expires = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// Whether `owner` held the key; removes it from the queue either way.
    pub(crate) fn release(&mut self, key: &str, owner: &OwnerId, now: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let held = matches!(entry.live_holder(now), Some(h) if h.owner == *owner);
        if held {
            entry.holder = None;
            entry.wake_head();
        } else {
            entry.leave_queue(owner);
        }
        if entry.is_idle() {
            self.entries.remove(key);
            self.shrink_if_sparse();
        }
        held
    }

    /// Drops `key`'s holder whoever it is, as an operator would; waiters are woken.
    pub(crate) fn force_release(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let had = entry.holder.take().is_some();
        entry.wake_head();
        if entry.is_idle() {
            self.entries.remove(key);
        }
        had
    }

    pub(crate) fn next_fence(&mut self) -> FenceToken {
        self.next_fence += 1;
        FenceToken(self.next_fence)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes expired entries without waiters; returns how many remain.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        self.entries.retain(|_, e| {
            e.live_holder(now);
            !e.is_idle()
        });
        self.inserted_since_sweep = 0;
        self.len_after_sweep = self.entries.len();
        self.shrink_if_sparse();
        self.entries.len()
    }

    fn note_insert(&mut self, now: Instant) {
        self.inserted_since_sweep += 1;
        if self.inserted_since_sweep >= SWEEP_EVERY.max(self.len_after_sweep) {
            self.sweep(now);
        }
    }

    /// A HashMap keeps its capacity after removals; give memory back once it is
    /// mostly empty, so a burst of keys leaves no growth behind.
    fn shrink_if_sparse(&mut self) {
        let cap = self.entries.capacity();
        if cap > 64 && self.entries.len() * 4 < cap {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }
}

fn enqueue(waiters: &mut VecDeque<Waiter>, owner: &OwnerId) -> Arc<Notify> {
    if let Some(w) = waiters.iter().find(|w| w.owner == *owner) {
        return Arc::clone(&w.wake);
    }
    let wake = Arc::new(Notify::new());
    waiters.push_back(Waiter {
        owner: *owner,
        wake: Arc::clone(&wake),
    });
    wake
}
