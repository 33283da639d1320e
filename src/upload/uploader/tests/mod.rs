//! Unit tests of the uploader's state machine: a scripted [`Sink`] under tokio's paused
//! clock, over a real queue in a temporary directory (real files, real sled). Each test
//! commits frames, runs the uploader, and checks what the sink was asked, when (in
//! virtual time), and what the queue holds afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod link;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Controls, UploadStats, Uploader};
use crate::config::{
    BatchLimits, FsyncMode, OnFull, QueueConfig, RetryPolicy, SinkConfig, UploadConfig,
};
use crate::frame::FrameMeta;
use crate::ops::health::Beat;
use crate::queue::Queue;
use crate::upload::sink::{Frame, Outcome, Report, Sink, Verdict};

/// One call to the sink's `send`.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    seqs: Vec<u64>,
}

/// What the scripted sink saw.
#[derive(Default)]
struct Record {
    sends: Mutex<Vec<Sent>>,
    probes: Mutex<Vec<Duration>>,
}

type Answer = Box<dyn Fn(usize, &[Frame]) -> Report + Send + Sync>;
type ProbeAnswer = Box<dyn Fn(usize) -> Result<(), String> + Send + Sync>;

/// A sink that answers from a script and records every call.
struct Scripted {
    t0: Instant,
    rec: Arc<Record>,
    answer: Answer,
    probe: ProbeAnswer,
    /// A link of this many bytes per second: a send takes its images' bytes over it.
    link: Option<u64>,
}

impl Sink for Scripted {
    async fn send(&self, batch: Vec<Frame>, _stop: &watch::Receiver<bool>) -> Report {
        // The image handles read the queue's files, checksums verified.
        for f in &batch {
            let img = f.image().await.expect("image readable");
            assert_eq!(img.len(), f.image_len as usize);
        }
        let n = {
            let mut s = self.rec.sends.lock().unwrap();
            s.push(Sent {
                at: self.t0.elapsed(),
                seqs: batch.iter().map(|f| f.seq).collect(),
            });
            s.len() - 1
        };
        if let Some(rate) = self.link {
            let bytes: u64 = batch.iter().map(|f| u64::from(f.image_len)).sum();
            tokio::time::sleep(Duration::from_secs_f64(bytes as f64 / rate as f64)).await;
        }
        (self.answer)(n, &batch)
    }

    async fn probe(&self) -> Result<(), String> {
        let n = {
            let mut p = self.rec.probes.lock().unwrap();
            p.push(self.t0.elapsed());
            p.len() - 1
        };
        (self.probe)(n)
    }
}

