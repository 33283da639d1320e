//! The one thread that async code makes its queue calls on ([`call`]).
//!
//! Queue calls block (sled, fsync), so async code cannot make them on its own threads.
//! It used to hand each to tokio's blocking pool, which runs a call on whichever of its
//! threads is idle. That costs memory, not time: sled frees the index nodes a change
//! replaced through epoch-based reclamation (crossbeam-epoch), each thread keeping its
//! replaced nodes in a bag of its own (up to 64 of them) until it touches the index
//! again. Spread over the pool's threads, a drain left several such bags behind: with
//! every queue call on one thread, draining 10,000 frames peaked at 28 MiB of RSS instead
//! of 30–31 (own memory 16–17 MiB instead of 19–21) for the same wall time.
//!
//! Little is lost by serialising the calls: they take the queue's lock anyway (a call
//! stalled on the disk held the others up before too, only later). Work that
//! blocks without touching the index (reading an image for a PUT, writing the textfile)
//! stays on tokio's blocking pool, so a slow upload never holds queue calls up. The commit
//! thread and the inbox taker call the queue directly, from threads of their own.
//!
//! A call that panics is caught: the caller sees `None` (as it would see a `JoinError`
//! from `spawn_blocking`) and the thread goes on with the next call.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel, sync_channel};

use tracing::error;

type Job = Box<dyn FnOnce() + Send>;

/// The queue thread's inbox, started at the first call (None if it could not start).
static CALLS: OnceLock<Option<Sender<Job>>> = OnceLock::new();

fn start() -> Option<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("edgecap-queue".into())
        .spawn(move || {
            for job in rx {
                // The job's result channel is dropped with it: the caller gets None.
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            error!(error = %e, "cannot start the queue thread; queue calls use the blocking pool");
            None
        }
    }
}

/// Runs `f` on the queue thread and waits for it without blocking the async threads;
/// `None` if `f` panicked. Falls back to tokio's blocking pool if the thread could not
/// be started.
///
/// The wait itself is a blocking-pool task that only waits (it touches no index), so
/// that tokio counts the call as work under way: with its clock paused (the uploader's
/// tests), time does not jump ahead while a queue call runs.
pub async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let Some(calls) = CALLS.get_or_init(start).clone() else {
        return tokio::task::spawn_blocking(f).await.ok();
    };
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // The thread is gone (it never ends on its own): run the call here.
        if let Err(back) = calls.send(job) {
            let _ = catch_unwind(AssertUnwindSafe(back.0));
        }
        rx.recv().ok()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_on_one_thread_and_a_panic_is_none_not_the_end() {
        let first = call(|| std::thread::current().id()).await;
        let name = call(|| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(name.flatten().as_deref(), Some("edgecap-queue"));
        #[allow(clippy::panic, reason = "the test of a panicking call")]
        let panicked: Option<()> = call(|| panic!("a queue call failed")).await;
        assert!(panicked.is_none());
        let after = call(|| std::thread::current().id()).await;
        assert!(first.is_some());
        assert_eq!(first, after, "the same thread goes on after a panic");
        assert_ne!(first, Some(std::thread::current().id()));
    }
}
