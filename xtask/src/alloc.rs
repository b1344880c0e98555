//! The binary's allocator policy (mimalloc is `xtask`'s global allocator, see `main.rs`).
//!
//! Freed pages are kept by default: mimalloc would purge them after a second, and the next
//! training step's buffers would then fault in freshly zeroed pages (`clear_page_erms` was a
//! third of the step's main thread; the step gains ~30 %, BENCHMARKS.md). The resident set
//! then stays at its high-water mark.
//!
//! Mixed precision is chosen for memory, and there keeping freed pages costs it: the half
//! path's transient buffers (the casts of activations, and in bf16 flex's f32 copies of both
//! matmul operands) come in sizes that retained activations later fragment, and the kept
//! pages pile up (Llama-3.2-1B LoRA-8 2 x 256 in f16: 7411 MiB kept vs 5807 MiB purged;
//! BENCHMARKS.md). A half-precision run therefore lets mimalloc return freed pages after its
//! default delay.

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (mimalloc v3's default: 1000 ms;
/// -1: never purge).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc v3's default purge delay (ms).
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Never hand freed pages back to the kernel (the default of every command, set at start).
pub fn keep_freed_pages() {
    // SAFETY: sets a process-wide allocator option; mimalloc documents options as settable
    // at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Return freed pages to the kernel after mimalloc's default delay (half-precision training).
pub fn return_freed_pages() {
    // SAFETY: as in `keep_freed_pages`.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, DEFAULT_PURGE_DELAY_MS) }
}

/// The policy for a training run in `precision`.
pub fn for_precision(precision: flexi_burn::Precision) {
    if precision == flexi_burn::Precision::F32 {
        keep_freed_pages();
    } else {
        return_freed_pages();
    }
}
