//! Proof of delivery: [`Queue::deliver`] writes the receipts of frames the platform
//! accepted (durable before the frames leave the index, `receipts.rs`), and the delivered
//! frames kept for `verify --repair` (`kept.rs`) are freed for room
//! ([`Queue::free_kept`]) or committed again ([`Queue::requeue_kept`]).

use tracing::warn;

use super::Queue;
use super::index::FrameState;
use super::receipts::{Receipt, ReceiptStats};
use super::spool;

/// What the uploader knows of a frame the platform accepted: its receipt's facts.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Queue sequence number.
    pub seq: u64,
    /// Platform filename.
    pub filename: String,
    /// CRC-32C of the image.
    pub crc32c: u32,
    /// Image bytes.
    pub bytes: u64,
    /// Capture time, Unix ms.
    pub captured_ms: Option<i64>,
    /// The platform's id for it, where it gave one.
    pub asset: Option<String>,
}

impl Queue {
    /// The platform accepted these frames (into `sink`): their receipts are written and
    /// made durable, with the session each went into, then the frames leave the queue
    /// ([`Queue::ack`]). A receipt that cannot be written (a full disk) is logged; the
    /// frames are delivered all the same.
    pub fn deliver(&self, frames: &[Delivered], sink: &str) {
        if frames.is_empty() {
            return;
        }
        let now = crate::frame::unix_ms(std::time::SystemTime::now());
        let receipts: Vec<Receipt> = {
            let st = self.state();
            frames
                .iter()
                .map(|d| {
                    let session = st
                        .store
                        .get(FrameState::InFlight, d.seq)
                        .and_then(|e| e.session);
                    Receipt {
                        seq: Some(d.seq),
                        filename: d.filename.clone(),
                        asset: d.asset.clone(),
                        session: session.as_ref().map(|s| s.id.clone()),
                        operation: session
                            .map(|s| s.operation)
                            .filter(|o| !o.is_empty() && !o.starts_with("picsellia")),
                        crc32c: d.crc32c,
                        bytes: d.bytes,
                        captured_ms: d.captured_ms,
                        delivered_ms: now,
                        sink: sink.to_string(),
                    }
                })
                .collect()
        };
        let written = self
            .receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&receipts);
        if let Err(e) = written {
            warn!(frames = frames.len(), error = %e,
                "cannot write the receipts of delivered frames; they are delivered without one");
        }
        let seqs: Vec<u64> = frames.iter().map(|d| d.seq).collect();
        self.ack(&seqs);
    }

    /// Frees at least `need` bytes of disk from the kept delivered frames (all of them
    /// with `u64::MAX`); the bytes freed.
    pub(super) fn free_kept(&self, need: u64) -> u64 {
        let freed = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(need);
        if freed > 0 {
            warn!(
                freed_bytes = freed,
                "the disk is nearly full: deleted kept delivered frames"
            );
        }
        freed
    }

    /// Commits the kept delivered frames `seqs` to the queue again, as they were (name,
    /// metadata, image; checksums verified), for `verify --repair`. One result per frame.
    pub fn requeue_kept(&self, seqs: &[u64]) -> Vec<(u64, Result<(), String>)> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut group = self.group();
        let mut added = Vec::new();
        for &seq in seqs {
            let path = {
                let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
                if !kept.enabled() {
                    out.push((
                        seq,
                        Err(
                            "delivered frames are not kept ([queue] keep_delivered_bytes = 0)"
                                .to_string(),
                        ),
                    ));
                    continue;
                }
                if !kept.has(seq) {
                    out.push((seq, Err("no longer kept (deleted to stay within keep_delivered_bytes or to free the disk)".to_string())));
                    continue;
                }
                kept.path(seq)
            };
            match spool::read_frame_of(&path, seq) {
                Ok((_, meta, image)) => match group.add(&meta, &image) {
                    Ok(_) => added.push(seq),
                    Err(e) => out.push((seq, Err(e.to_string()))),
                },
                Err(e) => out.push((seq, Err(format!("its kept file cannot be read: {e}")))),
            }
        }
        let committed = group.commit();
        let ok = committed.frames.len() == added.len();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for seq in added {
            if ok {
                kept.remove(seq);
                out.push((seq, Ok(())));
            } else {
                out.push((seq, Err("the queue could not commit it".to_string())));
            }
        }
        out
    }

    /// The last receipt's time and the deliveries of the last hour and day.
    pub fn receipt_stats(&self) -> ReceiptStats {
        let now = crate::frame::unix_ms(std::time::SystemTime::now());
        self.receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats(now)
    }
}
