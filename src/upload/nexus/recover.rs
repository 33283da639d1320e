//! Asking the platform about frames whose session's outcome is not known, before any of
//! them is sent again: exactly once where the platform can tell.
//!
//! Three ways a frame gets here, each keeping the session it went into (`Frame::previous`
//! once it is leased again):
//! - a crash or a stop left its session open ([`recover`], at the next start);
//! - its operation did not end cleanly and the platform could not then be asked about
//!   its asset (`Outcome::Unconfirmed`: an outage that outlasted `operation_timeout_secs`);
//! - the platform could not be asked at the last start or the last time round.
//!
//! [`recover`] (at start, one recorded session at a time):
//! 1. `GET …/operations/{opId}`: unless it says `Finished`, `Errored` or `Cancelled`, the
//!    session is cancelled (`:cancel`; 409 means it had ended), so no session stays open
//!    on the platform, where an unfinished one can block annotation imports for days.
//! 2. Each frame's asset is looked up by filename ([`look_up_all`]).
//!
//! [`ask_first`] (in a running daemon, for the frames of a batch that carry a session)
//! only looks them up. Either way: present → the frame is delivered (in the bulk
//! metadata modes its metadata is attached again through the normal path, which replaces
//! it); absent, or a platform that refuses to say (another 4xx) → sent again, counted as
//! a re-send; not asked (the link is down, the server errs) → it keeps its session and
//! is asked about the next time, and the verdict tells the uploader to wait.

use std::collections::HashMap;
use std::sync::OnceLock;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use tracing::{info, warn};

use super::client::{Client, Lookup};
use super::wire::Operation;
use crate::config::MetadataApi;
use crate::upload::sink::{Frame, Outcome, Report, SessionRef, Verdict};

/// Asset lookups at once.
const LOOKUPS: usize = 4;

pub(super) async fn recover(c: &Client, session: SessionRef, frames: Vec<Frame>) -> Report {
    if !asked_of_nexus(&session) {
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
    let asked = ask(c, &frames, "after a restart").await;
    info!(session = %c.clean(&session.id), operation = overview.as_deref().unwrap_or("unknown"),
        present = asked.present, absent = asked.absent, unknown = asked.unreachable,
        cancelled = !ended, "recovered an upload session left by the last run");
    let verdict = match &asked.error {
        Some(e) if asked.present + asked.absent == 0 => {
            warn!(error = %e, "the platform cannot be asked about the last run's session");
            Verdict::Offline(e.clone())
        }
        _ => Verdict::Ok,
    };
    Report {
        outcomes: asked.outcomes,
        verdict,
        pending: None,
    }
}

/// Whether Nexus can be asked about a frame of `session`: not when the Picsellia sink of
/// an earlier config recorded it (an object name, not an upload session).
pub(super) fn asked_of_nexus(session: &SessionRef) -> bool {
    session.operation != crate::upload::picsellia::OBJECT_SESSION
}

/// [`recover`]'s lookups for the frames of a batch that carry a session they went into
/// before (`Frame::previous`): the outcomes of those decided here (delivered, or not
/// asked), the frames to send again now, and the verdict on the link.
pub(super) async fn ask_first(
    c: &Client,
    frames: Vec<Frame>,
) -> (Vec<(u64, Outcome)>, Vec<Frame>, Verdict) {
    let asked = ask(c, &frames, "before sending it again").await;
    info!(
        frames = frames.len(),
        present = asked.present,
        absent = asked.absent,
        not_asked = asked.unreachable,
        "asked the platform about frames whose upload was not confirmed before sending them again"
    );
    // The ones to send again are those `ask` decided to retry.
    let again: std::collections::HashSet<u64> = asked
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Retry(_)))
        .map(|(s, _)| *s)
        .collect();
    let decided = asked
        .outcomes
        .into_iter()
        .filter(|(s, _)| !again.contains(s))
        .collect();
    let resend = frames
        .into_iter()
        .filter(|f| again.contains(&f.seq))
        .collect();
    let verdict = match asked.error {
        Some(e) => {
            warn!(error = %e, frames = asked.unreachable,
                "the platform cannot be asked about frames whose upload was not confirmed; they wait, keeping their session");
            Verdict::Backoff {
                reason: format!("cannot ask the platform about unconfirmed uploads: {e}"),
                retry_after: None,
            }
        }
        None => Verdict::Ok,
    };
    (decided, resend, verdict)
}

