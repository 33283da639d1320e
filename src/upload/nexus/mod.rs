//! The Datature Nexus sink: one upload session per batch, per `docs/protocols/nexus.md`.
//!
//! 1. `POST /projects/{proj_…}/assetuploadsessions` with `Secret-Key`, listing every asset
//!    (`filename`, `size`, `crc32c` as the signed i32 of the big-endian CRC-32C, `mime`,
//!    `customMetadata`) and the batch's `groups`. Session creations go through a client-side
//!    sliding-window limiter (default 15 per 300 s, the platform's limit).
//! 2. `PUT` (or whatever `upload.method` says) each file to its signed URL with exactly the
//!    returned headers and no credentials, `put_concurrency` at a time. A 5xx or network
//!    error is retried twice within the session; a 403 (expired URL) puts the frame back for a
//!    new session; a 400 `BadDigest` (damaged in transit) counts as a failed attempt and the
//!    frame is sent again from its verified spool file; any other 4xx rejects that frame alone.
//! 3. Poll `GET /projects/{pid}/operations/{opId}` (first poll at once, then every
//!    `operation_poll_ms`). `Finished` → the uploaded frames are accepted. `Errored`,
//!    `Cancelled` or no end within `operation_timeout_secs` → each uploaded asset is looked up
//!    (`GET …/assets/{filename}`): present → accepted, absent → a failed attempt, logged;
//!    when the platform cannot be asked (an outage), the frame keeps its session and is
//!    asked about before it is sent again (`recover.rs`), never sent again blindly.
//! 4. When no PUT succeeded, the session is cancelled (`POST
//!    …/assetuploadsessions/{id}:cancel`; 409 means already finished). On shutdown during
//!    the PUTs it is left to the next start's recovery: the frames already PUT keep the
//!    session and are looked up on the platform instead of being sent again.
//!
//! Everything that comes back from the server is treated as untrusted text: it is shortened
//! and any occurrence of the secret key is masked before it reaches a log line.
//!
//! `wire.rs` holds the JSON bodies, `client.rs` the API client and error classification,
//! `admin.rs` the asset calls of `edgecap nexus …` and `edgecap verify`,
//! `put.rs` the storage PUTs, `operation.rs` following a session's operation (step 3),
//! `recover.rs` asking about frames whose session's outcome is not known; this file is the
//! session flow.

pub mod admin;
mod client;
mod metadata;
mod operation;
mod put;
mod recover;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::Method;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use client::Client;
use metadata::{MetaJob, attach, worse};
use operation::finish;
use put::{Put, put_all};
pub use wire::nexus_crc32c;
use wire::{AssetRequest, SessionRequest, SessionResponse, UploadSpec};

use super::sink::{Frame, Outcome, Pending, Report, SessionJournal, SessionRef, Sink, Verdict};
use super::stopped;
use crate::config::{MetadataApi, NexusConfig, Secret};

/// The Nexus sink.
pub struct NexusSink {
    client: Arc<Client>,
    journal: Arc<dyn SessionJournal>,
    throttle: Option<Arc<crate::upload::throttle::Throttle>>,
}

impl NexusSink {
    /// Builds the client for the project of `cfg`; sessions are noted in `journal`.
    pub fn new(
        cfg: NexusConfig,
        secret: Secret,
        journal: Arc<dyn SessionJournal>,
    ) -> Result<Self, String> {
        Ok(Self {
            client: Arc::new(Client::new(cfg, secret)?),
            journal,
            throttle: None,
        })
    }

    /// The session pacer goes on from what a previous run learnt (`path`), and keeps what
    /// it learns there.
    pub fn with_pace_file(mut self, path: std::path::PathBuf) -> Self {
        if let Some(c) = Arc::get_mut(&mut self.client) {
            c.set_pace_file(path);
        }
        self
    }

    /// Storage PUTs draw their bytes through `throttle` (the bandwidth cap).
    pub fn with_throttle(mut self, throttle: Arc<crate::upload::throttle::Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }
}

impl Sink for NexusSink {
    /// Checks that the API answers at all (any HTTP status counts).
    async fn probe(&self) -> Result<(), String> {
        self.client.probe().await
    }

