//! Owner ids whose etcd key names are reused.
//!
//! Every acquisition needs a key of its own, but etcd keeps every deleted key name in
//! its index until the next compaction, and the transaction that joins the line reads
//! the whole lock directory: with a fresh name per acquisition a hot key slows down
//! with every use (measured: a third of the rate gone after 10 000 acquisitions on an
//! uncompacted server). So a client names its keys after slots, `<client><slot>`, and
//! reuses a slot once the key of the acquisition that had it is known to be gone.
//!
//! The owner id adds a generation to the slot: it stays unique per acquisition, so a
//! late call for an earlier acquisition of the same slot finds nothing of its own and
//! cannot touch the current one (whose key also has a newer create revision).

use std::sync::Mutex;

use dlock_core::OwnerId;

/// Bytes of an owner id: client (8), slot (4), generation (4). The key name is the
/// first 12.
const NAME_LEN: usize = 12;

pub(crate) struct Owners {
    client: [u8; 8],
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    free: Vec<u32>,
    /// The generation each slot is at: the one its current owner id carries.
    generation: Vec<u32>,
}

impl Owners {
    pub(crate) fn new() -> Self {
        let random = OwnerId::random();
        let mut client = [0u8; 8];
        client.copy_from_slice(&random.as_bytes()[..8]);
        Owners {
            client,
            slots: Mutex::default(),
        }
    }

    /// An id for a new acquisition: a free slot, or a new one.
    pub(crate) fn take(&self) -> OwnerId {
        let mut slots = self.slots();
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.generation.push(0);
                u32::try_from(slots.generation.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = slots.generation.get(slot as usize).copied().unwrap_or(0);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.client);
        bytes[8..12].copy_from_slice(&slot.to_be_bytes());
        bytes[12..].copy_from_slice(&generation.to_be_bytes());
        OwnerId::from_bytes(bytes)
    }

    /// `owner`'s key is gone and its acquisition over: its slot may name the next
    /// one. Ignored for an id that is not the slot's current one (a late, repeated
    /// call) or not this client's.
    pub(crate) fn give_back(&self, owner: &OwnerId) {
        let bytes = owner.as_bytes();
        if bytes[..8] != self.client {
            return;
        }
        let slot = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let generation = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let mut slots = self.slots();
        let Some(current) = slots.generation.get_mut(slot as usize) else {
            return;
        };
        if *current != generation {
            return;
        }
        *current = current.wrapping_add(1);
        slots.free.push(slot);
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key name of `owner`'s place in line: its client and slot, in hex.
pub(crate) fn key_name(owner: &OwnerId) -> String {
    owner.as_bytes()[..NAME_LEN]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_only_when_given_back_by_their_current_owner() {
        let owners = Owners::new();
        let a = owners.take();
        let b = owners.take();
        assert_ne!(key_name(&a), key_name(&b));
        owners.give_back(&a);
        let c = owners.take();
        // Same key name, different owner id.
        assert_eq!(key_name(&c), key_name(&a));
        assert_ne!(c, a);
        // A late second give-back of `a` must not free `c`'s slot.
        owners.give_back(&a);
        let d = owners.take();
        assert_ne!(key_name(&d), key_name(&c));
        // Ids of another client are ignored.
        owners.give_back(&Owners::new().take());
        assert_ne!(key_name(&owners.take()), key_name(&c));
    }
}
