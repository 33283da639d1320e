//! The pacer's unit tests: the sliding window, both branches of a 429, restarts, and a
//! small model of devices sharing one limit.

use super::*;

const W: Duration = Duration::from_secs(300);

#[test]
fn sliding_window_allows_the_limit_then_waits_for_the_oldest_to_expire() {
    let mut r = SlidingWindow::new(3, W);
    let t0 = Instant::now();
    for i in 0..3 {
        let t = t0 + Duration::from_secs(i * 10);
        assert_eq!(r.wait_time(t), Duration::ZERO);
        r.record(t);
    }
    let t = t0 + Duration::from_secs(30);
    assert_eq!(r.wait_time(t), Duration::from_secs(270));
    assert_eq!(r.available(t), 0);
    r.forget_last();
    assert_eq!(r.available(t), 1);
    assert_eq!(r.wait_time(t0 + W), Duration::ZERO);
}

#[test]
fn without_a_429_the_pacer_is_the_sliding_window_alone() {
    let t0 = Instant::now();
    let mut p = Pacer::new(15, W, t0).steady();
    for _ in 0..15 {
        assert_eq!(p.wait_time(t0), Duration::ZERO);
        p.record(t0);
    }
    assert_eq!(p.wait_time(t0), W);
    assert_eq!(p.rate(t0), 15.0);
    // A window later, a full burst again.
    assert_eq!(p.sessions_left(t0 + W), 15);
    assert_eq!(p.wait_time(t0 + W), Duration::ZERO);
}

#[test]
fn a_429_halves_the_rate_and_time_without_one_grows_it_back() {
    let t0 = Instant::now();
    let mut p = Pacer::new(15, W, t0).steady();
    p.record(t0);
    p.rate_limited(t0, None);
    assert_eq!(p.rate_limited_total(), 1);
    assert!((p.rate(t0) - 7.5).abs() < 1e-9);
    // Empty bucket at 7.5 per 300 s: the next session in about 40 s.
    let w = p.wait_time(t0).as_secs_f64();
    assert!((39.0..41.0).contains(&w), "{w}");
    // Repeated 429s: down to the floor, never below.
    for _ in 0..20 {
        p.rate_limited(t0, None);
    }
    assert_eq!(p.rate(t0), MIN_RATE);
    // The batch sizing plans for one session in the next window.
    assert_eq!(p.sessions_left(t0), 1);
    // From the floor, the next session comes within ~3 windows (the rate grows while
    // the device waits), not 100.
    let w = p.wait_time(t0).as_secs_f64() / W.as_secs_f64();
    assert!((2.5..3.5).contains(&w), "{w} windows");
    // Ten windows on, the rate has grown by INCREASE per window, gathering pace:
    // 0.2 × (10 + 10² / 4) = 7.
    let later = t0 + W * 10;
    assert!(
        (p.rate(later) - (MIN_RATE + 7.0)).abs() < 1e-6,
        "{}",
        p.rate(later)
    );
    // Near the last 429 it is plain AIMD: one window after a 429, +0.25 (the device
    // just had a session, so a 429 halves its rate).
    p.accepted(later);
    assert!(p.rate_limited(later, None));
    let r = p.rate(later);
    assert!((p.rate(later + W) - r - 0.25).abs() < 1e-6);
    // And it never grows past the configured limit.
    assert_eq!(p.rate(t0 + W * 10_000), 15.0);
}

#[test]
fn a_429_after_waiting_three_periods_is_bad_luck_the_rate_is_kept_and_the_try_comes_soon() {
    let t0 = Instant::now();
    let slot = W / 15; // 20 s
    let mut p = Pacer::new(15, W, t0).steady();
    // A crowd taught it 0.47 sessions per window (a period of ~640 s).
    for _ in 0..5 {
        assert!(p.rate_limited(t0, None));
    }
    p.accepted(t0);
    let rate = p.rate(t0);
    // Within three periods of that session, a 429 still halves the rate.
    let t1 = t0 + W;
    p.record(t1);
    assert!(p.rate_limited(t1, None));
    assert!(p.rate(t1) < rate);
    // Three of its periods without a session: a 429 keeps the rate (and the token),
    // and the next try comes a slot's time later, doubling with each 429 in a row.
    let t2 = t1 + Duration::from_secs_f64(3.0 / p.rate(t1) * 300.0 + 1.0);
    let rate = p.rate(t2);
    p.record(t2);
    assert!(!p.rate_limited(t2, None));
    assert!((p.rate(t2) - rate).abs() < 1e-9);
    // The second 429 since the last session (the first was at t1).
    assert_eq!(p.wait_time(t2), slot * 2);
    let mut t = t2;
    let mut waits = Vec::new();
    for _ in 0..20 {
        t += p.wait_time(t);
        p.record(t);
        assert!(!p.rate_limited(t, None));
        waits.push(p.wait_time(t).as_secs());
    }
    // 80 s, then at most 0.3 window (90 s) until the eighth 429 in a row, then that cap
    // grows by an eighth per 429: a platform that refuses for hours is asked less and
    // less often (the 22nd in a row waits 90 × 22 / 8 = 247.5 s).
    assert_eq!(&waits[..7], &[80, 90, 90, 90, 90, 90, 101], "{waits:?}");
    assert_eq!(waits[19], 247, "{waits:?}");
    // Accepted: back to plain AIMD, and a 429 now halves again.
    p.accepted(t);
    p.record(t);
    assert!(p.rate_limited(t, None));
    assert_eq!(p.rate_limited_total(), 5 + 1 + 1 + 20 + 1);
}

