//! The lock table: key → holder and FIFO queue of waiters.

use std::{collections::VecDeque, num::NonZeroU64, sync::Arc, time::Duration};

use dlock_core::BootInstant;
use dlock_core::{FenceToken, LockKey, LossReason, OwnerId};
use hashbrown::{HashMap, hash_map::EntryRef};
use tokio::sync::Notify;

/// Sweep for expired entries after this many insertions since the last sweep,
/// or when the table doubled: keeps reclaiming amortised O(1).
const SWEEP_EVERY: usize = 1024;

pub(crate) struct Holder {
    pub(crate) owner: OwnerId,
    /// Never zero (the counter starts at one), which gives `Option<Holder>` a niche:
    /// 8 bytes less in every entry, and in every spare slot of the table.
    fence: NonZeroU64,
    pub(crate) expires: BootInstant,
}

impl Holder {
    pub(crate) fn fence(&self) -> FenceToken {
        FenceToken(self.fence.get())
    }
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
    waiters: Waiters,
}

/// An entry's queue, boxed: most keys never have a waiter, and a `VecDeque` kept
/// in every entry costs 24 bytes more than the box's pointer (times the table's
/// spare capacity). The box goes as the queue empties.
#[derive(Default)]
// The box is the point: one pointer in every entry instead of a `VecDeque`'s four
// words; the extra allocation happens only for keys that have waiters.
#[allow(clippy::box_collection)]
struct Waiters(Option<Box<VecDeque<Waiter>>>);

impl Waiters {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    fn front(&self) -> Option<&Waiter> {
        self.0.as_ref()?.front()
    }

    fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.0.iter().flat_map(|q| q.iter())
    }

    fn remove(&mut self, at: usize) {
        if let Some(q) = &mut self.0 {
            q.remove(at);
            if q.is_empty() {
                self.0 = None;
            }
        }
    }

    fn pop_front(&mut self) {
        self.remove(0);
    }

    fn push_back(&mut self, waiter: Waiter) {
        self.0.get_or_insert_with(Box::default).push_back(waiter);
    }
}

impl Entry {
    fn live_holder(&mut self, now: BootInstant) -> Option<&mut Holder> {
        if self.holder.as_ref().is_some_and(|h| h.expires <= now) {
            self.holder = None;
        }
        self.holder.as_mut()
    }

