//! The measured speed of the link, and the batch size that fits it.
//!
//! A batch is sent in one platform session; when a stop (or a crash) comes in the middle,
//! the next run sends it again. On a slow link a batch sized for a fast one takes minutes,
//! so a device stopped every few minutes would never finish one. [`LinkRate`] measures
//! the goodput of the batches sent (bytes over the wall time of the send, an exponentially
//! weighted mean) and caps a batch's bytes so that one batch takes about
//! [`TARGET_BATCH_TIME`]. Until a batch has been measured, the configured size holds.

use std::time::Duration;

/// How long one batch should take to send.
pub const TARGET_BATCH_TIME: Duration = Duration::from_secs(60);

/// Sends shorter than this say more about latency than about the link: not measured.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

/// Weight of the newest sample.
const ALPHA: f64 = 0.5;

/// The link's measured goodput.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkRate {
    bytes_per_sec: Option<f64>,
}

impl LinkRate {
    /// Records a batch of `bytes` sent in `took`.
    pub fn sample(&mut self, bytes: u64, took: Duration) {
        if took < MIN_SAMPLE || bytes == 0 {
            return;
        }
        let r = bytes as f64 / took.as_secs_f64();
        self.bytes_per_sec = Some(match self.bytes_per_sec {
            Some(old) => old * (1.0 - ALPHA) + r * ALPHA,
            None => r,
        });
    }

    /// The measured goodput, bytes per second.
    pub fn bytes_per_sec(&self) -> Option<f64> {
        self.bytes_per_sec
    }

    /// `max_bytes`, or less when the link would take longer than [`TARGET_BATCH_TIME`]
    /// to carry it (never below `floor`, one frame's worth).
    pub fn fit(&self, max_bytes: u64, floor: u64) -> u64 {
        match self.bytes_per_sec {
            Some(r) => {
                let fits = (r * TARGET_BATCH_TIME.as_secs_f64()) as u64;
                max_bytes.min(fits.max(floor))
            }
            None => max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_link_gets_batches_that_fit_the_target_time() {
        let mut l = LinkRate::default();
        assert_eq!(l.fit(64 << 20, 1000), 64 << 20, "unmeasured: as configured");
        // 2 MB/s: 120 MB fit in a minute, more than configured.
        l.sample(20_000_000, Duration::from_secs(10));
        assert_eq!(l.fit(64 << 20, 1000), 64 << 20);
        // 16 Mbit/s measured from now on (2 MB/s -> ~1 MB/s mean after one sample).
        let mut slow = LinkRate::default();
        slow.sample(2_000_000, Duration::from_secs(1));
        assert_eq!(slow.fit(1 << 30, 1000), 120_000_000);
        slow.sample(1_000_000, Duration::from_secs(10));
        assert_eq!(slow.fit(1 << 30, 1000), 63_000_000);
        // Too short to tell: ignored. A floor of one frame always holds.
        slow.sample(1, Duration::from_millis(10));
        assert_eq!(slow.fit(1 << 30, 1000), 63_000_000);
        let mut crawl = LinkRate::default();
        crawl.sample(10, Duration::from_secs(10));
        assert_eq!(crawl.fit(1 << 30, 225_000), 225_000);
    }
}