/// What asking about a set of frames found.
struct Asked {
    /// An outcome per frame: delivered, `Retry` (to be sent again: absent, or the
    /// platform would not say) or `Unconfirmed`.
    outcomes: Vec<(u64, Outcome)>,
    present: usize,
    absent: usize,
    unreachable: usize,
    /// Why some could not be asked.
    error: Option<String>,
}

/// Looks each of `frames` up and decides its outcome (`when` goes into the reasons).
async fn ask(c: &Client, frames: &[Frame], when: &str) -> Asked {
    let names: Vec<(u64, String)> = frames
        .iter()
        .map(|f| (f.seq, f.meta.filename.clone()))
        .collect();
    let lookups = look_up_all(c, names).await;
    let mut a = Asked {
        outcomes: Vec::with_capacity(frames.len()),
        present: 0,
        absent: 0,
        unreachable: 0,
        error: lookups.failure,
    };
    for f in frames {
        let outcome = match lookups.each.get(&f.seq) {
            Some(Lookup::Present) => {
                a.present += 1;
                found(c, f)
            }
            Some(Lookup::Absent) => {
                a.absent += 1;
                Outcome::Retry(format!("not on the platform {when}"))
            }
            Some(Lookup::Refused(e)) => {
                a.absent += 1;
                Outcome::Retry(format!("the platform will not say {when}: {e}"))
            }
            Some(Lookup::Unreachable(e)) => {
                a.unreachable += 1;
                Outcome::Unconfirmed(format!("cannot ask the platform {when}: {e}"))
            }
            None => {
                a.unreachable += 1;
                Outcome::Unconfirmed("not looked up".into())
            }
        };
        a.outcomes.push((f.seq, outcome));
    }
    a
}

/// A frame whose asset the platform has: delivered, or in the bulk metadata modes, its
/// metadata still to attach (attaching it again is harmless).
fn found(c: &Client, f: &Frame) -> Outcome {
    if f.image_delivered || c.cfg.metadata_api != MetadataApi::Session {
        Outcome::MetadataPending("found on the platform".into())
    } else {
        Outcome::Accepted
    }
}

/// What [`look_up_all`] found.
pub(super) struct Lookups {
    /// Each frame's answer; a frame whose lookup was skipped after a failure is
    /// `Unreachable` ("not asked: ...").
    pub each: HashMap<u64, Lookup>,
    /// Why the first lookup that could not be made failed: the reason a summary gives,
    /// never a skipped frame's "not asked".
    pub failure: Option<String>,
}

/// Looks the assets of `names` up by filename, [`LOOKUPS`] at a time. After the first
/// lookup that cannot be made (the link is down, the server errs) the rest are not made:
/// each would wait out its own timeout on a dead link, and their frames are asked about
/// later anyway.
pub(super) async fn look_up_all(c: &Client, names: Vec<(u64, String)>) -> Lookups {
    let down: OnceLock<String> = OnceLock::new();
    let each = {
        let down = &down;
        stream::iter(names)
            .map(|(seq, name)| async move {
                if let Some(e) = down.get() {
                    return (seq, Lookup::Unreachable(format!("not asked: {e}")));
                }
                let l = c.look_up(&name).await;
                if let Lookup::Unreachable(e) = &l {
                    let _ = down.set(e.clone());
                }
                (seq, l)
            })
            .buffer_unordered(LOOKUPS)
            .collect()
            .await
    };
    Lookups {
        each,
        failure: down.into_inner(),
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
