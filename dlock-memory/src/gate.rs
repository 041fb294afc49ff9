//! `MemoryFenceGate`: the resource side of fencing, in process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use dlock_core::{Admission, Error, FenceGate, FenceToken, metrics};

/// A fenced register per resource, in memory: a write is stored only if its token
/// is at least the highest accepted for that resource, in one atomic step.
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

/// The highest accepted token and the value written with it.
type Register = (FenceToken, Vec<u8>);

impl MemoryFenceGate {
    /// A gate with no resources yet.
    pub fn new() -> Self {
        Self::default()
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
        let mut registers = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        match registers.get_mut(resource) {
            Some((highest, _)) if token < *highest => {
                metrics::fence_rejected("memory");
                Ok(Admission::Stale { highest: *highest })
            }
            Some(register) => {
                *register = (token, value.to_vec());
                Ok(Admission::Accepted)
            }
            None => {
                registers.insert(resource.to_owned(), (token, value.to_vec()));
                Ok(Admission::Accepted)
            }
        }
    }

    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        let registers = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(registers.get(resource).cloned())
    }
}
