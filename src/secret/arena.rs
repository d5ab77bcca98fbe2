//! A slab allocator for secrets in locked memory.
//!
//! Locking is per page and `RLIMIT_MEMLOCK` is counted in pages, so giving
//! every secret a page of its own ran out after about 2,000 secrets under the
//! common 8 MiB limit. Here small secrets share pages instead: each size class
//! (32, 64, … bytes, up to half a page) owns pages cut into equal slots, grows
//! one page at a time and keeps a free list per page. The locked pages held so
//! grow with the bytes of the secrets alive, not with their number. A secret
//! larger than the biggest slot gets a mapping of its own.
//!
//! Every page is locked when it is mapped. When that fails (the limit is
//! reached, or the platform cannot lock) the page is used unlocked, and each
//! allocation remembers whether its memory is locked, so
//! [`Arena::memory_locked`] can say whether any live secret sits in unlocked
//! memory. An unlocked page is given back as soon as its last slot is freed,
//! so the next page is a fresh chance to lock; new secrets always take a slot
//! in a locked page first. A freed slot is zeroed before it goes back on the
//! free list.

use std::collections::{BTreeSet, HashMap};
use std::ptr::NonNull;

use zeroize::Zeroize;

use super::pages::Pages;

/// The smallest slot. Client secrets (43 bytes for Climate Engine) take 64,
/// access tokens (about 700 bytes) 1,024.
pub(crate) const MIN_SLOT: usize = 32;

/// Memory handed out for one secret: `cap` zeroed bytes at `ptr`, owned by
/// the holder until it gives the block back with [`Arena::free`].
#[derive(Debug)]
pub(crate) struct Block {
    ptr: NonNull<u8>,
    cap: usize,
    locked: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A slot of this size class.
    Slot(usize),
    /// A mapping of its own, `cap` bytes (whole pages).
    Own,
    /// Heap memory, when no page could be mapped at all (out of memory).
    Heap,
}

impl Block {
    /// The block's memory.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// How many bytes it holds (at least what was asked for).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Whether its memory is locked against swap.
    pub(crate) fn locked(&self) -> bool {
        self.locked
    }
}

/// What the arena holds, for status, tests and measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Live blocks.
    pub live: usize,
    /// Live blocks whose memory is not locked.
    pub live_unlocked: usize,
    /// Locked pages held (slab pages and own mappings, in pages).
    pub locked_pages: usize,
    /// Unlocked pages held, likewise.
    pub unlocked_pages: usize,
}

/// A page of one size class: its slots that are free, and how many are used.
#[derive(Debug)]
struct Page {
    locked: bool,
    /// Free slot indices; the last is handed out next.
    free: Vec<u32>,
    live: usize,
}

#[derive(Debug)]
struct Class {
    slot: usize,
    /// Pages by base address.
    pages: HashMap<usize, Page>,
    /// Locked pages with a free slot, by base address (lowest first, which
    /// keeps use packed into few pages).
    room_locked: BTreeSet<usize>,
    room_unlocked: BTreeSet<usize>,
    /// Locked pages with no slot in use. One is kept, so a secret freed and
    /// made again (a token refresh) does not map and lock a page each time.
    spare: usize,
}

/// The slab allocator over some [`Pages`].
#[derive(Debug)]
pub(crate) struct Arena<P: Pages> {
    os: P,
    page: usize,
    classes: Vec<Class>,
    stats: Stats,
    /// The first failure to lock, until it has been reported.
    failure: Option<String>,
    reported: bool,
}

impl<P: Pages> Arena<P> {
    /// An empty arena; maps nothing until the first allocation.
    pub(crate) fn new(os: P) -> Self {
        let page = os.page_size();
        let mut classes = Vec::new();
        let mut slot = MIN_SLOT;
        while slot <= page / 2 {
            classes.push(Class {
                slot,
                pages: HashMap::new(),
                room_locked: BTreeSet::new(),
                room_unlocked: BTreeSet::new(),
                spare: 0,
            });
            slot *= 2;
        }
        Arena {
            os,
            page,
            classes,
            stats: Stats::default(),
            failure: None,
            reported: false,
        }
    }

