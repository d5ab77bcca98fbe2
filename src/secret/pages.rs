//! The operating system's side of secret memory: whole pages, mapped
//! privately, locked against swap and kept out of core dumps.
//!
//! This is the only platform-specific part of [`super::arena`]. On Unix pages
//! come from `mmap` and are locked with `mlock`; on Windows from
//! `VirtualAlloc` and are locked with `VirtualLock` (bounded by the process's
//! minimum working set, which [`raise_lock_limit`] raises once). Elsewhere
//! they come from the heap and are not locked.

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

#[cfg(windows)]
impl Pages for OsPages {
    fn page_size(&self) -> usize {
        use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
        static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *PAGE.get_or_init(|| {
            // SAFETY: GetSystemInfo fills the struct it is given and cannot fail.
            let info = unsafe {
                let mut info = std::mem::zeroed::<SYSTEM_INFO>();
                GetSystemInfo(&mut info);
                info
            };
            let size = info.dwPageSize as usize;
            if size.is_power_of_two() { size } else { 4096 }
        })
    }

    fn map(&mut self, len: usize) -> io::Result<NonNull<u8>> {
        use windows_sys::Win32::System::Memory::{
            MEM_COMMIT, MEM_RESERVE, PAGE_READWRITE, VirtualAlloc,
        };
        raise_lock_limit();
        // SAFETY: a fresh private allocation touches no existing memory; it comes zeroed.
        let p = unsafe {
            VirtualAlloc(
                std::ptr::null(),
                len,
                MEM_COMMIT | MEM_RESERVE,
                PAGE_READWRITE,
            )
        };
        NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)
    }

    fn lock(&mut self, ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        use windows_sys::Win32::System::Memory::VirtualLock;
        // SAFETY: locks part of an allocation made by `map`; locking changes no contents.
        if unsafe { VirtualLock(ptr.as_ptr().cast(), len) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize) {
        use windows_sys::Win32::System::Memory::{MEM_RELEASE, VirtualFree, VirtualUnlock};
        // SAFETY: the caller passes one whole allocation from `map`, once;
        // unlocking fails harmlessly for pages that were never locked, and
        // MEM_RELEASE takes size 0 for the whole allocation.
        unsafe {
            let _ = VirtualUnlock(ptr.as_ptr().cast(), len);
            let _ = VirtualFree(ptr.as_ptr().cast(), 0, MEM_RELEASE);
        }
    }
}

/// Windows counts locked pages against the process's minimum working set
/// (by default about 200 KiB, less what the process already uses), the way
/// Unix counts them against `RLIMIT_MEMLOCK`. Raised once, before the first
/// secret page, by 2 MiB — more than 1,000 profiles need (SECURITY.md); when
/// that fails the arena's own fallback applies (secrets in unlocked memory,
/// `memory_locked: false`).
#[cfg(windows)]
fn raise_lock_limit() {
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetProcessWorkingSetSize, SetProcessWorkingSetSize,
    };
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        const EXTRA: usize = 2 << 20;
        let (mut min, mut max) = (0usize, 0usize);
        // SAFETY: the pseudo-handle of this process; out pointers to locals.
        unsafe {
            let me = GetCurrentProcess();
            if GetProcessWorkingSetSize(me, &mut min, &mut max) != 0 {
                let _ = SetProcessWorkingSetSize(me, min + EXTRA, max.max(min + EXTRA) + EXTRA);
            }
        }
    });
}

/// Page size assumed where the platform is not asked.
#[cfg(not(any(unix, windows)))]
const FALLBACK_PAGE: usize = 4096;

#[cfg(not(any(unix, windows)))]
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
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "memory locking is not supported on this platform",
        ))
    }

    unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(len, FALLBACK_PAGE) {
            // SAFETY: the caller passes one allocation from `map`, with its length, once.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }
}
