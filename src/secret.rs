//! Secret values (client secrets, passwords, access tokens): redacted when
//! printed, zeroed on drop, kept in memory locked against swap where allowed.
//!
//! The bytes live in [`arena`], a slab of locked pages shared by all small
//! secrets (each in a slot of its own, zeroed when freed), so the locked
//! memory grows with the bytes held, not with the number of secrets. Clones
//! share one buffer through an `Arc`, which keeps handing a token to many
//! callers cheap (no allocation, no system call). The platform's part is in
//! [`pages`].

mod arena;
mod pages;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use self::arena::{Arena, Block};
use self::pages::OsPages;

/// A secret string. `Debug` and `Display` print `[redacted]`.
pub struct Secret {
    inner: Arc<LockedBuf>,
}

impl Secret {
    /// Wraps a string, taking ownership so no other copy is left behind.
    pub fn new(mut s: String) -> Self {
        let buf = LockedBuf::copy_from(s.as_bytes());
        s.zeroize();
        Secret {
            inner: Arc::new(buf),
        }
    }

    /// The secret's text. Call only where the value is actually sent.
    pub fn expose(&self) -> &str {
        // SAFETY: the bytes were copied from a `String` (valid UTF-8) and are
        // never modified until the buffer is dropped.
        unsafe { std::str::from_utf8_unchecked(self.inner.as_bytes()) }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Whether this secret's bytes are locked against swap (an empty secret
    /// has none, and says false).
    pub fn is_locked(&self) -> bool {
        self.inner.block.as_ref().is_some_and(Block::locked)
    }
}

/// The process's one arena.
static ARENA: LazyLock<Mutex<Arena<OsPages>>> = LazyLock::new(|| Mutex::new(Arena::new(OsPages)));

/// The arena, carrying on after a panic elsewhere: its bookkeeping changes
/// contain no panicking calls of their own once a block is handed out.
fn arena() -> MutexGuard<'static, Arena<OsPages>> {
    ARENA.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether secret memory is locked against swap in this process.
///
/// True when every live secret is in locked memory. With no secret alive it
/// says whether memory can be locked at all (a page is tried if none is
/// held). It turns false as soon as one secret could not be locked (the
/// memlock limit is reached, or the platform cannot lock), and true again
/// once every such secret has been dropped: unlocked pages are given back
/// when their last secret goes, and new secrets prefer locked slots.
pub fn memory_locked() -> bool {
    let (locked, failure) = {
        let mut a = arena();
        (a.memory_locked(), a.take_failure())
    };
    warn_once(failure);
    locked
}

/// Logs the first failure to lock, once per process: a low RLIMIT_MEMLOCK
/// would otherwise log on every token.
fn warn_once(failure: Option<String>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Some(err) = failure
        && !WARNED.swap(true, Ordering::AcqRel)
    {
        tracing::warn!(
            "cannot lock secret memory against swap ({err}); secrets may reach swap and \
             status reports memory_locked false while any unlocked secret is alive. \
             Raise the memlock limit (ulimit -l, LimitMEMLOCK=) to fix this"
        );
    }
}

/// A secret's bytes in a block of the arena (none for an empty secret).
struct LockedBuf {
    block: Option<Block>,
    len: usize,
}

// SAFETY: the block is owned exclusively by this value, only read after
// construction, and given back once in `drop`; sharing read-only bytes
// across threads is sound.
unsafe impl Send for LockedBuf {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for LockedBuf {}

impl LockedBuf {
    fn copy_from(bytes: &[u8]) -> LockedBuf {
        if bytes.is_empty() {
            return LockedBuf {
                block: None,
                len: 0,
            };
        }
        let (block, failure) = {
            let mut a = arena();
            (a.alloc(bytes.len()), a.take_failure())
        };
        warn_once(failure);
        // SAFETY: the block is ours, at least `bytes.len()` long and not aliased.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.ptr().as_ptr(), bytes.len()) };
        LockedBuf {
            block: Some(block),
            len: bytes.len(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.block {
            // SAFETY: the block holds `len` initialised bytes that live until drop.
            Some(b) => unsafe { std::slice::from_raw_parts(b.ptr().as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            // the arena zeroes the whole block before reusing or unmapping it
            arena().free(block);
        }
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.inner.as_bytes(), other.inner.as_bytes());
        // length is not secret; the content comparison does not stop early
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            secret: Secret,
        }
        let h = format!("{:?}", Holder { secret: s });
        assert!(!h.contains("hunter2"), "{h}");
    }

    #[test]
    fn serde_round_trip() {
        let s = Secret::new("a\"b\\c é 🔑".into());
        let json = serde_json::to_string(&s).unwrap();
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "a\"b\\c é 🔑");
        assert_eq!(back, s);
    }

    #[test]
    fn expose_len_and_empty() {
        let s = Secret::new("abc".into());
        assert_eq!(s.expose(), "abc");
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        let e = Secret::new(String::new());
        assert!(e.is_empty());
        assert_eq!(e.expose(), "");
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(Secret::new("x1".into()), Secret::new("x1".into()));
        assert_ne!(Secret::new("x1".into()), Secret::new("x2".into()));
        assert_ne!(Secret::new("x1".into()), Secret::new("x12".into()));
    }

    #[test]
    fn clones_share_and_outlive_the_original() {
        let s = Secret::new("shared".into());
        let c = s.clone();
        drop(s);
        assert_eq!(c.expose(), "shared");
    }

    #[test]
    fn many_secrets_share_locked_pages() {
        // many secrets alive at once, each in its own slot
        let many: Vec<Secret> = (0..2000)
            .map(|i| Secret::new(format!("secret-{i:04}-{}", "x".repeat(30))))
            .collect();
        for (i, s) in many.iter().enumerate().step_by(97) {
            assert!(s.expose().starts_with(&format!("secret-{i:04}-")));
        }
        let all_locked = many.iter().all(Secret::is_locked);
        if all_locked {
            // dropping half must not disturb the rest
            let rest: Vec<Secret> = many.into_iter().skip(1000).collect();
            assert!(rest.iter().all(|s| s.is_locked()));
            assert_eq!(rest[0].expose(), format!("secret-1000-{}", "x".repeat(30)));
        } else {
            // memory_locked is false while any unlocked secret is alive
            assert!(!memory_locked());
        }
    }
}