fn accept(batch: &[Frame]) -> Report {
    Report {
        outcomes: batch.iter().map(|f| (f.seq, Outcome::Accepted)).collect(),
        verdict: Verdict::Ok,
        pending: None,
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    queue: Arc<Queue>,
    stats: Arc<UploadStats>,
    rec: Arc<Record>,
    stop_tx: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    t0: Instant,
    /// The scripted sink's link speed (bytes per second), if slow.
    link: Option<u64>,
}

fn upload_config(max_frames: usize, max_bytes: u64, max_age_secs: u64) -> UploadConfig {
    UploadConfig {
        batch: BatchLimits {
            max_frames,
            max_bytes,
            max_age: Duration::from_secs(max_age_secs),
        },
        retry: RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        max_attempts: 3,
        start_delay_max: Duration::ZERO,
        link: Default::default(),
        sink: SinkConfig::Directory {
            path: "/nonexistent".into(),
        },
    }
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(&QueueConfig {
            dir: dir.path().join("q"),
            max_bytes: 1 << 30,
            max_frames: 100_000,
            on_full: OnFull::DropOldest,
            fsync: FsyncMode::Grouped,
            commit_window: Duration::ZERO,
            buffer_frames: 8,
            index_cache_bytes: 1 << 20,
            receipts_max_bytes: 1 << 20,
            keep_delivered_bytes: 0,
        })
        .unwrap();
        Self {
            _dir: dir,
            queue: Arc::new(queue),
            stats: Arc::new(UploadStats::default()),
            rec: Arc::new(Record::default()),
            stop_tx: watch::channel(false).0,
            drain: watch::channel(false).0,
            task: None,
            t0: Instant::now(),
            link: None,
        }
    }

    /// Commits `n` frames of `bytes` image bytes each (one group commit).
    fn commit(&self, n: usize, bytes: usize) {
        let mut g = self.queue.group();
        for i in 0..n {
            let meta = FrameMeta {
                filename: format!("f-{}-{i}.jpg", self.queue.stats().counters.committed),
                mime: "image/jpeg".into(),
                camera: "cam0".into(),
                groups: vec!["main".into()],
                custom: Default::default(),
                ..FrameMeta::default()
            };
            let image: Vec<u8> = (0..bytes).map(|b| (b % 251) as u8).collect();
            g.add(&meta, &image).unwrap();
        }
        assert_eq!(g.commit().frames.len(), n);
    }

    fn start(
        &mut self,
        cfg: UploadConfig,
        answer: impl Fn(usize, &[Frame]) -> Report + Send + Sync + 'static,
        probe: impl Fn(usize) -> Result<(), String> + Send + Sync + 'static,
    ) {
        let sink = Scripted {
            t0: self.t0,
            rec: Arc::clone(&self.rec),
            answer: Box::new(answer),
            probe: Box::new(probe),
            link: self.link,
        };
        self.start_sink(cfg, sink, Arc::new(crate::schedule::SystemClock));
    }

    /// Starts the uploader over any sink, reading windows against `clock`.
    fn start_sink<S: Sink>(
        &mut self,
        cfg: UploadConfig,
        sink: S,
        clock: Arc<dyn crate::schedule::Clock>,
    ) {
        let cfg_copy = cfg.clone();
        let up = Uploader::new(
            Arc::clone(&self.queue),
            sink,
            cfg,
            Controls {
                stats: Arc::clone(&self.stats),
                stop: self.stop_tx.subscribe(),
                drain: self.drain.subscribe(),
                beat: Arc::new(Beat::new("upload")),
                settings: tokio::sync::watch::channel(cfg_copy).1,
                clock,
            },
        );
        self.task = Some(tokio::spawn(up.run()));
    }

    /// Waits (in virtual time, at most `limit`) until `done` holds.
    async fn until(&self, limit: Duration, done: impl Fn(&Self) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < end,
                "condition not met within {limit:?}; sends: {:?}",
                self.sends()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        self.stop_tx.send_replace(true);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    fn sends(&self) -> Vec<Sent> {
        self.rec.sends.lock().unwrap().clone()
    }

    fn waiting(&self) -> u64 {
        let s = self.queue.stats();
        s.pending.frames + s.inflight.frames
    }
}

#[tokio::test(start_paused = true)]
async fn full_batches_go_at_once_and_the_rest_waits_for_its_age() {
    let mut h = Harness::new();
    h.commit(25, 100);
    h.start(upload_config(10, 1 << 20, 30), |_, b| accept(b), |_| Ok(()));
    h.until(Duration::from_secs(120), |h| h.waiting() == 0)
        .await;
    let sends = h.sends();
    let sizes: Vec<usize> = sends.iter().map(|s| s.seqs.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert!(sends[1].at < Duration::from_secs(1), "{sends:?}");
    // The last five waited for the age of the oldest frame (seen at t = 0).
    assert!(sends[2].at >= Duration::from_secs(30), "{sends:?}");
    assert!(sends[2].at < Duration::from_secs(32), "{sends:?}");
    assert_eq!(h.queue.stats().counters.uploaded, 25);
    // Exactly batch_max_frames pending is a full batch: it goes without waiting.
    let before = h.t0.elapsed();
    h.commit(10, 100);
    h.until(Duration::from_secs(60), |h| h.waiting() == 0).await;
    let last = h.sends().pop().unwrap();
    assert_eq!(last.seqs.len(), 10);
    assert!(last.at - before < Duration::from_secs(2), "{last:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_cut_by_bytes() {
    let mut h = Harness::new();
    h.commit(12, 1000);
    // Each spool file is ~1,130 bytes: 4 fit in 4,700, and 4 left (~4,520 bytes) are not
    // a full batch, so they wait for their age.
    h.start(upload_config(500, 4700, 30), |_, b| accept(b), |_| Ok(()));
    h.until(Duration::from_secs(60), |h| h.waiting() == 0).await;
    let sends = h.sends();
    let sizes: Vec<usize> = sends.iter().map(|s| s.seqs.len()).collect();
    assert_eq!(sizes, vec![4, 4, 4]);
    assert!(sends[1].at < Duration::from_secs(1), "{sends:?}");
    assert!(sends[2].at >= Duration::from_secs(30), "{sends:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_frame_waits_for_max_age_and_drain_sends_at_once() {
    let mut h = Harness::new();
    h.commit(3, 100);
    h.start(
        upload_config(500, 1 << 20, 20),
        |_, b| accept(b),
        |_| Ok(()),
    );
    h.until(Duration::from_secs(60), |h| h.waiting() == 0).await;
    let first = h.sends();
    assert_eq!(first.len(), 1);
    assert!(first[0].at >= Duration::from_secs(20), "{first:?}");
    // With drain set (the daemon winding down), a new frame does not wait for its age.
    h.drain.send_replace(true);
    let before = h.t0.elapsed();
    h.commit(1, 100);
    h.until(Duration::from_secs(60), |h| h.waiting() == 0).await;
    let all = h.sends();
    assert_eq!(all.len(), 2);
    assert!(all[1].at - before < Duration::from_secs(2), "{all:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_honours_retry_after_and_keeps_every_frame() {
    let mut h = Harness::new();
    h.commit(5, 100);
    h.start(
        upload_config(500, 1 << 20, 0),
        |n, b| {
            if n < 2 {
                Report::retry_all(
                    b,
                    "busy",
                    Verdict::Backoff {
                        reason: "429".into(),
                        retry_after: Some(Duration::from_secs(45)),
                    },
                )
            } else {
                accept(b)
            }
        },
        |_| Ok(()),
    );
    h.until(Duration::from_secs(600), |h| h.waiting() == 0)
        .await;
    let sends = h.sends();
    assert_eq!(sends.len(), 3, "{sends:?}");
    for w in sends.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_secs(45), "{sends:?}");
    }
    let c = h.queue.stats().counters;
    assert_eq!((c.uploaded, c.dead), (5, 0));
    assert_eq!(
        h.stats.retried.load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn offline_probes_with_backoff_and_resumes_by_itself() {
    let mut h = Harness::new();
    h.commit(4, 100);
    h.start(
        upload_config(500, 1 << 20, 0),
        |n, b| {
            if n == 0 {
                Report::retry_all(b, "down", Verdict::Offline("connection refused".into()))
            } else {
                accept(b)
            }
        },
        |n| if n < 3 { Err("refused".into()) } else { Ok(()) },
    );
    h.until(Duration::from_secs(20), |h| !h.stats.state.online())
        .await;
    h.until(Duration::from_secs(600), |h| h.waiting() == 0)
        .await;
    let probes = h.rec.probes.lock().unwrap().clone();
    assert_eq!(probes.len(), 4, "{probes:?}");
    // Backoff: each wait at least as long as the one before (jitter aside, it doubles).
    let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(500)),
        "{gaps:?}"
    );
    assert!(gaps[2] > gaps[0], "{gaps:?}");
    let sends = h.sends();
    assert_eq!(sends.len(), 2);
    assert!(sends[1].at >= *probes.last().unwrap());
    assert!(h.stats.state.online());
    assert_eq!(h.queue.stats().counters.uploaded, 4);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_halved_until_the_bad_frame_is_alone_and_dead() {
    let mut h = Harness::new();
    h.commit(8, 100);
    let bad = 6u64;
    h.start(
        upload_config(8, 1 << 20, 0),
        move |_, b| {
            if b.iter().any(|f| f.seq == bad) {
                Report::retry_all(b, "refused", Verdict::Split("400 bad asset".into()))
            } else {
                accept(b)
            }
        },
        |_| Ok(()),
    );
    h.until(Duration::from_secs(120), |h| h.waiting() == 0)
        .await;
    let s = h.queue.stats();
    assert_eq!((s.counters.uploaded, s.dead.frames), (7, 1));
    let dead: Vec<u64> = h
        .queue
        .list()
        .into_iter()
        .filter(|l| l.state == crate::queue::FrameState::Dead)
        .map(|l| l.seq)
        .collect();
    assert_eq!(dead, vec![bad]);
    // Bisected: 8, then 4, 2, 1 around the bad frame (never one session per frame).
    let sizes: Vec<usize> = h.sends().iter().map(|s| s.seqs.len()).collect();
    assert_eq!(sizes.first(), Some(&8));
    assert!(sizes.len() <= 8, "{sizes:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_uploader_and_leaves_unsent_frames_pending() {
    let mut h = Harness::new();
    h.commit(6, 100);
    // Backs off for an hour: the uploader is in BackingOff when stop comes.
    h.start(
        upload_config(500, 1 << 20, 0),
        |_, b| {
            Report::retry_all(
                b,
                "busy",
                Verdict::Backoff {
                    reason: "503".into(),
                    retry_after: Some(Duration::from_secs(3600)),
                },
            )
        },
        |_| Ok(()),
    );
    h.until(Duration::from_secs(10), |h| !h.sends().is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    h.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = h.queue.stats();
    assert_eq!(
        (s.pending.frames, s.inflight.frames, s.dead.frames),
        (6, 0, 0)
    );
    assert_eq!(h.sends().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn on_a_slow_link_batches_are_cut_to_about_a_minute_each() {
    let mut h = Harness::new();
    // 120 frames of 20 kB over a 2 kB/s link: a batch of 100 would take 1,000 s.
    h.link = Some(2_000);
    h.commit(120, 20_000);
    h.start(
        upload_config(100, 64 << 20, 1),
        |_, b| accept(b),
        |_| Ok(()),
    );
    h.until(Duration::from_secs(4000), |h| h.waiting() == 0)
        .await;
    let sends = h.sends();
    let sizes: Vec<usize> = sends.iter().map(|s| s.seqs.len()).collect();
    // The first batch is sent as configured (nothing measured yet); every later one
    // carries what the link moves in about a minute (120 kB: 6 frames).
    assert_eq!(sizes[0], 100, "{sizes:?}");
    assert!(sizes[1..].iter().all(|&n| n <= 6), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 120);
    for w in sends[1..].windows(2) {
        assert!(w[1].at - w[0].at <= Duration::from_secs(65), "{sends:?}");
    }
    h.stop().await;
}

/// `start_delay_max_secs`: the first batch after start-up, and the first after an
/// outage, wait a random time within the bound, visibly; devices started together do
/// not send at the same instant.
#[tokio::test(start_paused = true)]
async fn the_first_batch_after_start_and_after_an_outage_waits_a_random_start_delay() {
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let mut h = Harness::new();
        h.commit(3, 100);
        let mut cfg = upload_config(500, 1 << 20, 0);
        cfg.start_delay_max = Duration::from_secs(60);
        // The second batch meets a dead link, the probes fail twice, then it is back.
        h.start(
            cfg,
            |n, b| {
                if n == 1 {
                    Report::retry_all(b, "down", Verdict::Offline("connection refused".into()))
                } else {
                    accept(b)
                }
            },
            |n| if n < 2 { Err("down".into()) } else { Ok(()) },
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        if h.sends().is_empty() {
            let st = h.stats.state.status();
            assert_eq!(st.state, "waiting", "{st:?}");
            assert_eq!(st.reason.as_deref(), Some("start delay (spreads a fleet)"));
        }
        h.until(Duration::from_secs(61), |h| h.sends().len() == 1)
            .await;
        let first = h.sends()[0].at;
        assert!(first <= Duration::from_secs(60), "{first:?}");
        firsts.push(first);
        // Then an outage: the batch after the link is back waits again (within 60 s of
        // the probe that found it back).
        h.commit(2, 100);
        h.until(Duration::from_secs(600), |h| h.waiting() == 0)
            .await;
        let sends = h.sends();
        assert_eq!(sends.len(), 3, "{sends:?}");
        let back = *h.rec.probes.lock().unwrap().last().unwrap();
        assert!(sends[2].at >= back, "{sends:?} probe {back:?}");
        assert!(sends[2].at - back <= Duration::from_secs(60), "{sends:?}");
        h.stop().await;
    }
    firsts.sort();
    firsts.dedup();
    assert!(firsts.len() >= 5, "not spread: {firsts:?}");
}