    fn is_idle(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    /// Wakes the head of the queue: on a release, and whenever a new waiter becomes
    /// head, so it learns the current holder's expiry instead of sleeping past it.
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
        if at == 0 {
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
    /// foldhash: several times faster than SipHash on short keys, with a random
    /// seed per table against crafted collisions.
    entries: HashMap<LockKey, Entry, foldhash::fast::RandomState>,
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
        now: BootInstant,
    ) -> Outcome {
        if self.inserted_since_sweep >= SWEEP_EVERY.max(self.len_after_sweep) {
            self.sweep(now);
        }
        let expires = now.saturating_add(ttl);
        // Looked up by reference: the key is cloned only into a new entry.
        let entry = match self.entries.entry_ref(key.as_str()) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(e) => {
                self.inserted_since_sweep += 1;
                e.insert_with_key(key.clone(), Entry::default())
            }
        };
        match entry.live_holder(now) {
            // A retry of an attempt that already succeeded (its answer was lost).
            Some(holder) if holder.owner == *owner => {
                holder.expires = expires;
                return Outcome::Granted(holder.fence());
            }
            Some(holder) => {
                let retry_after = Some(holder.expires.saturating_duration_since(now));
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
                entry.wake_head();
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
        let fence = NonZeroU64::new(self.next_fence).unwrap_or(NonZeroU64::MAX);
        entry.holder = Some(Holder {
            owner: *owner,
            fence,
            expires,
        });
        Outcome::Granted(FenceToken(fence.get()))
    }

    /// The live holder of `key`: its owner, token and time left.
    pub(crate) fn holder(
        &mut self,
        key: &str,
        now: BootInstant,
    ) -> Option<(OwnerId, FenceToken, Duration)> {
        let holder = self.entries.get_mut(key)?.live_holder(now)?;
        Some((
            holder.owner,
            holder.fence(),
            holder.expires.saturating_duration_since(now),
        ))
    }

    /// Extends `owner`'s hold, or says why it has none: another holder, or none.
    pub(crate) fn extend(
        &mut self,
        key: &str,
        owner: &OwnerId,
        ttl: Duration,
        now: BootInstant,
    ) -> Result<(), LossReason> {
        let Some(entry) = self.entries.get_mut(key) else {
            return Err(LossReason::Gone);
        };
        match entry.live_holder(now) {
            Some(holder) if holder.owner == *owner => {
                holder.expires = now.saturating_add(ttl);
                Ok(())
            }
            Some(_) => Err(LossReason::Taken),
            None => Err(LossReason::Gone),
        }
    }

    /// Whether `owner` held the key (expired or not: nobody else took it); removes it
    /// from the queue either way. Whether the lease was still valid is the caller's
    /// question, answered on its own clock.
    pub(crate) fn release(&mut self, key: &str, owner: &OwnerId) -> bool {
        // One lookup for both the change and the removal.
        let EntryRef::Occupied(mut slot) = self.entries.entry_ref(key) else {
            return false;
        };
        let entry = slot.get_mut();
        let held = matches!(&entry.holder, Some(h) if h.owner == *owner);
        if held {
            entry.holder = None;
            entry.wake_head();
        } else {
            entry.leave_queue(owner);
        }
        if entry.is_idle() {
            slot.remove();
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
    pub(crate) fn sweep(&mut self, now: BootInstant) -> usize {
        self.entries.retain(|_, e| {
            e.live_holder(now);
            !e.is_idle()
        });
        self.inserted_since_sweep = 0;
        self.len_after_sweep = self.entries.len();
        self.shrink_if_sparse();
        self.entries.len()
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

fn enqueue(waiters: &mut Waiters, owner: &OwnerId) -> Arc<Notify> {
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn owner(n: u64) -> OwnerId {
        OwnerId::from_counter(n)
    }

    fn woken(wake: &Arc<Notify>) -> bool {
        wake.notified().now_or_never().is_some()
    }

    #[tokio::test]
    async fn a_waiter_that_becomes_head_is_woken_to_learn_the_new_expiry() {
        let mut table = Table::default();
        let key = LockKey::new("k").expect("valid");
        let ttl = Duration::from_millis(100);
        let now = BootInstant::now();
        assert!(matches!(
            table.attempt(&key, &owner(0), ttl, true, now),
            Outcome::Granted(_)
        ));
        let Outcome::Busy { wake: Some(_), .. } = table.attempt(&key, &owner(1), ttl, true, now)
        else {
            panic!("second owner not queued");
        };
        let Outcome::Busy {
            wake: Some(third), ..
        } = table.attempt(&key, &owner(2), ttl, true, now)
        else {
            panic!("third owner not queued");
        };
        // The holder expires; the third waiter looks first and finds the key reserved.
        let later = now.saturating_add(ttl);
        let Outcome::Busy {
            retry_after: None, ..
        } = table.attempt(&key, &owner(2), ttl, true, later)
        else {
            panic!("the key was not reserved for the head");
        };
        assert!(!woken(&third));
        // The head takes it: the third waiter is now head and must be told.
        assert!(matches!(
            table.attempt(&key, &owner(1), ttl, true, later),
            Outcome::Granted(_)
        ));
        assert!(woken(&third), "the new head was left asleep");
        let Outcome::Busy { retry_after, .. } = table.attempt(&key, &owner(2), ttl, true, later)
        else {
            panic!("the key was free while held");
        };
        assert_eq!(retry_after, Some(ttl));
    }

    #[test]
    fn freed_keys_leave_an_empty_table_that_gives_capacity_back() {
        let mut table = Table::default();
        let now = BootInstant::now();
        let ttl = Duration::from_secs(1);
        let keys: Vec<_> = (0..10_000)
            .map(|i| LockKey::new(&format!("k{i}")).expect("valid"))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert!(matches!(
                table.attempt(key, &owner(i as u64), ttl, false, now),
                Outcome::Granted(_)
            ));
        }
        let full = table.entries.capacity();
        for (i, key) in keys.iter().enumerate() {
            assert!(table.release(key.as_str(), &owner(i as u64)));
        }
        assert_eq!(table.len(), 0);
        assert!(
            table.entries.capacity() < full / 8,
            "capacity {} of {full}",
            table.entries.capacity()
        );
        // Keys left to expire are swept as new keys arrive.
        for (i, key) in keys.iter().enumerate() {
            table.attempt(key, &owner(i as u64), ttl, false, now);
        }
        let expired = now.saturating_add(ttl);
        let fresh: Vec<_> = (0..SWEEP_EVERY * 20)
            .map(|i| LockKey::new(&format!("f{i}")).expect("valid"))
            .collect();
        for key in &fresh {
            table.attempt(key, &owner(0), ttl, false, expired);
        }
        assert!(
            table.len() <= fresh.len(),
            "expired entries were not reclaimed: {}",
            table.len()
        );
    }
}