    /// After a restart: closes the session if it is still open, then asks for each frame
    /// whether its asset exists (a few at a time). Present: done (its metadata is attached
    /// again in the bulk modes, which is harmless); absent: sent again.
    async fn recover(&self, session: SessionRef, frames: Vec<Frame>) -> Report {
        recover::recover(&self.client, session, frames).await
    }

    /// `GET /projects/{pid}`: the project exists and the key is accepted.
    async fn check(&self) -> Verdict {
        self.client.check_project().await
    }

    /// Until the client-side limiter allows the next session.
    fn next_session_in(&self) -> std::time::Duration {
        self.client.next_session_in()
    }

    /// Sessions the pacer plans for in the next window.
    fn sessions_left(&self) -> Option<usize> {
        Some(self.client.sessions_left())
    }

    fn session_pace(&self) -> Option<(f64, u64)> {
        Some(self.client.session_pace())
    }

    /// Sends the metadata of frames whose images the platform already has, asks about
    /// frames whose last upload was not confirmed (`recover::ask_first`), and sends the
    /// others, and those the platform does not have, through one upload session.
    async fn send(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        let (meta_only, full): (Vec<Frame>, Vec<Frame>) =
            batch.into_iter().partition(|f| f.image_delivered);
        let (mut outcomes, mut verdict) = attach(&self.client, &meta_jobs(&meta_only)).await;
        let (asked, mut full): (Vec<Frame>, Vec<Frame>) = full
            .into_iter()
            .partition(|f| f.previous.as_ref().is_some_and(recover::asked_of_nexus));
        if !asked.is_empty() {
            let seqs: Vec<u64> = asked.iter().map(|f| f.seq).collect();
            tokio::select! {
                (decided, again, v) = recover::ask_first(&self.client, asked) => {
                    outcomes.extend(decided);
                    full.extend(again);
                    verdict = worse(verdict, v);
                }
                _ = stopped(stop) => {
                    // Not asked yet: they keep their session, for the next start to ask.
                    let why = "stopped before the platform was asked";
                    let mut report = Report::retry_all(&full, "shutting down", verdict);
                    report.outcomes.extend(outcomes);
                    report.outcomes.extend(seqs.into_iter().map(|s| (s, Outcome::Unconfirmed(why.into()))));
                    return report;
                }
            }
        }
        if full.is_empty() {
            return Report {
                outcomes,
                verdict,
                pending: None,
            };
        }
        let mut report = self.upload(full, stop).await;
        report.outcomes.extend(outcomes);
        report.verdict = worse(report.verdict, verdict);
        report
    }
}

/// What the bulk endpoint needs of `frames`.
fn meta_jobs(frames: &[Frame]) -> Vec<MetaJob> {
    frames
        .iter()
        .map(|f| MetaJob::new(f.seq, f.meta.filename.clone(), f.meta.custom.clone()))
        .collect()
}

