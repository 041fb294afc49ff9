//! Lock keys: validated once, shared cheaply.

use std::{borrow::Borrow, fmt, sync::Arc};

use crate::error::InvalidInput;

/// The longest key, in bytes of UTF-8, that every backend accepts.
///
/// The same rule holds on every backend, so swapping backends never breaks a key.
pub const MAX_KEY_LEN: usize = 1024;

/// A validated lock key: non-empty UTF-8 of at most [`MAX_KEY_LEN`] bytes.
///
/// Cloning is cheap (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey(Arc<str>);

impl LockKey {
    /// Checks `key` against the rules shared by every backend.
    pub fn new(key: &str) -> Result<Self, InvalidInput> {
        Self::check(key)?;
        Ok(LockKey(Arc::from(key)))
    }

    /// Checks `key` without keeping it.
    pub fn check(key: &str) -> Result<(), InvalidInput> {
        if key.is_empty() {
            return Err(InvalidInput::EmptyKey);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidInput::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LockKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LockKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for LockKey {
    type Error = InvalidInput;
    fn try_from(key: &str) -> Result<Self, Self::Error> {
        LockKey::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_long_keys() {
        assert_eq!(LockKey::new(""), Err(InvalidInput::EmptyKey));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            LockKey::new(&long),
            Err(InvalidInput::KeyTooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            })
        );
        assert!(LockKey::new(&"k".repeat(MAX_KEY_LEN)).is_ok());
        // Length is counted in bytes: 4-byte characters reach the limit four times sooner.
        assert!(LockKey::new(&"🔒".repeat(MAX_KEY_LEN / 4 + 1)).is_err());
    }
}
