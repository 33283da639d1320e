//! The link policy under tokio's paused clock: a window closing mid-batch, newest first, a
//! daily budget. Local time follows the paused clock ([`TokioClock`]).

use super::*;

/// Local time that follows tokio's (paused) clock from `base`.
struct TokioClock {
    base: jiff::Zoned,
    t0: Instant,
}

impl crate::schedule::Clock for TokioClock {
    fn now(&self) -> jiff::Zoned {
        let d = jiff::SignedDuration::try_from(self.t0.elapsed()).unwrap();
        self.base.checked_add(d).unwrap()
    }
}

/// A sink over a slow link that sends frame after frame and stops between two frames
/// once told to, as the real sinks do; it records when each frame went.
struct Trickle {
    t0: Instant,
    per_frame: Duration,
    sent: Arc<Mutex<Vec<(u64, Duration)>>>,
}

impl Sink for Trickle {
    async fn send(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        let mut outcomes = Vec::new();
        for f in batch {
            if *stop.borrow() {
                break;
            }
            tokio::time::sleep(self.per_frame).await;
            self.sent.lock().unwrap().push((f.seq, self.t0.elapsed()));
            outcomes.push((f.seq, Outcome::Accepted));
        }
        Report {
            outcomes,
            verdict: Verdict::Ok,
            pending: None,
        }
    }

    async fn probe(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A window that closes in the middle of a batch: the batch stops at its end, nothing is
/// sent until the next window, and every frame arrives exactly once.
#[tokio::test(start_paused = true)]
async fn a_window_closing_mid_batch_stops_it_and_the_rest_waits_for_the_next_window() {
    let mut h = Harness::new();
    h.commit(40, 100);
    // 23:59:00 now; windows 00:00-00:01 and 00:03-00:05. A frame takes 2 s: a batch of 40
    // needs 80 s, so the first window (60 s) ends in the middle of it.
    let base: jiff::Zoned = "2026-11-26T23:59:00[UTC]".parse().unwrap();
    let mut cfg = upload_config(40, 1 << 30, 0);
    cfg.link.windows = crate::schedule::ActiveHours::new(vec![
        crate::schedule::Window::parse("00:00-00:01").unwrap(),
        crate::schedule::Window::parse("00:03-00:05").unwrap(),
    ]);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sink = Trickle {
        t0: h.t0,
        per_frame: Duration::from_secs(2),
        sent: Arc::clone(&sent),
    };
    let clock = Arc::new(TokioClock { base, t0: h.t0 });
    h.start_sink(cfg, sink, clock);
    // Closed first: the state says until when.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = h.stats.state.status();
    assert_eq!(st.state, "window closed", "{st:?}");
    assert!(st.until_ms.is_some());
    assert!(sent.lock().unwrap().is_empty(), "nothing before the window");
    h.until(Duration::from_secs(400), |h| h.waiting() == 0)
        .await;
    h.stop().await;
    let sent = sent.lock().unwrap().clone();
    // Every frame once.
    let mut seqs: Vec<u64> = sent.iter().map(|(s, _)| *s).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{sent:?}");
    // Each frame finished inside a window: 60..120 s or 240..360 s after 23:59:00 (a frame
    // that started before the end may finish just after it: 2 s).
    for (seq, at) in &sent {
        let t = at.as_secs_f64();
        let inside = (60.0..=122.0).contains(&t) || (240.0..=362.0).contains(&t);
        assert!(inside, "frame {seq} sent at {t} s, outside the windows");
    }
    assert!(
        sent.iter().any(|(_, at)| at.as_secs() < 125),
        "some in the first window"
    );
    assert!(
        sent.iter().any(|(_, at)| at.as_secs() > 235),
        "the rest in the second"
    );
}

/// `newest_first`: after an outage the freshest frames go first.
#[tokio::test(start_paused = true)]
async fn newest_first_sends_the_freshest_frames_first() {
    let mut h = Harness::new();
    h.commit(30, 100);
    let mut cfg = upload_config(10, 1 << 30, 0);
    cfg.link.order = crate::config::DrainOrder::NewestFirst;
    h.start(cfg, |_, b| accept(b), |_| Ok(()));
    h.until(Duration::from_secs(60), |h| h.waiting() == 0).await;
    h.stop().await;
    let sends = h.sends();
    assert_eq!(
        sends[0].seqs,
        (21..=30).rev().collect::<Vec<_>>(),
        "{sends:?}"
    );
    assert_eq!(
        sends[2].seqs,
        (1..=10).rev().collect::<Vec<_>>(),
        "{sends:?}"
    );
}

/// A daily budget: the uploader sends what fits, stops with `budget spent` until local
/// midnight, counts before it sends (the ledger is ahead of or equal to what went), and
/// goes on after the reset.
#[tokio::test(start_paused = true)]
async fn a_daily_budget_stops_uploads_until_midnight_and_the_ledger_leads_what_was_sent() {
    let mut h = Harness::new();
    h.commit(60, 10_000);
    // 23:50: ten minutes to the reset. 250 kB a day holds about 20 frames of 10 kB + 1 kB.
    let base: jiff::Zoned = "2026-11-26T23:50:00[UTC]".parse().unwrap();
    let mut cfg = upload_config(10, 1 << 30, 0);
    cfg.link.daily_budget = Some(250_000);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sink = Trickle {
        t0: h.t0,
        per_frame: Duration::from_millis(10),
        sent: Arc::clone(&sent),
    };
    h.start_sink(cfg, sink, Arc::new(TokioClock { base, t0: h.t0 }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while h.stats.state.status().state != "budget spent" {
        assert!(
            Instant::now() < deadline,
            "no budget spent: {:?}, sent {}",
            h.stats.state.status(),
            sent.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_day = sent.lock().unwrap().len() as u64;
    let ledger = h.queue.sent();
    assert_eq!(ledger.day, "2026-11-26");
    let sent_bytes = first_day * (10_000 + crate::upload::uploader::link::OVERHEAD_PER_FRAME);
    assert!(ledger.day_bytes >= sent_bytes, "{ledger:?} vs {sent_bytes}");
    assert!(
        ledger.day_bytes <= 250_000 + 11_000,
        "at most one frame over: {ledger:?}"
    );
    assert!(
        (15..=24).contains(&first_day),
        "{first_day} frames on the first day"
    );
    let st = h.stats.state.status();
    assert!(
        st.until_ms.is_some() && st.budget_left_bytes.is_some(),
        "{st:?}"
    );
    // Nothing more before midnight.
    tokio::time::sleep(Duration::from_secs(500)).await;
    assert_eq!(sent.lock().unwrap().len() as u64, first_day);
    // After midnight the next day's budget carries on.
    h.until(Duration::from_secs(300), |_| {
        sent.lock().unwrap().len() as u64 > first_day
    })
    .await;
    h.stop().await;
    assert_eq!(h.queue.sent().day, "2026-11-27");
}
