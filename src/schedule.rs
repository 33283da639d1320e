//! Daily time windows in local time: a camera's `active_hours`, during which it captures.
//!
//! A window is `"HH:MM-HH:MM"`; one whose end is before its start runs over midnight
//! (`"22:00-06:00"`), `"24:00"` is allowed as an end. Outside every window the camera's
//! source is closed (a command child is stopped, a USB camera released) and the capture
//! thread sleeps until the next window opens. Time comes from a [`Clock`], so tests drive
//! the schedule with an injected one; daylight-saving changes are handled by computing the
//! next opening as a zoned date-time, not by adding 24 hours.

use std::time::Duration;

use jiff::civil::Time;
use jiff::{ToSpan, Zoned};

/// One window, as minutes since local midnight; `end` may be ≤ `start` (over midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

/// A camera's capture windows; empty means always active.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveHours {
    windows: Vec<Window>,
}

/// Where time comes from.
pub trait Clock: Send + Sync {
    /// The current local date-time.
    fn now(&self) -> Zoned;
}

/// The system clock in the system time zone (`TZ`, else `/etc/localtime`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Zoned {
        Zoned::now()
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

impl Window {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a window like \"06:00-20:00\" (24-hour HH:MM-HH:MM)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_hhmm(a).ok_or_else(bad)?,
            parse_hhmm(b).ok_or_else(bad)?,
        );
        if start == 24 * 60 {
            return Err(format!("`{s}`: a window cannot start at 24:00"));
        }
        if start == end {
            return Err(format!(
                "`{s}` is empty (start equals end); leave active_hours out to capture all day"
            ));
        }
        Ok(Self { start, end })
    }

    fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl ActiveHours {
    /// A schedule from parsed windows.
    pub fn new(windows: Vec<Window>) -> Self {
        Self { windows }
    }

    /// Whether any window is configured.
    pub fn is_always(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether capture is on at `now`.
    pub fn is_active(&self, now: &Zoned) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let t = now.time();
        let minute =
            u16::try_from(t.hour()).unwrap_or(0) * 60 + u16::try_from(t.minute()).unwrap_or(0);
        self.windows.iter().any(|w| w.contains(minute))
    }

    /// `None` when active at `now`; otherwise how long until the next window opens.
    pub fn until_active(&self, now: &Zoned) -> Option<Duration> {
        if self.is_active(now) {
            return None;
        }
        let mut best: Option<Duration> = None;
        for w in &self.windows {
            let start = Time::new(
                i8::try_from(w.start / 60).unwrap_or(0),
                i8::try_from(w.start % 60).unwrap_or(0),
                0,
                0,
            )
            .unwrap_or(Time::midnight());
            // Today's opening, or tomorrow's if it has passed. A gap in local time (the
            // spring DST jump) is resolved by jiff's compatible disambiguation.
            for day in 0..2i64 {
                let Ok(date) = now.date().checked_add(day.days()) else {
                    continue;
                };
                let Ok(at) = date.to_datetime(start).to_zoned(now.time_zone().clone()) else {
                    continue;
                };
                if at > *now {
                    let d = now
                        .duration_until(&at)
                        .unsigned_abs()
                        .max(Duration::from_secs(1));
                    best = Some(best.map_or(d, |b| b.min(d)));
                    break;
                }
            }
        }
        Some(best.unwrap_or(Duration::from_secs(60)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A clock the test moves by hand.
    struct FakeClock(Mutex<Zoned>);
    impl Clock for FakeClock {
        fn now(&self) -> Zoned {
            self.0.lock().unwrap().clone()
        }
    }

    fn at(s: &str) -> Zoned {
        s.parse().unwrap()
    }

    fn hours(ws: &[&str]) -> ActiveHours {
        ActiveHours::new(ws.iter().map(|w| Window::parse(w).unwrap()).collect())
    }

    #[test]
    fn windows_parse_and_bad_ones_are_refused() {
        assert!(Window::parse("06:00-20:00").is_ok());
        assert!(Window::parse("22:30-06:15").is_ok());
        assert!(Window::parse("00:00-24:00").is_ok());
        for bad in [
            "6:00-20:00",
            "06:00",
            "06:00-06:00",
            "25:00-26:00",
            "06:60-07:00",
            "24:00-01:00",
            "x",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_injected_clock_drives_the_schedule_through_a_day() {
        let h = hours(&["06:00-20:00"]);
        let clock = FakeClock(Mutex::new(at("2026-06-10T05:59:30[Europe/Berlin]")));
        assert!(!h.is_active(&clock.now()));
        assert_eq!(h.until_active(&clock.now()), Some(Duration::from_secs(30)));
        *clock.0.lock().unwrap() = at("2026-06-10T06:00:00[Europe/Berlin]");
        assert!(h.is_active(&clock.now()));
        assert_eq!(h.until_active(&clock.now()), None);
        *clock.0.lock().unwrap() = at("2026-06-10T19:59:59[Europe/Berlin]");
        assert!(h.is_active(&clock.now()));
        *clock.0.lock().unwrap() = at("2026-06-10T20:00:00[Europe/Berlin]");
        assert!(!h.is_active(&clock.now()));
        assert_eq!(
            h.until_active(&clock.now()),
            Some(Duration::from_secs(10 * 3600))
        );
    }

    #[test]
    fn windows_over_midnight_and_several_windows() {
        let h = hours(&["22:00-02:00", "12:00-13:00"]);
        for (t, on) in [
            ("23:30", true),
            ("01:59", true),
            ("02:00", false),
            ("12:30", true),
            ("13:00", false),
            ("21:59", false),
        ] {
            let z = at(&format!("2026-03-01T{t}:00[UTC]"));
            assert_eq!(h.is_active(&z), on, "{t}");
        }
        // At 13:00 the next opening is 22:00 the same day.
        let z = at("2026-03-01T13:00:00[UTC]");
        assert_eq!(h.until_active(&z), Some(Duration::from_secs(9 * 3600)));
        // At 02:00 it is 12:00.
        let z = at("2026-03-01T02:00:00[UTC]");
        assert_eq!(h.until_active(&z), Some(Duration::from_secs(10 * 3600)));
    }

    #[test]
    fn the_next_opening_follows_local_time_across_a_dst_change() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 → 03:00: from 20:00 the
        // evening before to 06:00 is 9 hours of real time, not 10.
        let h = hours(&["06:00-20:00"]);
        let z = at("2026-03-28T20:00:00[Europe/Berlin]");
        assert_eq!(h.until_active(&z), Some(Duration::from_secs(9 * 3600)));
        // And falls back on 2026-10-25: 11 hours.
        let z = at("2026-10-24T20:00:00[Europe/Berlin]");
        assert_eq!(h.until_active(&z), Some(Duration::from_secs(11 * 3600)));
    }

    #[test]
    fn no_windows_means_always_active() {
        let h = ActiveHours::default();
        assert!(h.is_always());
        assert!(h.is_active(&at("2026-01-01T03:00:00[UTC]")));
        assert_eq!(h.until_active(&at("2026-01-01T03:00:00[UTC]")), None);
    }
}
