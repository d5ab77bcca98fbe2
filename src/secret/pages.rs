//! The operating system's side of secret memory: whole pages, mapped
//! privately, locked against swap and kept out of core dumps.
//!
//! This is the only platform-specific part of [`super::arena`]. On Unix pages
//! come from `mmap` and are locked with `mlock`. Elsewhere they come from the
//! heap and locking is not supported yet: that is the seam where Windows
//! plugs in `VirtualAlloc` and `VirtualLock`.

use std::io;
use std::ptr::NonNull;

/// Page memory for the arena. A trait so tests can make locking fail on cue.
pub(crate) trait Pages {
    /// The size of one page, a power of two.
    fn page_size(&self) -> usize;
    /// A zeroed, page-aligned, private region of `len` bytes (a multiple of the page size).
    fn map(&mut self, len: usize) -> io::Result<NonNull<u8>>;
    /// Locks `len` bytes at `ptr` (a region from [`Pages::map`]) against swap.
    fn lock(&mut self, ptr: NonNull<u8>, len: usize) -> io::Result<()>;
    /// Gives a region from [`Pages::map`] back; unlocks it too.
    ///
    /// # Safety
    /// `ptr` and `len` are exactly those of one earlier `map`, nothing refers
    /// into the region any more, and it is unmapped only once.
    unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize);
}

/// The real thing.
#[derive(Debug, Default)]
pub(crate) struct OsPages;

#[cfg(unix)]
impl Pages for OsPages {
    fn page_size(&self) -> usize {
        rustix::param::page_size()
    }

    fn map(&mut self, len: usize) -> io::Result<NonNull<u8>> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
        // SAFETY: a fresh private anonymous mapping touches no existing memory.
        let p = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // keep secrets out of core dumps; failure only loses that extra
            // SAFETY: advises on the mapping made above.
            let _ = unsafe { rustix::mm::madvise(p, len, rustix::mm::Advice::LinuxDontDump) };
        }
        NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
    }

    fn lock(&mut self, ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        // SAFETY: locks part of a mapping made by `map`; locking changes no contents.
        unsafe { rustix::mm::mlock(ptr.as_ptr().cast(), len) }.map_err(io::Error::from)
    }

    unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize) {
        // unmapping also unlocks
        // SAFETY: the caller passes one whole mapping from `map`, once.
        let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
    }
}

/// Page size assumed where the platform is not asked (4 KiB on Windows x86
/// and ARM alike).
#[cfg(not(unix))]
const FALLBACK_PAGE: usize = 4096;

#[cfg(not(unix))]
impl Pages for OsPages {
    fn page_size(&self) -> usize {
        FALLBACK_PAGE
    }

    fn map(&mut self, len: usize) -> io::Result<NonNull<u8>> {
        let layout = std::alloc::Layout::from_size_align(len, FALLBACK_PAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `len` is a non-zero multiple of the page size (the arena never maps 0 bytes).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    fn lock(&mut self, _ptr: NonNull<u8>, _len: usize) -> io::Result<()> {
        // Windows: VirtualLock goes here (with VirtualAlloc in `map`)
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "memory locking is not supported on this platform yet",
        ))
    }

    unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(len, FALLBACK_PAGE) {
            // SAFETY: the caller passes one allocation from `map`, with its length, once.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }
}
