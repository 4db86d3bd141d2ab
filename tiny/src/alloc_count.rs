//! The counting allocator and the executor thread's stack gauge: how the profile shows that its
//! boot path needs no heap and how much stack it uses.
//!
//! Allocations are counted once [`arm`] is called, by who made them:
//! - `own`: the executor thread outside any stand-in call: the profile's code, pxe-core's
//!   engines, embassy-net and smoltcp. Must stay 0 (a board has no heap).
//! - `tap`: the executor thread inside a call into the TAP stand-in ([`StandIn::Tap`], set by
//!   [`crate::board::Nic`] around `embassy-net-tuntap`'s `receive`, `transmit` and the tokens'
//!   `consume`, which allocate a `Vec` per frame). A board's Ethernet driver replaces it.
//! - `other_threads`: any other thread: async-io's reactor (the TAP's readiness), embassy-time's
//!   std alarm thread. A board has neither.
//!
//! With `RACKBOOT_TINY_ALLOC_TRACE=1` every `own` allocation prints a backtrace to stderr.
#![allow(unsafe_code)] // a global allocator and a stack scan are unsafe by nature

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The process allocator: the system's, counted.
pub struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static OWN: AtomicU64 = AtomicU64::new(0);
static TAP: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static EXECUTOR: Cell<bool> = const { Cell::new(false) };
    static STAND_IN: Cell<u8> = const { Cell::new(0) };
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// A hosted stand-in for a board part, for attributing its allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandIn {
    /// `embassy-net-tuntap`.
    Tap = 1,
}

/// Restores the previous stand-in marking when dropped.
pub struct Marked(u8);

impl StandIn {
    /// Marks the current thread as inside this stand-in until the guard drops.
    pub fn enter(self) -> Marked {
        Marked(STAND_IN.with(|s| s.replace(self as u8)))
    }

    /// Marks the current thread as outside every stand-in (a callback into the stack).
    pub fn leave() -> Marked {
        Marked(STAND_IN.with(|s| s.replace(0)))
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        STAND_IN.with(|s| s.set(self.0));
    }
}

/// Marks the calling thread as the executor's.
pub fn this_is_the_executor() {
    EXECUTOR.with(|e| e.set(true));
}

/// Starts counting (after start-up).
pub fn arm() {
    TRACE.store(
        std::env::var_os("RACKBOOT_TINY_ALLOC_TRACE").is_some(),
        Ordering::Relaxed,
    );
    ARMED.store(true, Ordering::SeqCst);
}

/// Allocations since [`arm`]: (own, tap, other threads).
pub fn counts() -> (u64, u64, u64) {
    (
        OWN.load(Ordering::Relaxed),
        TAP.load(Ordering::Relaxed),
        OTHER.load(Ordering::Relaxed),
    )
}

fn count() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let executor = EXECUTOR.try_with(Cell::get).unwrap_or(false);
    if !executor {
        OTHER.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if STAND_IN.try_with(Cell::get).unwrap_or(0) != 0 {
        TAP.fetch_add(1, Ordering::Relaxed);
        return;
    }
    OWN.fetch_add(1, Ordering::Relaxed);
    if TRACE.load(Ordering::Relaxed) && !TRACING.with(Cell::get) {
        TRACING.with(|t| t.set(true));
        eprintln!(
            "rackboot-tiny: allocation in the boot path:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        TRACING.with(|t| t.set(false));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics and
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Paint byte of unused stack.
const PAINT: u8 = 0xA5;
/// Lowest painted address and the paint point (the top of what the gauge measures).
static STACK_LOW: AtomicUsize = AtomicUsize::new(0);
static STACK_TOP: AtomicUsize = AtomicUsize::new(0);

/// Paints the calling thread's unused stack so [`stack_high_water`] can find the deepest byte
/// used since. Call just before handing the thread to the executor: the gauge measures from
/// here down, so the frames of start-up (large in a debug build) do not count.
#[inline(never)]
pub fn paint_stack() {
    let Some((low, _)) = stack_bounds() else {
        return;
    };
    let here = &low as *const usize as usize;
    // Leave this frame (the painting loop's own) alone; the executor's frames start above it.
    let end = here.saturating_sub(1024);
    let top = here;
    let mut p = low;
    while p < end {
        // SAFETY: [low, end) is this thread's mapped stack (pthread's bounds, guard excluded),
        // below every live frame of this thread.
        unsafe { std::ptr::write_volatile(p as *mut u8, PAINT) };
        p += 1;
    }
    STACK_LOW.store(low, Ordering::SeqCst);
    STACK_TOP.store(top, Ordering::SeqCst);
}

/// Deepest stack use of the painted thread below [`paint_stack`]'s caller, in bytes (0 if not
/// painted). Up to 1 KiB under the paint point is never painted: a use that shallow reads as 1 KiB.
pub fn stack_high_water() -> usize {
    let (low, top) = (
        STACK_LOW.load(Ordering::SeqCst),
        STACK_TOP.load(Ordering::SeqCst),
    );
    if low == 0 {
        return 0;
    }
    let mut p = low;
    while p < top {
        // SAFETY: the painted thread's stack stays mapped while the process runs (it never
        // exits); reading a byte another thread may write is a plain race on `u8`, acceptable
        // for a gauge, and done with a volatile read.
        if unsafe { std::ptr::read_volatile(p as *const u8) } != PAINT {
            break;
        }
        p += 1;
    }
    top.saturating_sub(p).max(1024)
}

fn stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let mut guard: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
            && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok {
            return None;
        }
        let low = addr as usize + guard + 4096;
        Some((low, addr as usize + size))
    }
}
