//! Daily time windows in local time: a camera's `active_hours`, during which it captures,
//! and the uploader's `windows`, during which it sends.
//!
//! A window is `"HH:MM-HH:MM"`, optionally after the days it opens on (`"sat,sun
//! 00:00-24:00"`, `"mon-fri 22:00-06:00"`); one whose end is before its start runs over
//! midnight (`"22:00-06:00"`) and belongs to the day it starts on; `"24:00"` is allowed as
//! an end. Outside every window the camera's
//! source is closed (a command child is stopped, a USB camera released) and the capture
//! thread sleeps until the next window opens. Time comes from a [`Clock`], so tests drive
//! the schedule with an injected one; daylight-saving changes are handled by computing the
//! next opening as a zoned date-time, not by adding 24 hours.

use std::time::Duration;

use jiff::civil::Time;
use jiff::{ToSpan, Zoned};

/// One window: minutes since local midnight, on some days of the week; `end` may be ≤
/// `start` (over midnight: the window belongs to the day it starts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
    /// Days it opens on: bit 0 Monday … bit 6 Sunday.
    days: u8,
}

/// Every day of the week.
const ALL_DAYS: u8 = 0x7f;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Daily windows in local time; empty means always. A camera's `active_hours` and the
/// uploader's `windows` (upload windows) are both one of these.
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

/// `mon` … `sun`, or the full names (`monday`, `mondays`), any case.
fn day_index(s: &str) -> Option<u8> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let s = s.trim().to_ascii_lowercase();
    (0..7u8).find(|&i| {
        let i = usize::from(i);
        s == DAY_NAMES[i] || s == FULL[i] || s.strip_suffix('s') == Some(FULL[i])
    })
}

/// `"sat,sun"`, `"mon-fri"`, `"mon-wed,sat"` as a day mask.
fn parse_days(s: &str) -> Option<u8> {
    let mut mask = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day_index(part)?,
        }
    }
    (mask != 0).then_some(mask)
}

/// Minutes since local midnight.
fn minute_of_day(z: &Zoned) -> u16 {
    let t = z.time();
    u16::try_from(t.hour()).unwrap_or(0) * 60 + u16::try_from(t.minute()).unwrap_or(0)
}

/// Monday = 0 … Sunday = 6.
fn weekday(z: &Zoned) -> u8 {
    u8::try_from(z.weekday().to_monday_zero_offset()).unwrap_or(0)
}

impl Window {
    /// Parses `"HH:MM-HH:MM"`, optionally after days: `"sat,sun 00:00-24:00"`,
    /// `"mon-fri 22:00-06:00"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a window like \"06:00-20:00\" or \"sat,sun 00:00-24:00\" (days optional, 24-hour HH:MM-HH:MM)"
            )
        };
        let (days, range) = match s.trim().split_once(' ') {
            Some((d, r)) => (parse_days(d).ok_or_else(bad)?, r.trim()),
            None => (ALL_DAYS, s.trim()),
        };
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_hhmm(a).ok_or_else(bad)?,
            parse_hhmm(b).ok_or_else(bad)?,
        );
        if start == 24 * 60 {
            return Err(format!("`{s}`: a window cannot start at 24:00"));
        }
        if start == end {
            return Err(format!(
                "`{s}` is empty (start equals end); leave the key out for all day"
            ));
        }
        Ok(Self { start, end, days })
    }

    fn on(self, day: u8) -> bool {
        self.days & (1 << (day % 7)) != 0
    }

    fn contains(self, day: u8, minute: u16) -> bool {
        if self.start < self.end {
            self.on(day) && (self.start..self.end).contains(&minute)
        } else {
            (self.on(day) && minute >= self.start) || (self.on((day + 6) % 7) && minute < self.end)
        }
    }
}

/// `minutes` since midnight as a time of day (24:00 is the next midnight: None).
fn time_of(minutes: u16) -> Option<Time> {
    if minutes >= 24 * 60 {
        return None;
    }
    Time::new(
        i8::try_from(minutes / 60).ok()?,
        i8::try_from(minutes % 60).ok()?,
        0,
        0,
    )
    .ok()
}

/// The instant `minutes` after local midnight of `day_offset` days after `now`'s date.
fn at_minutes(now: &Zoned, day_offset: i64, minutes: u16) -> Option<Zoned> {
    let (days, minutes) = match time_of(minutes) {
        Some(t) => (day_offset, t),
        None => (day_offset + 1, Time::midnight()),
    };
    let date = now.date().checked_add(days.days()).ok()?;
    // A gap in local time (the spring DST jump) is resolved by jiff's compatible
    // disambiguation.
    date.to_datetime(minutes)
        .to_zoned(now.time_zone().clone())
        .ok()
}

