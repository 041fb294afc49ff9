//! `MemoryFenceGate`: the resource side of fencing, in process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use dlock_core::{Admission, Error, FenceGate, FenceToken, FencedRead, stale_token};

/// A fenced register per resource, in memory: an operation is admitted only if its
/// token is at least the highest admitted for that resource, in one atomic step
/// (see [`FenceGate`] for the guarantee).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), dlock_core::Error> {
/// use dlock_core::{Admission, FenceGate, FenceToken};
/// use dlock_memory::MemoryFenceGate;
///
/// let gate = MemoryFenceGate::new();
/// assert!(gate.write("order:7", FenceToken(2), b"paid").await?.is_accepted());
/// let stale = gate.write("order:7", FenceToken(1), b"refunded").await?;
/// assert_eq!(stale, Admission::Stale { highest: FenceToken(2) });
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryFenceGate {
    registers: Arc<Mutex<HashMap<String, Register>>>,
}

/// The highest admitted token, and the last value written (none yet after only a
/// read for update).
type Register = (FenceToken, Option<Vec<u8>>);

impl MemoryFenceGate {
    /// A gate with no resources yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `token` for `resource` in one step under the table's lock: raises the
    /// highest token to it and runs `then` on the register, or answers `Stale`.
    fn admit<T>(
        &self,
        resource: &str,
        token: FenceToken,
        then: impl FnOnce(&mut Option<Vec<u8>>) -> T,
    ) -> Result<T, FenceToken> {
        let mut registers = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        let (highest, value) = registers
            .entry(resource.to_owned())
            .or_insert((token, None));
        if token < *highest {
            return Err(*highest);
        }
        *highest = token;
        Ok(then(value))
    }
}

impl std::fmt::Debug for MemoryFenceGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFenceGate").finish_non_exhaustive()
    }
}

#[async_trait]
impl FenceGate for MemoryFenceGate {
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error> {
        match self.admit(resource, token, |stored| *stored = Some(value.to_vec())) {
            Ok(()) => Ok(Admission::Accepted),
            Err(highest) => {
                stale_token("memory", resource, token, highest);
                Ok(Admission::Stale { highest })
            }
        }
    }

    async fn read_for_update(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FencedRead, Error> {
        match self.admit(resource, token, |stored| stored.clone()) {
            Ok(value) => Ok(FencedRead::Current(value)),
            Err(highest) => {
                stale_token("memory", resource, token, highest);
                Ok(FencedRead::Stale { highest })
            }
        }
    }

    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        let registers = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(registers
            .get(resource)
            .and_then(|(token, value)| Some((*token, value.clone()?))))
    }
}
