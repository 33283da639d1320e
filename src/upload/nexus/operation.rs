//! Following an upload session's operation to its end, and deciding from it what became
//! of the frames PUT into the session: `Finished` → accepted; `Errored`, `Cancelled` or no
//! end within `operation_timeout_secs` → each asset looked up by filename
//! (`recover::look_up_all`): present → accepted, absent → a failed attempt (logged at
//! ERROR), the platform cannot be asked → `Unconfirmed` (the frame keeps its session and
//! is asked about before it is sent again); a stop → `Unknown`, for the next start.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::client::{Client, Lookup};
use super::recover;
use super::wire::Operation;
use crate::upload::sink::Outcome;
use crate::upload::{sleep_or_stop, stopped};

/// Follows a session's operation and decides the fate of its uploaded frames.
pub(super) async fn finish(
    c: &Client,
    session_id: String,
    op_id: String,
    uploaded: Vec<(u64, String)>,
    partial: Option<u64>,
    stop: watch::Receiver<bool>,
) -> Vec<(u64, Outcome)> {
    match await_operation(c, &op_id, partial, &stop).await {
        OpEnd::Finished => {
            debug!(session = %session_id, frames = uploaded.len(), "operation finished");
            uploaded
                .into_iter()
                .map(|(s, _)| (s, Outcome::Accepted))
                .collect()
        }
        OpEnd::Unknown => uploaded
            .into_iter()
            .map(|(s, _)| {
                let why = "operation still running at shutdown";
                (s, Outcome::Unknown(why.into()))
            })
            .collect(),
        OpEnd::Check(why) => {
            warn!(session = %session_id, operation = %c.clean(&op_id), why = %why,
                frames = uploaded.len(), "operation did not finish cleanly; checking each asset");
            let looked = tokio::select! {
                l = recover::look_up_all(c, uploaded.clone()) => Some(l),
                // Stopping: nothing is known, as when stopped while following the operation.
                _ = stopped(&stop) => None,
            };
            let Some(lookups) = looked else {
                return uploaded
                    .into_iter()
                    .map(|(s, _)| {
                        (
                            s,
                            Outcome::Unknown("stopped while checking each asset".into()),
                        )
                    })
                    .collect();
            };
            let mut unconfirmed = 0usize;
            let out = uploaded
                .into_iter()
                .map(|(seq, name)| {
                    let o = match lookups.each.get(&seq) {
                        Some(Lookup::Present) => Outcome::Accepted,
                        Some(Lookup::Absent) => {
                            error!(filename = %name, why = %why,
                                "the platform did not create this asset; it will be uploaded again");
                            Outcome::Failed(format!("{why}; asset not created"))
                        }
                        Some(Lookup::Refused(e)) => Outcome::Retry(format!("{why}; {e}")),
                        Some(Lookup::Unreachable(e)) => {
                            unconfirmed += 1;
                            Outcome::Unconfirmed(format!("{why}; {e}"))
                        }
                        None => {
                            unconfirmed += 1;
                            Outcome::Unconfirmed(format!("{why}; not looked up"))
                        }
                    };
                    (seq, o)
                })
                .collect();
            if unconfirmed > 0 {
                // Sending them again now could put each on the platform twice.
                warn!(session = %session_id, frames = unconfirmed,
                    error = lookups.failure.as_deref().unwrap_or(""),
                    "the platform cannot be asked whether it created these assets; they keep their session and are asked about before they are sent again");
            }
            out
        }
    }
}

enum OpEnd {
    Finished,
    /// Stopped before the operation ended: nothing is known.
    Unknown,
    /// Ended badly or timed out: look the assets up one by one.
    Check(String),
}

/// Follows an operation to its end. `partial = Some(n)`: only `n` of the session's
/// assets were uploaded, so the operation may never report `Finished` as a whole; it is
/// over for us once its progress accounts for `n` assets.
async fn await_operation(
    c: &Client,
    op_id: &str,
    partial: Option<u64>,
    stop: &watch::Receiver<bool>,
) -> OpEnd {
    let deadline = Instant::now() + c.cfg.operation_timeout;
    let url = c.url(&c.project_path(&format!("/operations/{op_id}")));
    loop {
        let resp = c.api(Method::GET, url.clone()).send().await;
        let state = match resp {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.unwrap_or_default();
                match serde_json::from_slice::<Operation>(&body) {
                    Ok(op) => {
                        let ws = op
                            .status
                            .progress
                            .map(|p| p.with_status)
                            .unwrap_or_default();
                        match partial {
                            Some(n) if ws.finished + ws.errored + ws.cancelled >= n => {
                                return if ws.errored + ws.cancelled == 0 {
                                    OpEnd::Finished
                                } else {
                                    OpEnd::Check(format!(
                                        "operation reports {} errored, {} cancelled",
                                        ws.errored, ws.cancelled
                                    ))
                                };
                            }
                            _ => Some(op.status.overview),
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "unreadable operation status");
                        None
                    }
                }
            }
            Ok(r)
                if r.status().is_client_error() && r.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                return OpEnd::Check(format!("operation status answered {}", r.status()));
            }
            Ok(_) | Err(_) => None,
        };
        match state.as_deref() {
            Some("Finished") => return OpEnd::Finished,
            Some(s @ ("Errored" | "Cancelled")) => {
                return OpEnd::Check(format!("operation {s}"));
            }
            _ => {}
        }
        if *stop.borrow() {
            return OpEnd::Unknown;
        }
        if Instant::now() >= deadline {
            return OpEnd::Check(format!(
                "operation not finished after {} s",
                c.cfg.operation_timeout.as_secs()
            ));
        }
        if sleep_or_stop(c.cfg.operation_poll, stop).await {
            // One last look before giving up on it for this run.
            continue;
        }
    }
}