fn until(now: &Zoned, at: &Zoned) -> Duration {
    now.duration_until(at)
        .unsigned_abs()
        .max(Duration::from_secs(1))
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

    /// Whether `now` is inside a window.
    pub fn is_active(&self, now: &Zoned) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let (day, minute) = (weekday(now), minute_of_day(now));
        self.windows.iter().any(|w| w.contains(day, minute))
    }

    /// `None` when active at `now`; otherwise how long until the next window opens.
    pub fn until_active(&self, now: &Zoned) -> Option<Duration> {
        if self.is_active(now) {
            return None;
        }
        let today = weekday(now);
        let mut best: Option<Duration> = None;
        for w in &self.windows {
            // The next 8 days cover every weekly window.
            for offset in 0..8i64 {
                let day = (today + u8::try_from(offset).unwrap_or(0)) % 7;
                if !w.on(day) {
                    continue;
                }
                let Some(at) = at_minutes(now, offset, w.start) else {
                    continue;
                };
                if at > *now {
                    let d = until(now, &at);
                    best = Some(best.map_or(d, |b| b.min(d)));
                    break;
                }
            }
        }
        Some(best.unwrap_or(Duration::from_secs(60)))
    }

    /// `None` when always active or inactive at `now`; otherwise how long until the
    /// current stretch of windows closes (adjacent windows, like `22:00-24:00` and
    /// `00:00-06:00`, count as one stretch).
    pub fn until_inactive(&self, now: &Zoned) -> Option<Duration> {
        if self.windows.is_empty() || !self.is_active(now) {
            return None;
        }
        let mut at = now.clone();
        // A week of windows back to back is "always" for our purposes: stop after it.
        for _ in 0..(7 * self.windows.len() + 1) {
            let (day, minute) = (weekday(&at), minute_of_day(&at));
            // The latest end among the windows open at `at`.
            let mut end: Option<Zoned> = None;
            for w in self.windows.iter().filter(|w| w.contains(day, minute)) {
                // Over midnight and opened yesterday: it ends today; otherwise it ends
                // today, or tomorrow when it runs over midnight.
                let offset = if w.start < w.end || minute < w.end {
                    0
                } else {
                    1
                };
                if let Some(e) = at_minutes(&at, offset, w.end) {
                    end = Some(match end {
                        Some(x) if x >= e => x,
                        _ => e,
                    });
                }
            }
            let end = end?;
            if !self.is_active(&end) || end <= at {
                return Some(until(now, &end));
            }
            at = end;
        }
        None
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
    fn days_limit_a_window_and_an_overnight_window_belongs_to_its_first_day() {
        assert!(Window::parse("sat,sun 00:00-24:00").is_ok());
        assert!(Window::parse("mon-fri 22:00-06:00").is_ok());
        assert!(Window::parse("fri-mon 08:00-09:00").is_ok());
        assert!(Window::parse("saturday 08:00-09:00").is_ok());
        for bad in [
            "sa 00:00-01:00",
            "mon,,tue 00:00-01:00",
            "mon-xyz 00:00-01:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        let h = hours(&["mon-fri 22:00-06:00", "sat,sun 00:00-24:00"]);
        // 2026-11-27 is a Friday.
        for (t, on) in [
            ("2026-11-27T21:59:00", false),
            ("2026-11-27T23:00:00", true),
            ("2026-11-28T05:59:00", true), // Saturday morning: Friday's night window
            ("2026-11-28T12:00:00", true), // Saturday
            ("2026-11-30T05:00:00", false), // Monday morning: no Sunday night window
            ("2026-11-30T12:00:00", false), // Monday noon
            ("2026-12-01T05:00:00", true), // Tuesday morning: Monday's night window
        ] {
            let z = at(&format!("{t}[UTC]"));
            assert_eq!(h.is_active(&z), on, "{t}");
        }
        // Monday noon: the next opening is Monday 22:00.
        let z = at("2026-11-30T12:00:00[UTC]");
        assert_eq!(h.until_active(&z), Some(Duration::from_secs(10 * 3600)));
        // Saturday noon: open until Sunday 24:00 (the weekend runs on without a gap).
        let z = at("2026-11-28T12:00:00[UTC]");
        assert_eq!(h.until_inactive(&z), Some(Duration::from_secs(36 * 3600)));
        // Friday 23:00: Friday's night runs into the weekend, which ends Monday 00:00.
        let z = at("2026-11-27T23:00:00[UTC]");
        assert_eq!(h.until_inactive(&z), Some(Duration::from_secs(49 * 3600)));
        // Tuesday 23:00: closes Wednesday 06:00.
        let z = at("2026-12-01T23:00:00[UTC]");
        assert_eq!(h.until_inactive(&z), Some(Duration::from_secs(7 * 3600)));
        assert_eq!(h.until_inactive(&at("2026-11-30T12:00:00[UTC]")), None);
    }

    #[test]
    fn no_windows_means_always_active() {
        let h = ActiveHours::default();
        assert!(h.is_always());
        assert!(h.is_active(&at("2026-01-01T03:00:00[UTC]")));
        assert_eq!(h.until_active(&at("2026-01-01T03:00:00[UTC]")), None);
    }
}
