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
//! time (`scripts/bench`, scale part; BENCHMARKS.md).
//!
//! # Small chunks go back to the heap at once
//!
//! glibc keeps freed small chunks aside, unmerged: up to 7 per size in each thread's cache
//! (tcache) and, below 128 bytes, in the arena's fast bins. A drain frees a batch's worth
//! of small allocations (its session answer, upload URLs, index entries) on the threads
//! that did not allocate them, while sled allocates its nodes in between; the chunks kept
//! aside pin pages that would otherwise merge and be handed back, so the heap crept for
//! as long as the backlog lasted (a 100,000-frame drain: 24 → 27 MiB over its 70 s, with
//! 7 MB of 15 MB heap in use). With both off, freed chunks merge at once and the drain is
//! flat at ~23 MiB whatever the backlog, for ~6% more CPU in the drain (BENCHMARKS.md,
//! scale part). Fast bins are switched off with `mallopt`; the thread cache only through
//! the `GLIBC_TUNABLES` environment variable, which the dynamic loader reads before
//! `main`, so `edgecap run` sets it and executes itself again once ([`reexec_tuned`]),
//! then puts the variable back as the operator had it, so camera commands started later
//! run with glibc's defaults. `MALLOC_ARENA_MAX` or a `glibc.malloc.tcache_count` already
//! set by the operator turns all of this off: their tuning wins.

use std::sync::atomic::{AtomicBool, Ordering};

/// The variable the dynamic loader reads its tunables from.
const TUNABLES: &str = "GLIBC_TUNABLES";
/// The tunable [`reexec_tuned`] adds.
const TCACHE_OFF: &str = "glibc.malloc.tcache_count=0";
/// Set for the executed copy: the operator's `GLIBC_TUNABLES` (empty when they had none),
/// so it can be put back and the copy does not execute itself again.
const MARK: &str = "EDGECAP_GLIBC_TUNABLES_WAS";
/// This process is the executed copy, started with the thread cache off.
static TCACHE_OFF_HERE: AtomicBool = AtomicBool::new(false);
/// Why [`reexec_tuned`] could not execute this program again.
static NOT_TUNED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Executes this program again with glibc's thread cache switched off (see the module
/// doc), keeping its arguments, environment and process id; in the executed copy, puts
/// `GLIBC_TUNABLES` back as it was. Returns when nothing is to be done or the execution
/// failed ([`tuning`] says which). Call first thing in `edgecap run`, before any thread
/// starts.
pub fn reexec_tuned() {
    if let Some(why) = try_reexec() {
        let _ = NOT_TUNED.set(why);
    }
}

/// What [`reexec_tuned`] did, for a DEBUG line once logging is up: `Ok` when the thread
/// cache is off, else why not.
pub fn tuning() -> Result<(), &'static str> {
    if TCACHE_OFF_HERE.load(Ordering::Relaxed) {
        return Ok(());
    }
    Err(NOT_TUNED
        .get()
        .map_or("left to the operator's malloc settings", String::as_str))
}

/// [`reexec_tuned`]'s work: `Some(reason)` when executing again failed.
fn try_reexec() -> Option<String> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        if let Some(was) = std::env::var_os(MARK) {
            restore_tunables(was);
            TCACHE_OFF_HERE.store(true, Ordering::Relaxed);
            return None;
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return None;
        }
        let current = std::env::var_os(TUNABLES).unwrap_or_default();
        if current
            .to_string_lossy()
            .contains("glibc.malloc.tcache_count")
        {
            return None;
        }
        // The file's own path, not /proc/self/exe: the process name (journald's
        // `_COMM`, `ps`, `pgrep edgecap`) is taken from it.
        let exe = match std::env::current_exe() {
            Ok(p) if p.is_file() => p,
            Ok(p) => return Some(format!("{} is not a file any more", p.display())),
            Err(e) => return Some(format!("cannot find this program's file: {e}")),
        };
        let c = |b: &[u8]| CString::new(b).ok();
        let mut tuned = current.as_bytes().to_vec();
        if !tuned.is_empty() {
            tuned.push(b':');
        }
        tuned.extend_from_slice(TCACHE_OFF.as_bytes());
        let pair = |k: &[u8], v: &[u8]| c(&[k, b"=", v].concat());
        let env: Option<Vec<CString>> = std::env::vars_os()
            .filter(|(k, _)| k != TUNABLES && k != MARK)
            .map(|(k, v)| pair(k.as_bytes(), v.as_bytes()))
            .chain([
                pair(TUNABLES.as_bytes(), &tuned),
                pair(MARK.as_bytes(), current.as_bytes()),
            ])
            .collect();
        let argv: Option<Vec<CString>> = std::env::args_os().map(|a| c(a.as_bytes())).collect();
        let (Some(path), Some(argv), Some(env)) = (c(exe.as_os_str().as_bytes()), argv, env) else {
            return Some("an argument or variable holds a NUL byte".to_string());
        };
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        let (argv_p, env_p) = (ptrs(&argv), ptrs(&env));
        // execve itself, not `Command::exec`: that goes through execvp, which runs a file
        // the kernel refuses (ENOEXEC: an arm64 build under qemu-user without binfmt) as a
        // shell script instead of failing.
        #[allow(
            unsafe_code,
            reason = "std has no execve without execvp's fallback to /bin/sh"
        )]
        // SAFETY: `path`, `argv` and `env` are NUL-terminated strings that outlive the
        // call, and both pointer arrays end with a null pointer, as execve(2) requires.
        unsafe {
            libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
        }
        let e = std::io::Error::last_os_error();
        Some(format!("cannot execute {} again: {e}", exe.display()))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Puts `GLIBC_TUNABLES` back as the operator had it (`was` empty: unset) and removes the
/// mark.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn restore_tunables(was: std::ffi::OsString) {
    #[allow(
        unsafe_code,
        reason = "changing the environment is unsafe once threads exist; called before any"
    )]
    // SAFETY: called first thing in `edgecap run`, before the runtime, logging or any
    // other thread starts, so nothing reads the environment concurrently.
    unsafe {
        if was.is_empty() {
            std::env::remove_var(TUNABLES);
        } else {
            std::env::set_var(TUNABLES, was);
        }
        std::env::remove_var(MARK);
    }
}

/// Caps glibc's malloc arenas at one, serves frame-sized buffers from mmap and switches off
/// the fast bins. Call before any other thread starts; a no-op on other C libraries.
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
            // No fast bins: small chunks merge when freed (module doc).
            libc::mallopt(libc::M_MXFAST, 0);
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
