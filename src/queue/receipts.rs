//! Receipts: proof of delivery, one line per frame the platform accepted, in an
//! append-only, size-capped log under the queue directory.
//!
//! ```text
//! <dir>/receipts/<n:010>.jsonl   segments; the highest n is appended to
//! ```
//!
//! Each line is one [`Receipt`] as JSON. Lines are written and `fdatasync`'d before the
//! frames they prove leave the index ([`crate::queue::Queue::deliver`]), so a receipt
//! exists for every delivered frame; a crash between the two leaves a receipt for a frame
//! that is then delivered (and receipted) again, which readers fold by filename. A torn
//! last line (power cut mid-write) is skipped by readers and never appended to: a new
//! segment starts at every open.
//!
//! A segment is closed once it reaches a quarter of `receipts_max_bytes`; the oldest
//! segments are removed while the log is larger than that, so it keeps at least the last
//! three quarters' worth of receipts. Writing a receipt never blocks capture (the uploader
//! writes them) and its failure (a full disk) is logged, never fatal: the frame is
//! delivered all the same.
//!
//! The log also keeps, in memory, the delivery times of the last 24 hours (per minute) and
//! the last receipt's time, for `edgecap status`; they are read back from the segments at
//! open.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// One delivered frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The frame's queue sequence number (finds it among the kept delivered frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Platform filename.
    pub filename: String,
    /// The platform's id of the asset or data, where it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// The upload session (Nexus) or object name (Picsellia) it went into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The session's operation (Nexus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// CRC-32C of the image.
    pub crc32c: u32,
    /// Image bytes.
    pub bytes: u64,
    /// Capture time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_ms: Option<i64>,
    /// Delivery (acknowledgement) time, Unix ms.
    pub delivered_ms: i64,
    /// The sink: `nexus`, `picsellia` or `directory`.
    pub sink: String,
}

/// What a status shows of the receipts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptStats {
    /// Time of the last receipt, Unix ms.
    pub last_ms: Option<i64>,
    /// Frames receipted in the last hour.
    pub last_hour: u64,
    /// Frames receipted in the last 24 hours.
    pub last_day: u64,
}

/// The receipt log of one queue.
pub(super) struct Receipts {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<(File, u64)>,
    next_segment: u64,
    /// Deliveries per minute (Unix minute, count), the last 24 hours.
    minutes: VecDeque<(i64, u64)>,
    last_ms: Option<i64>,
}

/// The segment files of `dir`, oldest first, with their numbers and sizes.
fn segments(dir: &Path) -> Vec<(u64, PathBuf, u64)> {
    let mut out: Vec<(u64, PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".jsonl")?.parse::<u64>().ok()?;
            let len = e.metadata().ok()?.len();
            Some((n, e.path(), len))
        })
        .collect();
    out.sort();
    out
}

/// Every receipt in the log under the queue directory `queue_dir`, oldest first (torn or
/// unreadable lines skipped). Read-only: safe while a daemon appends.
pub fn read_all(queue_dir: &Path) -> Vec<Receipt> {
    let mut out = Vec::new();
    for (_, path, _) in segments(&queue_dir.join("receipts")) {
        read_segment(&path, &mut out);
    }
    out
}

/// The receipts of one segment, appended to `out` (torn or unreadable lines skipped).
fn read_segment(path: &Path, out: &mut Vec<Receipt>) {
    let Ok(f) = File::open(path) else { return };
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if let Ok(r) = serde_json::from_str::<Receipt>(&line) {
            out.push(r);
        }
    }
}

