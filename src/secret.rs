//! Secret values (client secrets, passwords, access tokens): redacted when
//! printed, zeroed on drop, kept in memory locked against swap where allowed.
//!
//! Each secret's bytes live in their own anonymous memory mapping, so they are
//! page-aligned and never share a page with another secret: unlocking one
//! secret's pages (munlock is per page) can never unlock another's. Clones
//! share the same locked buffer through an `Arc`, which keeps handing a token
//! to many callers cheap (no new mapping, no system call).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

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

    /// Whether this secret's bytes are locked against swap.
    pub fn is_locked(&self) -> bool {
        self.inner.locked
    }
}

const LOCK_UNKNOWN: u8 = 0;
const LOCK_OK: u8 = 1;
const LOCK_FAILED: u8 = 2;

/// `LOCK_OK` once a lock succeeded, `LOCK_FAILED` (sticky) after any failure.
static LOCK_STATE: AtomicU8 = AtomicU8::new(LOCK_UNKNOWN);

/// Whether secret memory is locked against swap in this process.
///
/// True when every secret so far could be locked. Before the first secret is
/// made, a probe page is locked (and released) to find out.
pub fn memory_locked() -> bool {
    if LOCK_STATE.load(Ordering::Acquire) == LOCK_UNKNOWN {
        drop(LockedBuf::copy_from(b"probe"));
    }
    LOCK_STATE.load(Ordering::Acquire) == LOCK_OK
}

fn record_lock(ok: bool, err: impl FnOnce() -> String) {
    if ok {
        let _ =
            LOCK_STATE.compare_exchange(LOCK_UNKNOWN, LOCK_OK, Ordering::AcqRel, Ordering::Acquire);
    } else if LOCK_STATE.swap(LOCK_FAILED, Ordering::AcqRel) != LOCK_FAILED {
        // warn once: a low RLIMIT_MEMLOCK would otherwise log on every token
        tracing::warn!(
            "cannot lock secret memory against swap ({}); secrets may reach swap. \
             Raise the memlock limit (ulimit -l, LimitMEMLOCK=) to fix this",
            err()
        );
    }
}

/// A secret's bytes in a private mapping of their own.
struct LockedBuf {
    ptr: *mut u8,
    len: usize,
    /// Size of the mapping (0 when nothing was mapped).
    map_len: usize,
    locked: bool,
    /// Fallback storage when mapping is unavailable (non-Unix, or mmap failed).
    heap: Vec<u8>,
}

// SAFETY: the buffer is owned exclusively by this value, only read after
// construction, and freed once in `drop`; sharing read-only bytes across
// threads is sound.
unsafe impl Send for LockedBuf {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for LockedBuf {}

impl LockedBuf {
    fn copy_from(bytes: &[u8]) -> LockedBuf {
        if bytes.is_empty() {
            return LockedBuf::heap(Vec::new());
        }
        #[cfg(unix)]
        {
            use rustix::mm::{MapFlags, ProtFlags, mlock, mmap_anonymous};
            // SAFETY: a fresh private anonymous mapping touches no existing memory.
            let mapped = unsafe {
                mmap_anonymous(
                    std::ptr::null_mut(),
                    bytes.len(),
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE,
                )
            };
            if let Ok(p) = mapped {
                let ptr = p.cast::<u8>();
                // SAFETY: the mapping is at least `bytes.len()` long and not aliased.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
                // SAFETY: locks exactly the mapping made above.
                let lock = unsafe { mlock(p, bytes.len()) };
                record_lock(lock.is_ok(), || {
                    lock.err().map(|e| e.to_string()).unwrap_or_default()
                });
                #[cfg(any(target_os = "linux", target_os = "android"))]
                {
                    // keep secrets out of core dumps; failure only loses that extra
                    // SAFETY: advises on the mapping made above.
                    let _ = unsafe {
                        rustix::mm::madvise(p, bytes.len(), rustix::mm::Advice::LinuxDontDump)
                    };
                }
                return LockedBuf {
                    ptr,
                    len: bytes.len(),
                    map_len: bytes.len(),
                    locked: lock.is_ok(),
                    heap: Vec::new(),
                };
            }
            record_lock(false, || "cannot map memory".to_string());
        }
        #[cfg(not(unix))]
        record_lock(false, || "not supported on this platform".to_string());
        LockedBuf::heap(bytes.to_vec())
    }

    fn heap(heap: Vec<u8>) -> LockedBuf {
        LockedBuf {
            ptr: std::ptr::null_mut(),
            len: heap.len(),
            map_len: 0,
            locked: false,
            heap,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if self.map_len == 0 {
            &self.heap
        } else {
            // SAFETY: `ptr` points to `len` initialised bytes that live until drop.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        self.heap.zeroize();
        if self.map_len == 0 {
            return;
        }
        // SAFETY: the mapping is ours, `len` bytes long, and no reference to it
        // outlives `self`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) };
        bytes.zeroize();
        #[cfg(unix)]
        {
            // unmapping also unlocks; the pages belong to this secret alone
            // SAFETY: unmaps exactly the mapping made in `copy_from`, once.
            let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.map_len) };
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
    fn locking_status_is_consistent() {
        // many secrets alive at once, each on its own pages
        let many: Vec<Secret> = (0..32)
            .map(|i| Secret::new(format!("secret-{i}")))
            .collect();
        for (i, s) in many.iter().enumerate() {
            assert_eq!(s.expose(), format!("secret-{i}"));
        }
        let all_locked = many.iter().all(Secret::is_locked);
        if all_locked {
            // dropping half must not disturb the rest
            let rest: Vec<Secret> = many.into_iter().skip(16).collect();
            assert!(rest.iter().all(|s| s.is_locked()));
            assert_eq!(rest[0].expose(), "secret-16");
        }
        // memory_locked is false as soon as any lock failed
        if !all_locked {
            assert!(!memory_locked());
        }
    }
}
