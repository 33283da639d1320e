//! The bandwidth cap (`[upload] max_upload_rate`): one token bucket shared by every
//! transfer of the sink, drawn on by the request bodies themselves as they go out. A body
//! is streamed in 16 KiB chunks, each waiting for its tokens, so parallel transfers share
//! the cap and the bytes on the wire follow it — not a sleep between requests, which would
//! let each request burst at line rate. The bucket starts empty and holds at most a tenth
//! of a second of traffic (and at least one chunk), which bounds a burst after an idle
//! spell.
//!
//! Written by hand: the rate-limiter crates (governor, …) count cells per request, not
//! bytes of a streamed body, and the bucket is twenty lines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Bytes handed to the connection at a time.
pub const CHUNK: usize = 16 * 1024;

/// A token bucket of bytes, whose rate a reload may change (or lift).
#[derive(Debug)]
pub struct Throttle {
    /// (tokens, last refill, rate in bytes per second; None: no cap)
    bucket: Mutex<(f64, Instant, Option<f64>)>,
    /// The cap as last set, readable without waiting (0: none).
    rate: std::sync::atomic::AtomicU64,
}

fn capacity(rate: f64) -> f64 {
    (rate / 10.0).max(CHUNK as f64)
}

impl Throttle {
    /// A cap of `bytes_per_sec` (None: none, bodies go as they are).
    pub fn new(bytes_per_sec: Option<u64>) -> Arc<Self> {
        let rate = bytes_per_sec.map(|r| r.max(1) as f64);
        Arc::new(Self {
            // Empty at first: a transfer starts at the cap, not with a burst.
            bucket: Mutex::new((0.0, Instant::now(), rate)),
            rate: std::sync::atomic::AtomicU64::new(bytes_per_sec.unwrap_or(0)),
        })
    }

    /// Changes the cap (a reload).
    pub async fn set_rate(&self, bytes_per_sec: Option<u64>) {
        let mut b = self.bucket.lock().await;
        b.2 = bytes_per_sec.map(|r| r.max(1) as f64);
        b.0 = b.0.min(b.2.map_or(0.0, capacity));
        self.rate.store(
            bytes_per_sec.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The cap, bytes per second, if any.
    pub fn rate(&self) -> Option<u64> {
        let r = self.rate.load(std::sync::atomic::Ordering::Relaxed);
        (r > 0).then_some(r)
    }

    /// Waits until `n` bytes may go (`n` at most a chunk; callers split bodies).
    pub async fn take(&self, n: usize) {
        let n = n as f64;
        // One waiter at a time holds the lock while it sleeps: the others queue behind it
        // (tokio's mutex is fair), so the bucket is shared in turn, not raced for.
        let mut b = self.bucket.lock().await;
        loop {
            let Some(rate) = b.2 else { return };
            let now = Instant::now();
            let refill = now.duration_since(b.1).as_secs_f64() * rate;
            b.0 = (b.0 + refill).min(capacity(rate).max(n));
            b.1 = now;
            if b.0 >= n {
                b.0 -= n;
                return;
            }
            let wait = Duration::from_secs_f64((n - b.0) / rate);
            tokio::time::sleep(wait).await;
        }
    }
}

/// How long a transfer of `len` bytes may take at least: at the cap shared by
/// `parallel` transfers, or at `floor` bytes per second, whichever is slower.
pub fn transfer_time(
    throttle: Option<&Arc<Throttle>>,
    len: u64,
    parallel: usize,
    floor: f64,
) -> Duration {
    let share = throttle
        .and_then(|t| t.rate())
        .map_or(floor, |r| (r as f64 / parallel.max(1) as f64).min(floor));
    Duration::from_secs_f64(len as f64 / share.max(1.0))
}

/// `image` as a request body: as it is without a cap, or streamed through `throttle`
/// in chunks. The caller sets `Content-Length` (a streamed body has none of its own).
pub fn body(throttle: Option<&Arc<Throttle>>, image: Bytes) -> reqwest::Body {
    let Some(t) = throttle.filter(|t| t.rate().is_some()) else {
        return image.into();
    };
    let t = Arc::clone(t);
    let chunks: Vec<Bytes> = (0..image.len())
        .step_by(CHUNK)
        .map(|at| image.slice(at..(at + CHUNK).min(image.len())))
        .collect();
    let stream = futures_util::stream::iter(chunks).then(move |c| {
        let t = Arc::clone(&t);
        async move {
            t.take(c.len()).await;
            Ok::<Bytes, std::convert::Infallible>(c)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

use futures_util::StreamExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn parallel_takers_share_the_rate() {
        let t = Throttle::new(Some(100_000));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let t = Arc::clone(&t);
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    t.take(CHUNK).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap_or_default();
        }
        // 100 chunks of 16 KiB at 100 kB/s (the bucket starts empty).
        let want = 100.0 * CHUNK as f64 / 100_000.0;
        let took = start.elapsed().as_secs_f64();
        assert!((took - want).abs() / want < 0.02, "{took} s, want {want} s");
    }
}