impl Receipts {
    /// Opens the log of the queue in `queue_dir` (created if missing) and reads back the
    /// last day's delivery times. A folder that cannot be created is logged; appends then
    /// fail (logged) and the queue works on.
    pub(super) fn open(queue_dir: &Path, max_bytes: u64) -> Self {
        let dir = queue_dir.join("receipts");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot create the receipt folder; deliveries go on without receipts until it can be written");
        }
        let next_segment = segments(&dir).last().map_or(0, |(n, _, _)| n + 1);
        let mut r = Self {
            dir,
            max_bytes,
            current: None,
            next_segment,
            minutes: VecDeque::new(),
            last_ms: None,
        };
        r.load();
        r
    }

    /// The status figures of the log under `queue_dir`, read without writing anything:
    /// for a user who may read the queue but not open it.
    pub(super) fn stats_read_only(queue_dir: &Path) -> ReceiptStats {
        let mut r = Self {
            dir: queue_dir.join("receipts"),
            max_bytes: 0,
            current: None,
            next_segment: 0,
            minutes: VecDeque::new(),
            last_ms: None,
        };
        r.load();
        r.stats(crate::frame::unix_ms(std::time::SystemTime::now()))
    }

    /// Reads back the last day's delivery times and the last receipt's time.
    fn load(&mut self) {
        let all = segments(&self.dir);
        // Only what the status needs is read at open, not the whole log: the segments
        // written to within the last day, and the newest segment with a receipt in it.
        let now = crate::frame::unix_ms(std::time::SystemTime::now());
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        let mut wanted = Vec::new();
        let mut have_last = false;
        for (_, path, len) in all.iter().rev() {
            let recent = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= day_ago);
            if !recent && have_last {
                break;
            }
            have_last |= *len > 0;
            wanted.push(path);
        }
        let mut recs = Vec::new();
        for path in wanted.into_iter().rev() {
            read_segment(path, &mut recs);
        }
        for rec in recs {
            if now - rec.delivered_ms < 86_400_000 {
                self.count(rec.delivered_ms);
            }
            self.last_ms = self.last_ms.max(Some(rec.delivered_ms));
        }
    }

    fn count(&mut self, ms: i64) {
        let minute = ms.div_euclid(60_000);
        match self.minutes.back_mut() {
            // Out of order (a clock step back): counted in the newest minute.
            Some((m, n)) if *m >= minute => *n += 1,
            _ => self.minutes.push_back((minute, 1)),
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| minute - m >= 24 * 60)
        {
            self.minutes.pop_front();
        }
    }

    /// Appends `receipts` and makes them durable.
    pub(super) fn append(&mut self, receipts: &[Receipt]) -> std::io::Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(receipts.len() * 256);
        for r in receipts {
            serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        let segment = (self.max_bytes / 4).max(4096);
        if self.current.as_ref().is_none_or(|(_, len)| *len >= segment) {
            self.rotate()?;
        }
        if let Some((f, len)) = &mut self.current {
            f.write_all(&buf)?;
            f.sync_data()?;
            *len += buf.len() as u64;
        }
        for r in receipts {
            self.count(r.delivered_ms);
            self.last_ms = self.last_ms.max(Some(r.delivered_ms));
        }
        Ok(())
    }

    /// Starts a new segment and removes the oldest ones beyond the cap.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(format!("{:010}.jsonl", self.next_segment));
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new segment's directory entry is durable before receipts go into it.
        File::open(&self.dir)?.sync_all()?;
        self.next_segment += 1;
        self.current = Some((f, 0));
        let mut all = segments(&self.dir);
        let mut total: u64 = all.iter().map(|(_, _, l)| l).sum();
        while total > self.max_bytes && all.len() > 1 {
            let (_, p, l) = all.remove(0);
            if let Err(e) = std::fs::remove_file(&p) {
                warn!(path = %p.display(), error = %e, "cannot remove an old receipt segment");
                break;
            }
            total -= l;
        }
        Ok(())
    }

    /// The last receipt's time and the counts of the last hour and day.
    pub(super) fn stats(&self, now_ms: i64) -> ReceiptStats {
        let minute = now_ms.div_euclid(60_000);
        let sum = |within: i64| {
            self.minutes
                .iter()
                .filter(|(m, _)| minute - m < within)
                .map(|(_, n)| n)
                .sum()
        };
        ReceiptStats {
            last_ms: self.last_ms,
            last_hour: sum(60),
            last_day: sum(24 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn receipt(i: u64, at: i64) -> Receipt {
        Receipt {
            seq: Some(i),
            filename: format!("f{i}.jpg"),
            asset: None,
            session: Some("s".into()),
            operation: None,
            crc32c: 7,
            bytes: 100,
            captured_ms: Some(at - 1000),
            delivered_ms: at,
            sink: "nexus".into(),
        }
    }

    #[test]
    fn receipts_survive_a_reopen_rotate_by_size_and_skip_a_torn_line() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::frame::unix_ms(std::time::SystemTime::now());
        let mut r = Receipts::open(tmp.path(), 40_000);
        for i in 0..1000 {
            r.append(&[receipt(i, now - 7_200_000 + i as i64)]).unwrap();
        }
        r.append(&[receipt(1000, now)]).unwrap();
        let segs = segments(&tmp.path().join("receipts"));
        assert!(segs.len() > 1, "{segs:?}");
        let total: u64 = segs.iter().map(|s| s.2).sum();
        assert!(total <= 40_000 + 10_000 + 200, "capped: {total}");
        let all = read_all(tmp.path());
        assert_eq!(all.last().unwrap().filename, "f1000.jpg");
        assert!(all.len() < 1001, "the oldest were removed");
        assert!(
            all.len() > 150,
            "the newest three quarters stay: {}",
            all.len()
        );
        drop(r);
        // A torn line at the end of the newest segment.
        let (_, newest, _) = segments(&tmp.path().join("receipts")).pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
        f.write_all(b"{\"filename\":\"torn").unwrap();
        let r = Receipts::open(tmp.path(), 40_000);
        assert_eq!(read_all(tmp.path()).len(), all.len());
        let st = r.stats(now);
        assert_eq!(st.last_ms, Some(now));
        assert_eq!(st.last_hour, 1);
        assert_eq!(st.last_day as usize, all.len());
    }

    #[test]
    fn at_open_an_old_log_still_gives_the_last_receipt_and_no_recent_count() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::frame::unix_ms(std::time::SystemTime::now());
        let two_days = 2 * 86_400_000;
        let mut r = Receipts::open(tmp.path(), 1_000_000);
        r.append(&[receipt(1, now - two_days - 5), receipt(2, now - two_days)])
            .unwrap();
        drop(r);
        let age = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        for (_, p, _) in segments(&tmp.path().join("receipts")) {
            File::options()
                .append(true)
                .open(&p)
                .unwrap()
                .set_modified(age)
                .unwrap();
        }
        let r = Receipts::open(tmp.path(), 1_000_000);
        let st = r.stats(now);
        assert_eq!(st.last_ms, Some(now - two_days));
        assert_eq!((st.last_hour, st.last_day), (0, 0));
        // A newer segment after it: the last receipt and the day's count come from it.
        let mut r = r;
        r.append(&[receipt(3, now)]).unwrap();
        drop(r);
        let st = Receipts::open(tmp.path(), 1_000_000).stats(now);
        assert_eq!(st.last_ms, Some(now));
        assert_eq!((st.last_hour, st.last_day), (1, 1));
    }
}