    /// The biggest slot; larger secrets get a mapping of their own.
    #[cfg(test)]
    pub(crate) fn max_slot(&self) -> usize {
        self.classes.last().map_or(0, |c| c.slot)
    }

    /// What is held now.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// True when every live block is in locked memory; with none alive, when
    /// a page can be locked (one is tried if none is held).
    pub(crate) fn memory_locked(&mut self) -> bool {
        if self.stats.live == 0 && self.stats.locked_pages == 0 {
            // a probe: a locked page stays as the first class's spare
            let b = self.alloc(1);
            self.free(b);
        }
        self.stats.live_unlocked == 0 && self.stats.locked_pages > 0
    }

    /// The first failure to lock memory, once: the caller logs it (outside
    /// the arena's lock). Later failures only show in [`Arena::memory_locked`].
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        if self.reported {
            return None;
        }
        let f = self.failure.take()?;
        self.reported = true;
        Some(format!(
            "{f}; {} pages of secrets are locked",
            self.stats.locked_pages
        ))
    }

    /// A zeroed block of at least `len` bytes (`len` > 0).
    pub(crate) fn alloc(&mut self, len: usize) -> Block {
        let block = match self.classes.iter().position(|c| c.slot >= len) {
            Some(ci) => self.alloc_slot(ci),
            None => self.alloc_own(len),
        };
        self.stats.live += 1;
        if !block.locked {
            self.stats.live_unlocked += 1;
        }
        block
    }

    /// Zeroes a block and takes it back.
    pub(crate) fn free(&mut self, block: Block) {
        // SAFETY: the block's `cap` bytes are ours until now, and nothing else
        // refers to them (the holder gave the block up).
        unsafe { std::slice::from_raw_parts_mut(block.ptr.as_ptr(), block.cap) }.zeroize();
        self.stats.live -= 1;
        if !block.locked {
            self.stats.live_unlocked -= 1;
        }
        match block.kind {
            Kind::Slot(ci) => self.free_slot(ci, block.ptr),
            Kind::Own => {
                self.count_pages(block.locked, block.cap, false);
                // SAFETY: the mapping was made for this block alone in `alloc_own`.
                unsafe { self.os.unmap(block.ptr, block.cap) };
            }
            Kind::Heap => {
                let raw = std::ptr::slice_from_raw_parts_mut(block.ptr.as_ptr(), block.cap);
                // SAFETY: made by `Box::into_raw` in `heap` with this length.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
    }

    /// Maps `len` bytes and tries to lock them; `None` when nothing could be mapped.
    fn map_locked(&mut self, len: usize) -> Option<(NonNull<u8>, bool)> {
        let ptr = match self.os.map(len) {
            Ok(p) => p,
            Err(e) => {
                self.note_failure(format!("cannot map memory: {e}"));
                return None;
            }
        };
        let locked = match self.os.lock(ptr, len) {
            Ok(()) => true,
            Err(e) => {
                self.note_failure(e.to_string());
                false
            }
        };
        self.count_pages(locked, len, true);
        Some((ptr, locked))
    }

    fn note_failure(&mut self, message: String) {
        if !self.reported && self.failure.is_none() {
            self.failure = Some(message);
        }
    }

    fn count_pages(&mut self, locked: bool, len: usize, add: bool) {
        let n = len / self.page;
        let counter = if locked {
            &mut self.stats.locked_pages
        } else {
            &mut self.stats.unlocked_pages
        };
        if add {
            *counter += n;
        } else {
            *counter -= n;
        }
    }

    fn alloc_slot(&mut self, ci: usize) -> Block {
        if let Some(&base) = self.classes[ci].room_locked.first() {
            return self.take(ci, base);
        }
        let fallback = self.classes[ci].room_unlocked.first().copied();
        match self.map_locked(self.page) {
            Some((ptr, true)) => {
                let base = self.add_page(ci, ptr, true);
                self.take(ci, base)
            }
            Some((ptr, false)) => match fallback {
                Some(base) => {
                    // no use holding a second unlocked page
                    self.count_pages(false, self.page, false);
                    // SAFETY: mapped just above and not handed out.
                    unsafe { self.os.unmap(ptr, self.page) };
                    self.take(ci, base)
                }
                None => {
                    let base = self.add_page(ci, ptr, false);
                    self.take(ci, base)
                }
            },
            None => match fallback {
                Some(base) => self.take(ci, base),
                None => self.heap(self.classes[ci].slot),
            },
        }
    }

    fn add_page(&mut self, ci: usize, ptr: NonNull<u8>, locked: bool) -> usize {
        let class = &mut self.classes[ci];
        let slots = u32::try_from(self.page / class.slot).unwrap_or(u32::MAX);
        let base = ptr.as_ptr() as usize;
        // reversed, so slot 0 is handed out first
        class.pages.insert(
            base,
            Page {
                locked,
                free: (0..slots).rev().collect(),
                live: 0,
            },
        );
        if locked {
            class.room_locked.insert(base);
            class.spare += 1;
        } else {
            class.room_unlocked.insert(base);
        }
        base
    }

    /// Hands out a free slot of the page at `base` (which has one).
    fn take(&mut self, ci: usize, base: usize) -> Block {
        let class = &mut self.classes[ci];
        let slot = class.slot;
        let page = class
            .pages
            .get_mut(&base)
            .expect("a page with room is in the class");
        let index = page.free.pop().expect("a page with room has a free slot");
        if page.live == 0 && page.locked {
            class.spare -= 1;
        }
        page.live += 1;
        let locked = page.locked;
        if page.free.is_empty() {
            if locked {
                class.room_locked.remove(&base);
            } else {
                class.room_unlocked.remove(&base);
            }
        }
        let addr = base + index as usize * slot;
        Block {
            // a slot inside a mapped page is never null
            ptr: NonNull::new(addr as *mut u8).expect("a slot address is not null"),
            cap: slot,
            locked,
            kind: Kind::Slot(ci),
        }
    }

    fn free_slot(&mut self, ci: usize, ptr: NonNull<u8>) {
        let page_size = self.page;
        let class = &mut self.classes[ci];
        let addr = ptr.as_ptr() as usize;
        // pages are page-aligned, so a slot's page is its address rounded down
        let base = addr & !(page_size - 1);
        let page = class
            .pages
            .get_mut(&base)
            .expect("a freed slot belongs to a page of its class");
        page.free
            .push(u32::try_from((addr - base) / class.slot).unwrap_or(u32::MAX));
        page.live -= 1;
        let (locked, live) = (page.locked, page.live);
        if locked {
            class.room_locked.insert(base);
        } else {
            class.room_unlocked.insert(base);
        }
        if live > 0 {
            return;
        }
        let release = if locked {
            class.spare += 1;
            class.spare > 1
        } else {
            // an unlocked page goes back at once: the next page may lock
            true
        };
        if release {
            class.pages.remove(&base);
            if locked {
                class.room_locked.remove(&base);
                class.spare -= 1;
            } else {
                class.room_unlocked.remove(&base);
            }
            self.count_pages(locked, page_size, false);
            let ptr = NonNull::new(base as *mut u8).expect("a page address is not null");
            // SAFETY: the page was mapped in `alloc_slot` and none of its slots is in use.
            unsafe { self.os.unmap(ptr, page_size) };
        }
    }

    fn alloc_own(&mut self, len: usize) -> Block {
        let cap = len.div_ceil(self.page) * self.page;
        match self.map_locked(cap) {
            Some((ptr, locked)) => Block {
                ptr,
                cap,
                locked,
                kind: Kind::Own,
            },
            None => self.heap(len),
        }
    }

    /// Unlocked heap memory, the last resort when no page can be mapped.
    fn heap(&mut self, len: usize) -> Block {
        let raw = Box::into_raw(vec![0u8; len].into_boxed_slice());
        Block {
            ptr: NonNull::new(raw.cast::<u8>()).expect("a box is not null"),
            cap: len,
            locked: false,
            kind: Kind::Heap,
        }
    }

    /// Copies `len` bytes at `addr` out of a page the arena holds (freed
    /// slots included), or `None` when that is not arena memory.
    #[cfg(test)]
    fn read_raw(&self, addr: usize, len: usize) -> Option<Vec<u8>> {
        let base = addr & !(self.page - 1);
        let held = self.classes.iter().any(|c| c.pages.contains_key(&base));
        if !held || addr + len > base + self.page {
            return None;
        }
        // SAFETY: inside a page that is mapped and readable; only read.
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::super::pages::OsPages;
    use super::*;

    /// Real pages whose locking succeeds only for the first `budget` pages
    /// locked at once, like a small `RLIMIT_MEMLOCK`.
    struct Limited {
        os: OsPages,
        budget: usize,
        locked: HashMap<usize, usize>,
    }

    impl Limited {
        fn new(budget: usize) -> Self {
            Limited {
                os: OsPages,
                budget,
                locked: HashMap::new(),
            }
        }
    }

    impl Pages for Limited {
        fn page_size(&self) -> usize {
            self.os.page_size()
        }
        fn map(&mut self, len: usize) -> std::io::Result<NonNull<u8>> {
            self.os.map(len)
        }
        fn lock(&mut self, ptr: NonNull<u8>, len: usize) -> std::io::Result<()> {
            let pages = len / self.page_size();
            let held: usize = self.locked.values().sum();
            if held + pages > self.budget {
                return Err(std::io::Error::other("over the test's lock budget"));
            }
            self.locked.insert(ptr.as_ptr() as usize, pages);
            Ok(())
        }
        unsafe fn unmap(&mut self, ptr: NonNull<u8>, len: usize) {
            self.locked.remove(&(ptr.as_ptr() as usize));
            // SAFETY: passed on from our caller.
            unsafe { self.os.unmap(ptr, len) }
        }
    }

    fn write(b: &Block, text: &[u8]) {
        assert!(text.len() <= b.capacity());
        // SAFETY: the block is ours and at least this long.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), b.ptr().as_ptr(), text.len()) };
    }

    fn addr(b: &Block) -> usize {
        b.ptr().as_ptr() as usize
    }

    #[test]
    fn small_blocks_share_pages_and_big_ones_get_their_own() {
        let mut a = Arena::new(Limited::new(usize::MAX));
        let page = a.page;
        let blocks: Vec<Block> = (0..1000).map(|_| a.alloc(43)).collect();
        assert!(blocks.iter().all(|b| b.capacity() == 64 && b.locked()));
        // 1,000 × 64 bytes in 4 KiB pages: 16 pages, not 1,000
        let want = (1000 * 64usize).div_ceil(page);
        assert_eq!(a.stats().locked_pages, want);
        assert_eq!(a.stats().live, 1000);
        let mut addrs: Vec<usize> = blocks.iter().map(addr).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 1000, "every block has its own slot");
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= 64), "no overlap");

        let one = a.alloc(a.max_slot() + 1);
        assert_eq!(one.capacity(), page);
        let big = a.alloc(page + 1);
        assert_eq!(big.capacity(), 2 * page);
        assert_eq!(big.ptr().as_ptr() as usize % page, 0);
        assert_eq!(a.stats().locked_pages, want + 3);
        a.free(big);
        a.free(one);
        assert_eq!(a.stats().locked_pages, want);
        for b in blocks {
            a.free(b);
        }
        // one spare page is kept for the next secret
        assert_eq!(a.stats().live, 0);
        assert_eq!(a.stats().locked_pages, 1);
    }

    #[test]
    fn freed_slots_are_zeroed_and_reused() {
        let mut a = Arena::new(Limited::new(usize::MAX));
        let first = a.alloc(20);
        let keep = a.alloc(20);
        write(&first, b"hunter2-very-secret!");
        write(&keep, b"kept-secret-00000000");
        let at = addr(&first);
        assert_eq!(
            a.read_raw(at, 20).as_deref(),
            Some(&b"hunter2-very-secret!"[..])
        );
        a.free(first);
        // the page is still held (`keep` lives on it): read the freed slot
        let after = a.read_raw(at, 32).expect("the page is still the arena's");
        assert!(
            after.iter().all(|&b| b == 0),
            "freed slot not zeroed: {after:?}"
        );
        assert_eq!(
            a.read_raw(addr(&keep), 20).as_deref(),
            Some(&b"kept-secret-00000000"[..])
        );
        // the next block of that class takes the freed slot, zeroed
        let again = a.alloc(5);
        assert_eq!(addr(&again), at);
        assert_eq!(a.read_raw(at, 32), Some(vec![0; 32]));
        a.free(again);
        a.free(keep);
    }

    #[test]
    fn each_size_gets_the_smallest_slot_that_fits() {
        let mut a = Arena::new(Limited::new(usize::MAX));
        for (len, cap) in [(1, 32), (32, 32), (33, 64), (700, 1024), (1025, 2048)] {
            let b = a.alloc(len);
            assert_eq!(b.capacity(), cap, "{len}");
            a.free(b);
        }
    }

    #[test]
    fn locking_that_runs_out_is_reported_per_block_and_recovers() {
        // room for three locked pages: the probe's (a 32-byte slot page) and two more
        let mut a = Arena::new(Limited::new(3));
        let per_page = a.page / 64;
        assert!(a.memory_locked(), "the probe page locks");
        let locked: Vec<Block> = (0..2 * per_page).map(|_| a.alloc(64)).collect();
        assert!(locked.iter().all(Block::locked));
        assert!(a.memory_locked());
        assert_eq!(a.take_failure(), None);
        // the third page cannot be locked: those blocks say so, and so does the arena
        let extra: Vec<Block> = (0..3).map(|_| a.alloc(64)).collect();
        assert!(extra.iter().all(|b| !b.locked()));
        assert!(!a.memory_locked());
        assert_eq!(a.stats().live_unlocked, 3);
        assert_eq!(
            a.stats().unlocked_pages,
            1,
            "one unlocked page, not one per block"
        );
        assert!(a.take_failure().is_some(), "reported once");
        assert_eq!(a.take_failure(), None, "and only once");
        // a locked slot freed is used before the unlocked page
        let mut locked = locked;
        let gone = locked.pop().expect("a block");
        let gone_at = addr(&gone);
        a.free(gone);
        let reused = a.alloc(40);
        assert!(reused.locked());
        assert_eq!(addr(&reused), gone_at);
        // once the unlocked blocks are gone, every live secret is locked again
        for b in extra {
            a.free(b);
        }
        assert_eq!(
            a.stats().unlocked_pages,
            0,
            "the unlocked page is given back"
        );
        assert!(a.memory_locked());
        a.free(reused);
        for b in locked {
            a.free(b);
        }
        assert_eq!(a.stats().live, 0);
    }

    #[test]
    fn nothing_lockable_means_not_locked_even_with_no_secret() {
        let mut a = Arena::new(Limited::new(0));
        assert!(!a.memory_locked());
        assert_eq!(a.stats().unlocked_pages, 0, "the probe page is given back");
        let b = a.alloc(10);
        assert!(!b.locked());
        assert!(!a.memory_locked());
        a.free(b);
        assert!(!a.memory_locked());
        assert!(a.take_failure().is_some());
    }

    #[test]
    fn big_blocks_that_cannot_lock_count_as_unlocked() {
        let mut a = Arena::new(Limited::new(1));
        let big = a.alloc(3 * a.page);
        assert!(!big.locked());
        assert_eq!(a.stats().unlocked_pages, 3);
        assert!(!a.memory_locked());
        a.free(big);
        assert_eq!(a.stats().unlocked_pages, 0);
        assert!(a.memory_locked(), "a one-page probe still locks");
    }
}