#[test]
fn retry_after_holds_the_next_session_and_a_refused_connection_costs_nothing() {
    let t0 = Instant::now();
    let mut p = Pacer::new(15, W, t0).steady();
    p.rate_limited(t0, Some(Duration::from_secs(120)));
    assert!(p.wait_time(t0) >= Duration::from_secs(120));
    let t1 = t0 + Duration::from_secs(120);
    // The bucket refilled meanwhile (7.5 per window → 3 tokens in 120 s).
    assert_eq!(p.wait_time(t1), Duration::ZERO);
    p.record(t1);
    p.forget_last();
    assert_eq!(p.wait_time(t1), Duration::ZERO);
}

#[test]
fn a_restart_goes_on_at_the_learnt_rate_grown_by_the_time_since() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pacer.json");
    let mut p = Pacer::new(15, W, t0).steady();
    for _ in 0..5 {
        p.rate_limited(t0, None);
    }
    let l = p.learnt(t0, 1_000_000);
    l.save(&path).expect("saved");
    let back = Learnt::load(&path).expect("loaded");
    assert_eq!(back, l);
    // Restarted at once: the same rate, one session allowed now, the next paced.
    let mut q = Pacer::resume(15, W, t0, back, Duration::ZERO).steady();
    assert!((q.rate(t0) - 15.0 / 32.0).abs() < 1e-9);
    assert_eq!(q.wait_time(t0), Duration::ZERO);
    q.record(t0);
    assert!(q.wait_time(t0) > W);
    // Restarted ten windows later: grown by ten increases.
    let mut q = Pacer::resume(15, W, t0, back, W * 10);
    assert!((q.rate(t0) - (15.0 / 32.0 + growth(0.0, 10.0))).abs() < 1e-9);
    // A file that is not ours: None.
    std::fs::write(&path, "garbage").expect("written");
    assert_eq!(Learnt::load(&path), None);
}

/// Devices that share one sliding window converge to similar shares: a small model of
/// the fleet (the benchmark `scripts/fleet` runs the real daemons).
#[test]
fn devices_sharing_one_limit_use_most_of_it_and_none_is_starved() {
    let n = 20;
    let t0 = Instant::now();
    let w = Duration::from_secs(10);
    let mut server = SlidingWindow::new(15, w);
    let mut devices: Vec<Pacer> = (0..n).map(|_| Pacer::new(15, w, t0)).collect();
    let mut next: Vec<Instant> = (0..n)
        .map(|i| t0 + Duration::from_millis(i as u64 * 37))
        .collect();
    let mut ok = vec![0u32; n];
    let end = t0 + w * 200;
    let warm = t0 + w * 20;
    let mut accepted_after_warm = 0u32;
    loop {
        let (i, &t) = next
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .expect("devices");
        if t > end {
            break;
        }
        let wait = devices[i].wait_time(t);
        if !wait.is_zero() {
            next[i] = t + wait;
            continue;
        }
        devices[i].record(t);
        if server.wait_time(t).is_zero() {
            server.record(t);
            devices[i].accepted(t);
            if t > warm {
                ok[i] += 1;
                accepted_after_warm += 1;
            }
        } else {
            devices[i].rate_limited(t, None);
        }
        next[i] = t + Duration::from_millis(50 + (i as u64 * 7) % 13);
    }
    let possible = 15.0 * 180.0;
    let used = f64::from(accepted_after_warm) / possible;
    assert!(used >= 0.8, "used {used:.2} of the limit");
    let min = *ok.iter().min().expect("devices");
    assert!(min > 0, "a device was starved: {ok:?}");
    // ~125 sessions each: chance alone spreads them ~1.45 (1.26–1.56 in runs of this
    // model); a device favoured or held back by the scheme shows as 2 or more.
    let max = *ok.iter().max().expect("devices");
    assert!(
        f64::from(max) / f64::from(min) < 2.0,
        "shares spread: {ok:?}"
    );
}