impl NexusSink {
    /// Sends one batch through one upload session.
    async fn upload(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        let c = &self.client;
        let mode = c.cfg.metadata_api;
        let in_session = mode != MetadataApi::Bulk;
        let retry_all = Report::retry_all;
        if batch.is_empty() {
            return retry_all(&batch, "", Verdict::Ok);
        }
        if c.wait_for_rate_limit(stop).await {
            return retry_all(&batch, "shutting down", Verdict::Ok);
        }
        let groups = batch[0].meta.groups.clone();
        let body = SessionRequest {
            groups: &groups,
            assets: batch
                .iter()
                .map(|l| AssetRequest {
                    filename: &l.meta.filename,
                    size: l.image_len,
                    crc32c: nexus_crc32c(l.image_crc),
                    mime: &l.meta.mime,
                    custom_metadata: in_session.then_some(&l.meta.custom),
                })
                .collect(),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => {
                return retry_all(
                    &batch,
                    "cannot encode request",
                    Verdict::Split(format!("cannot encode the session request: {e}")),
                );
            }
        };
        let url = c.url(&c.project_path("/assetuploadsessions"));
        let resp = tokio::select! {
            r = c.api(Method::POST, url).body(body).send() => r,
            _ = stopped(stop) => return retry_all(&batch, "shutting down", Verdict::Ok),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect() {
                    // Nothing reached the server: the attempt does not count against its
                    // session limit (an outage must not use up the window).
                    c.forget_last_session();
                }
                let h = c.network_error("creating an upload session", e);
                return retry_all(&batch, "session not created", h);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let h = c.network_error("reading the session response", e);
                return retry_all(&batch, "session response lost", h);
            }
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // The project's session limit, shared with every device on it: slow down.
            let retry_after = crate::upload::backoff::retry_after(&headers);
            let (wait, rate, cut) = c.session_rate_limited(retry_after);
            let why = c.describe_error_body(status, &bytes);
            if cut {
                info!(
                    reason = %why,
                    next_session_in_ms = wait.as_millis() as u64,
                    sessions_per_window = (rate * 100.0).round() / 100.0,
                    window_secs = c.cfg.session_rate_window.as_secs(),
                    "the platform's session limit is reached (429): this device slows down"
                );
            } else {
                // Routine in a crowded fleet: a device behind its share asks again soon.
                debug!(
                    reason = %why,
                    next_session_in_ms = wait.as_millis() as u64,
                    sessions_per_window = (rate * 100.0).round() / 100.0,
                    "429 while behind this device's share: the rate is kept, the next try comes soon"
                );
            }
            // Nothing of the batch was sent: back to pending, not counted as a re-send.
            return Report {
                outcomes: batch
                    .iter()
                    .map(|f| (f.seq, Outcome::NotSent("session limit (429)".into())))
                    .collect(),
                verdict: Verdict::RateLimited(format!("creating an upload session: {why}")),
                pending: None,
            };
        }
        if !status.is_success() {
            let h = c.classify("creating an upload session", status, &headers, &bytes);
            return retry_all(&batch, "session not created", h);
        }
        // Created, whatever the body holds: the pacer's wait for a session is over.
        c.session_accepted();
        let session: SessionResponse = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let h = Verdict::Backoff {
                    reason: c.clean(&format!(
                        "the session response is not what the protocol says ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )),
                    retry_after: None,
                };
                return retry_all(&batch, "garbage session response", h);
            }
        };
        drop(bytes);
        let session_id = c.clean(&session.id);
        let op_id = session.op_id.clone();
        info!(session = %session_id, operation = %c.clean(&op_id), frames = batch.len(),
            "upload session created");
        // On disk before any byte goes out: after a crash, the next start asks the
        // platform about this session instead of sending its frames again.
        let session_ref = SessionRef {
            id: session.id.clone(),
            operation: op_id.clone(),
        };
        let seqs: Vec<u64> = batch.iter().map(|f| f.seq).collect();
        let journal = Arc::clone(&self.journal);
        let _ =
            crate::queue::calls::call(move || journal.session_started(&seqs, &session_ref)).await;
        let mut specs: BTreeMap<String, Option<UploadSpec>> = session
            .assets
            .into_iter()
            .map(|a| (a.metadata.filename, a.upload))
            .collect();
        // Metadata to attach once the platform has the images (bulk modes).
        // (Taken out of the frames below, not cloned: the PUTs need no metadata.)
        let bulk = mode != MetadataApi::Session;
        let mut jobs_meta: Vec<MetaJob> = Vec::new();

