//! Start-up recovery of the sessions a crash (or a stop) left behind: the frames of a
//! recorded session are not sent again before the platform was asked about them.
//!
//! 1. `GET …/operations/{opId}`: unless it says `Finished`, `Errored` or `Cancelled`, the
//!    session is cancelled (`:cancel`; 409 means it had ended), so no session stays open
//!    on the platform, where an unfinished one can block annotation imports for days.
//! 2. Each frame's asset is looked up by filename, a few at a time: present → the frame is
//!    delivered (in the bulk metadata modes its metadata is attached again through the
//!    normal path, which replaces it); absent → sent again; unknown (the platform could
//!    not be asked) → sent again too, and the verdict tells the uploader the link is down.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use tracing::{info, warn};

use super::client::Client;
use super::wire::Operation;
use crate::config::MetadataApi;
use crate::upload::sink::{Frame, Outcome, Report, SessionRef, Verdict};

/// Asset lookups at once.
const LOOKUPS: usize = 4;

pub(super) async fn recover(c: &Client, session: SessionRef, frames: Vec<Frame>) -> Report {
    if session.operation == crate::upload::picsellia::OBJECT_SESSION {
        // Recorded by the Picsellia sink of an earlier config: nothing to ask Nexus.
        return Report::retry_all(&frames, "recorded by another sink", Verdict::Ok);
    }
    let overview = operation_overview(c, &session.operation).await;
    let ended = matches!(
        overview.as_deref(),
        Some("Finished" | "Errored" | "Cancelled")
    );
    if !ended {
        c.cancel(&session.id).await;
    }
    let names: Vec<(u64, String)> = frames
        .iter()
        .map(|f| (f.seq, f.meta.filename.clone()))
        .collect();
    let lookups: HashMap<u64, Result<bool, String>> = stream::iter(names)
        .map(|(seq, name)| async move { (seq, c.asset_exists(&name).await) })
        .buffer_unordered(LOOKUPS)
        .collect()
        .await;
    let delivered = |f: &Frame| {
        if f.image_delivered || c.cfg.metadata_api != MetadataApi::Session {
            Outcome::MetadataPending("found on the platform after a restart".into())
        } else {
            Outcome::Accepted
        }
    };
    let mut outcomes = Vec::with_capacity(frames.len());
    let (mut present, mut absent, mut unknown) = (0usize, 0usize, 0usize);
    let mut last_error = None;
    for f in &frames {
        match lookups.get(&f.seq).cloned() {
            Some(Ok(true)) => {
                present += 1;
                outcomes.push((f.seq, delivered(f)));
            }
            Some(Ok(false)) => {
                absent += 1;
                outcomes.push((
                    f.seq,
                    Outcome::Retry("not on the platform after a restart".into()),
                ));
            }
            Some(Err(e)) => {
                unknown += 1;
                last_error = Some(e.clone());
                outcomes.push((
                    f.seq,
                    Outcome::Retry(format!("cannot ask the platform after a restart: {e}")),
                ));
            }
            None => outcomes.push((f.seq, Outcome::Retry("not looked up".into()))),
        }
    }
    info!(session = %c.clean(&session.id), operation = overview.as_deref().unwrap_or("unknown"),
        present, absent, unknown, cancelled = !ended,
        "recovered an upload session left by the last run");
    let verdict = match last_error {
        Some(e) if present + absent == 0 => {
            warn!(error = %e, "the platform cannot be asked about the last run's session");
            Verdict::Offline(e)
        }
        _ => Verdict::Ok,
    };
    Report {
        outcomes,
        verdict,
        pending: None,
    }
}

/// The `overview` of an operation, if the platform answers it.
async fn operation_overview(c: &Client, op: &str) -> Option<String> {
    let url = c.url(&c.project_path(&format!("/operations/{op}")));
    let r = c.api(Method::GET, url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body = r.bytes().await.ok()?;
    serde_json::from_slice::<Operation>(&body)
        .ok()
        .map(|o| o.status.overview)
}
