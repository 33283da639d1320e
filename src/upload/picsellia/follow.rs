//! Following registered data until the platform has processed them (protocol doc §6):
//! every round asks for each data still processing (`GET /api/data/{id}`, a few at a time),
//! then sleeps `processing_poll_ms`. `DONE` (or any status other than `PENDING`/`COMPUTING`
//! and `ERROR`) → delivered; `ERROR` → dead, with what the platform says; no end within
//! `processing_timeout_secs` → delivered, logged (the data exists: sending it again would
//! make a second one). Runs in the background while the next batch goes out.

use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use tracing::{error, warn};

use super::client::Client;
use super::wire::Data;
use crate::upload::sink::Outcome;

/// Status reads at once.
const READS: usize = 4;

/// What the platform says about a data whose processing failed.
pub(super) fn error_text(c: &Client, d: &Data) -> String {
    let text = format!(
        "the platform's processing of data {} ({}) ended in ERROR",
        d.id, d.filename
    );
    error!(data = %c.clean(&d.id), filename = %c.clean(&d.filename),
        "the platform could not process this frame; it is kept as a dead frame");
    c.clean(&text)
}

/// A data's fate by its status: an outcome once processing is over (`ERROR` → dead with
/// the platform's words; any other ready status → delivered), `None` while it runs.
pub(super) fn settled(c: &Client, d: &Data) -> Option<Outcome> {
    if d.upload_status == "ERROR" {
        Some(Outcome::Rejected(error_text(c, d)))
    } else if d.ready() {
        Some(Outcome::AcceptedAs(d.id.clone()))
    } else {
        None
    }
}

/// Follows `frames` (`(seq, data id)`) to their end.
pub(super) async fn follow(c: &Client, mut frames: Vec<(u64, String)>) -> Vec<(u64, Outcome)> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(frames.len());
    loop {
        tokio::time::sleep(c.cfg.processing_poll).await;
        let reads: Vec<((u64, String), Result<Data, String>)> = stream::iter(frames)
            .map(|(seq, id)| async move {
                let r = c.get_data(&id).await.map_err(|e| e.to_string());
                ((seq, id), r)
            })
            .buffer_unordered(READS)
            .collect()
            .await;
        frames = Vec::new();
        for ((seq, id), r) in reads {
            match r {
                Ok(d) => match settled(c, &d) {
                    Some(o) => out.push((seq, o)),
                    None => frames.push((seq, id)),
                },
                Err(e) => {
                    warn!(seq, error = %e, "cannot read a data's processing status; asking again");
                    frames.push((seq, id));
                }
            }
        }
        if frames.is_empty() {
            return out;
        }
        if started.elapsed() >= c.cfg.processing_timeout {
            warn!(
                frames = frames.len(),
                waited_secs = started.elapsed().as_secs(),
                "the platform has not finished processing these frames; they are registered, so they count as delivered"
            );
            out.extend(
                frames
                    .into_iter()
                    .map(|(seq, id)| (seq, Outcome::AcceptedAs(id))),
            );
            return out;
        }
    }
}
