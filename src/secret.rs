//! Secret values (client secrets, passwords, access tokens): redacted when
//! printed, zeroed on drop, kept in memory locked against swap where allowed.
//!
//! STUB: the token-engine work replaces the storage with locked memory; the
//! public API below is the contract other modules rely on.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

/// A secret string. `Debug` and `Display` print `[redacted]`.
pub struct Secret {
    inner: String,
}

impl Secret {
    /// Wraps a string, taking ownership so no other copy is left behind.
    pub fn new(s: String) -> Self {
        Secret { inner: s }
    }

    /// The secret's text. Call only where the value is actually sent.
    pub fn expose(&self) -> &str {
        &self.inner
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// Whether secret memory is locked against swap in this process.
pub fn memory_locked() -> bool {
    false
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret::new(self.inner.clone())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.inner.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}
