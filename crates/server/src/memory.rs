//! Allocator settings for a small box.

/// glibc raises its mmap threshold after large frees, so a 12 MiB argon2 buffer ends up
/// in a thread's heap and its pages stay resident after the hash. Fixing the threshold
/// keeps large buffers in their own mappings, returned on free; fewer arenas keep
/// per-thread heaps from each holding freed memory.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Allocations from this size up get their own mapping (glibc's initial default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;
