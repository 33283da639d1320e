//! Process-wide memory settings, applied once at the start of `edgecap run`.
//!
//! glibc's malloc gives each thread that meets contention an arena of its own (up to 8 per
//! core) and rarely hands freed arena memory back. The daemon's threads (tokio workers, the
//! blocking pool that reads spool files, camera and commit threads) each allocate a little
//! per frame, so while a backlog drains the resident set grew by ~15 MiB of idle arena
//! memory (measured in `tests/resources.rs`: 17 → 33 MiB with a 10,000-frame backlog; with
//! two arenas it stayed near 22 MiB). One arena does better still: the peak of a drain is
//! 2–4 MiB lower at 10,000 frames and ~8 MiB lower at 100,000 (the index's nodes and a
//! batch's allocations no longer leave free memory behind in two heaps), for the same CPU
//! time (`scripts/bench`, scale part; BENCHMARKS.md). The threads spend their time in I/O,
//! and glibc's per-thread cache serves their small allocations without the arena's lock.

/// Caps glibc's malloc arenas at one and serves frame-sized buffers from mmap. Call before
/// any other thread starts; a no-op on other C libraries.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // MALLOC_ARENA_MAX set by the operator wins.
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        #[allow(
            unsafe_code,
            reason = "mallopt(3) has no safe wrapper; it only sets a tunable, called before other threads exist"
        )]
        // SAFETY: mallopt takes two integers and changes an allocator setting; no memory
        // is passed and no other thread allocates yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            // Frame-sized buffers (64 KiB and up: JPEGs, spool reads, PUT bodies) come
            // straight from mmap and go back to the kernel when freed. A fixed threshold
            // also stops glibc from raising it to the frame size after the first free,
            // after which every frame buffer stayed in the heap: -2 MiB peak RSS while a
            // 10,000-frame backlog drains (BENCHMARKS.md).
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        }
    }
}

/// Hands the free memory at the top and in the middle of glibc's heaps back to the kernel
/// (`malloc_trim(0)`). Called after the queue is opened (the reconcile reads every spool
/// file's header) and after each upload batch, so a burst does not stay resident; a
/// no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(
            unsafe_code,
            reason = "malloc_trim(3) has no safe wrapper; it only returns free pages"
        )]
        // SAFETY: malloc_trim takes an integer, touches only the allocator's free lists
        // (under its own locks) and is safe to call from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