        // PUT every file that has an upload spec, `put_concurrency` at a time.
        let mut outcomes: Vec<(u64, Outcome)> = Vec::new();
        let mut missing = 0usize;
        let n = batch.len();
        let mut jobs = Vec::with_capacity(n);
        for mut f in batch {
            match specs.remove(&f.meta.filename) {
                Some(Some(spec)) => {
                    if bulk {
                        jobs_meta.push(MetaJob::new(
                            f.seq,
                            f.meta.filename.clone(),
                            std::mem::take(&mut f.meta.custom),
                        ));
                    }
                    jobs.push((f, spec));
                }
                // A session that cannot carry the frame counts as an attempt for it, so
                // `max_attempts` ends a frame the platform never takes instead of one
                // session every few minutes forever.
                Some(None) | None => {
                    missing += 1;
                    outcomes.push((
                        f.seq,
                        Outcome::Failed(
                            "the session answer has no upload URL for this frame".into(),
                        ),
                    ));
                }
            }
        }
        drop(specs);
        let mut uploaded: Vec<(u64, String)> = Vec::new();
        let mut network_failures = 0usize;
        let mut transient: Option<String> = None;
        if missing > 0 {
            // A server that lists fewer assets than asked for is not healthy: back off
            // instead of sending the rest again at once.
            let why = format!(
                "the session response has no upload URL for {missing} of {} frame(s); they go into a later session",
                n
            );
            warn!(session = %session_id, missing, "{why}");
            transient = Some(why);
        }
        let mut puts = put_all(
            &c.http,
            jobs,
            c.cfg.stall_timeout,
            c.cfg.put_concurrency,
            self.throttle.as_ref(),
            stop,
        );
        while let Some((seq, name, put)) = puts.next().await {
            match put {
                Put::Uploaded => uploaded.push((seq, name)),
                Put::Done(Outcome::Rejected(m)) => {
                    let m = c.clean(&m);
                    error!(seq, reason = %m, "storage refused the frame's upload");
                    outcomes.push((seq, Outcome::Rejected(m)));
                }
                Put::Done(Outcome::Failed(m)) => {
                    let m = c.clean(&m);
                    warn!(seq, reason = %m, "a frame's upload failed; it counts as an attempt");
                    outcomes.push((seq, Outcome::Failed(m)));
                }
                Put::Done(o) => outcomes.push((seq, o)),
                Put::Stopped => {
                    outcomes.push((
                        seq,
                        Outcome::NotSent("stopped before its upload finished".into()),
                    ));
                    transient = Some("shutting down".into());
                }
                Put::Transient { reason, network } => {
                    if network {
                        network_failures += 1;
                    }
                    outcomes.push((seq, Outcome::Retry(reason.clone())));
                    transient = Some(reason);
                }
            }
        }
        drop(puts);
        let verdict = match transient {
            Some(r) if uploaded.is_empty() && network_failures > 0 => Verdict::Offline(r),
            Some(r) => Verdict::Backoff {
                reason: r,
                retry_after: None,
            },
            None => Verdict::Ok,
        };
        if *stop.borrow() && !uploaded.is_empty() {
            // Stopping in the middle of the PUTs: the session is not cancelled, so the
            // frames already in storage are not lost to it. They keep their session; the
            // next start asks the platform about them (and cancels what is left of the
            // session), and only the others go again. A device stopped every few seconds
            // on a slow link still makes progress.
            info!(session = %session_id, uploaded = uploaded.len(), of = n,
                "stopping during the uploads; the next start picks the session up");
            outcomes.extend(uploaded.into_iter().map(|(s, _)| {
                (
                    s,
                    Outcome::Unknown("stopped during its session's uploads".into()),
                )
            }));
            return Report {
                outcomes,
                verdict,
                pending: None,
            };
        }
        if uploaded.is_empty() {
            c.cancel(&session.id).await;
            return Report {
                outcomes,
                verdict,
                pending: None,
            };
        }
        let partial = (uploaded.len() < n).then_some(uploaded.len() as u64);
        let seqs: Vec<u64> = uploaded.iter().map(|(s, _)| *s).collect();
        let sent: HashSet<u64> = seqs.iter().copied().collect();
        jobs_meta.retain(|j| sent.contains(&j.seq));
        let client = Arc::clone(&self.client);
        let stop = stop.clone();
        let fut = async move {
            let mut out = finish(&client, session_id, op_id, uploaded, partial, stop).await;
            // Bulk modes: a frame is delivered once its metadata is attached too.
            let at: HashMap<u64, usize> =
                out.iter().enumerate().map(|(i, (s, _))| (*s, i)).collect();
            let accepted: Vec<MetaJob> = jobs_meta
                .into_iter()
                .filter(|j| {
                    at.get(&j.seq)
                        .is_some_and(|i| out[*i].1 == Outcome::Accepted)
                })
                .collect();
            let (attached, _) = attach(&client, &accepted).await;
            for (seq, o) in attached {
                if let Some(i) = at.get(&seq) {
                    out[*i].1 = o;
                }
            }
            out
        };
        Report {
            outcomes,
            verdict,
            pending: Some(Pending {
                seqs,
                fut: Box::pin(fut),
            }),
        }
    }
}
