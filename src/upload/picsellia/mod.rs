//! The Picsellia sink: each frame goes into the configured datalake on its own, per
//! `docs/protocols/picsellia.md` (the SDK's `Datalake.upload_data`, which has no batch
//! registration).
//!
//! Once per process (and again after a refusal): ping, organization, datalake and its
//! storage connector, data source (found or created). Tags are found or created the first
//! time a frame names them, then cached. Per batch:
//!
//! 1. **Look up** the frames that carry an earlier object name whose registration was
//!    never confirmed (`datas/find?object_name=`): found → decided by its status, not sent
//!    again.
//! 2. **Name** every other frame (`generate_object_name`, `concurrency` at a time) and
//!    **record** the names in the queue in one durable write before any byte goes out:
//!    registration is the step that creates data, so after a crash the next start asks for
//!    each recorded name before it registers anything again.
//! 3. Per frame, `concurrency` frames at a time, each frame's outcome its own: presigned
//!    request → **storage** (`storage.rs`; never the platform token) → **registration**
//!    (`POST /api/datalake/{dl}/datas` with tags, source, `meta`, standard `metadata` and
//!    `custom_metadata`). 208 ("already has this name") is a delivery. A registration
//!    whose answer is lost (network, 5xx, 429) is looked up by object name before it is
//!    tried again with the same object; when the platform cannot be asked, the frame keeps
//!    its object name and is looked up first next time.
//! 4. **Processing** (`PENDING`/`COMPUTING`) is followed in the background like a Nexus
//!    operation: `DONE` → delivered; `ERROR` → dead with the platform's words; no end
//!    within `processing_timeout_secs` → delivered (the data exists; logged).
//!
//! Errors: network, 5xx and 429 are transient (backoff, `Retry-After`); 401/402/403/404
//! from the API need an operator (one ERROR, frames kept); a 400/422 on registration (the
//! datalake's custom-metadata schema) names the frame's keys it mentions and counts as a
//! failed attempt, so the frame goes dead only after `max_attempts` (the schema may be
//! fixed meanwhile). Frames over 25 MiB would need the SDK's multipart upload, which
//! edgecap does not implement: they are refused and kept as dead frames.
//!
//! `client.rs` holds the API client and lookups, `admin.rs` the operator commands' calls, `storage.rs` the object-storage upload,
//! `wire.rs` the JSON bodies, `follow.rs` the processing follow-up; this file is the flow.

pub mod admin;
mod client;
mod follow;
mod storage;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub(crate) use client::{ApiError, Boot, Client};
use storage::Stored;
pub(crate) use wire::Data;
use wire::{ObjectName, ObjectNameRequest, PresignRequest, Presigned, Register, Size};

use super::sink::{
    Frame, ImageError, Outcome, Pending, Report, SessionJournal, SessionRef, Sink, Verdict,
};
use super::stopped;
use crate::config::{MetaValue, PicselliaConfig, Secret};

/// `SessionRef::operation` of a recorded object name.
pub(crate) const OBJECT_SESSION: &str = "picsellia-object";

/// Above this the SDK uses its multipart upload (protocol doc §4, item 4).
const LARGE: u32 = 25 * 1024 * 1024;

/// Registrations of one frame whose answer was lost, each looked up before the next.
const REGISTER_TRIES: usize = 3;

/// The Picsellia sink.
pub struct PicselliaSink {
    client: Arc<Client>,
    journal: Arc<dyn SessionJournal>,
    throttle: Option<Arc<crate::upload::throttle::Throttle>>,
}

impl PicselliaSink {
    /// Builds the client for the datalake of `cfg`; object names are noted in `journal`.
    pub fn new(
        cfg: PicselliaConfig,
        secret: Secret,
        device: &str,
        journal: Arc<dyn SessionJournal>,
    ) -> Result<Self, String> {
        Ok(Self {
            client: Arc::new(Client::new(cfg, secret, device)?),
            journal,
            throttle: None,
        })
    }

    /// Storage uploads draw their bytes through `throttle` (the bandwidth cap).
    pub fn with_throttle(mut self, throttle: Arc<crate::upload::throttle::Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }
}

/// How one frame ended in this batch.
enum End {
    /// Decided now, with what it says about the link.
    Now(Outcome, Verdict),
    /// Registered; processing is followed in the background.
    Follow(String),
}

impl Sink for PicselliaSink {
    async fn probe(&self) -> Result<(), String> {
        self.client.probe().await
    }

    /// The start-up lookups, done again: the token is accepted, the organization and the
    /// datalake exist and the datalake has storage.
    async fn check(&self) -> Verdict {
        match self.client.refresh().await {
            Ok(_) => Verdict::Ok,
            Err(e) => match (e.status(), e.verdict()) {
                (Some(401 | 403), _) => Verdict::OperatorMustAct(format!(
                    "{e} (the API token is refused: set upload.picsellia.api_token*)"
                )),
                (_, v) => v,
            },
        }
    }

    /// A frame whose object name was recorded before a crash or a stop: looked up by that
    /// name; present → delivered (as Nexus recovery takes an existing asset; an `ERROR`
    /// status still makes it dead); absent → sent again; unknown → kept with its name
    /// (looked up again before it is registered).
    async fn recover(&self, session: SessionRef, frames: Vec<Frame>) -> Report {
        let mut report = Report {
            outcomes: Vec::new(),
            verdict: Verdict::Ok,
            pending: None,
        };
        if session.operation != OBJECT_SESSION {
            return Report::retry_all(&frames, "not a Picsellia object name", Verdict::Ok);
        }
        for f in frames {
            match self.look_up(f.seq, &session.id).await {
                // Registered and still processing: it is on the platform. Following it
                // here would find it again after every restart that lands mid-processing.
                Some(End::Follow(id)) => report.outcomes.push((f.seq, Outcome::AcceptedAs(id))),
                Some(End::Now(o, v)) => {
                    report.verdict = worse(report.verdict, v);
                    report.outcomes.push((f.seq, o));
                }
                None => report.outcomes.push((
                    f.seq,
                    Outcome::Retry("not on the platform after a restart".into()),
                )),
            }
        }
        report
    }

    async fn send(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        self.deliver(batch, stop).await
    }
}

impl PicselliaSink {
    async fn deliver(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        let c = &self.client;
        let boot = match c.boot().await {
            Ok(b) => b,
            Err(e) => return Report::retry_all(&batch, "datalake not reached", e.verdict()),
        };
        let mut names: Vec<String> = batch.iter().flat_map(|f| f.meta.tags.clone()).collect();
        names.sort();
        names.dedup();
        let tags: HashMap<String, String> = match c.tag_ids(&names).await {
            Ok(ids) => names.into_iter().zip(ids).collect(),
            Err(e) => return Report::retry_all(&batch, "tags not resolved", e.verdict()),
        };
        let conc = c.cfg.concurrency;
        let mut verdict = Verdict::Ok;
        let mut outcomes: Vec<(u64, Outcome)> = Vec::new();
        let mut follow: Vec<(u64, String)> = Vec::new();
        let mut settle = |seq: u64, end: End, verdict: &mut Verdict| match end {
            End::Now(o, v) => {
                *verdict = worse(verdict.clone(), v);
                outcomes.push((seq, o));
            }
            End::Follow(id) => follow.push((seq, id)),
        };

        // 1. Frames with an unconfirmed registration: ask first.
        let (known, fresh): (Vec<Frame>, Vec<Frame>) = batch.into_iter().partition(|f| {
            f.previous
                .as_ref()
                .is_some_and(|s| s.operation == OBJECT_SESSION)
        });
        let looked: Vec<(Frame, Option<End>)> = stream::iter(known)
            .map(|f| async move {
                let name = f
                    .previous
                    .as_ref()
                    .map(|s| s.id.clone())
                    .unwrap_or_default();
                let end = self.look_up(f.seq, &name).await;
                (f, end)
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        let mut todo = fresh;
        for (f, end) in looked {
            match end {
                Some(end) => settle(f.seq, end, &mut verdict),
                None => todo.push(f),
            }
        }

        // 2. Object names, recorded in one durable write.
        let boot_ref: &Boot = &boot;
        let named: Vec<(Frame, Result<String, ApiError>)> = stream::iter(todo)
            .map(|f| async move {
                let r = self.object_name(boot_ref, &f).await;
                (f, r)
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        let mut jobs = Vec::with_capacity(named.len());
        for (f, r) in named {
            match r {
                Ok(name) => jobs.push((f, name)),
                Err(e) => settle(
                    f.seq,
                    End::Now(Outcome::Retry(e.to_string()), e.verdict()),
                    &mut verdict,
                ),
            }
        }
        if !jobs.is_empty() {
            let refs: Vec<(u64, SessionRef)> = jobs
                .iter()
                .map(|(f, name)| {
                    (
                        f.seq,
                        SessionRef {
                            id: name.clone(),
                            operation: OBJECT_SESSION.to_string(),
                        },
                    )
                })
                .collect();
            let journal = Arc::clone(&self.journal);
            let _ = crate::queue::calls::call(move || journal.sessions_started(&refs)).await;
        }

        // 3. Storage and registration, each frame on its own.
        let ends: Vec<(u64, End)> = stream::iter(jobs)
            .map(|(f, name)| {
                let tags = &tags;
                async move {
                    let seq = f.seq;
                    (seq, self.one(&f, &name, boot_ref, tags, stop).await)
                }
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for (seq, end) in ends {
            settle(seq, end, &mut verdict);
        }
        // One frame's lost connection is not a link that is down when others got through.
        let through = !follow.is_empty() || outcomes.iter().any(|(_, o)| o.accepted());
        if let (Verdict::Offline(reason), true) = (&verdict, through) {
            verdict = Verdict::Backoff {
                reason: reason.clone(),
                retry_after: None,
            };
        }
        Report {
            outcomes,
            verdict,
            pending: self.follow(follow),
        }
    }

    /// `POST …/generate_object_name` for one frame.
    async fn object_name(&self, boot: &Boot, f: &Frame) -> Result<String, ApiError> {
        let c = &self.client;
        let body = ObjectNameRequest {
            filename: &f.meta.filename,
            kind: "DATA",
            upload_dir: c.cfg.upload_dir.as_deref(),
        };
        let url = c.url(&format!(
            "/api/organization/{}/connector/{}/generate_object_name",
            boot.org, boot.connector
        ));
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let (_, o): (_, ObjectName) = c
            .json("asking for an object name", Method::POST, url, Some(body))
            .await?;
        Ok(o.object_name)
    }

    /// Storage, then registration, of one named frame.
    async fn one(
        &self,
        f: &Frame,
        name: &str,
        boot: &Boot,
        tags: &HashMap<String, String>,
        stop: &watch::Receiver<bool>,
    ) -> End {
        let c = &self.client;
        let seq = f.seq;
        let not_sent = || {
            End::Now(
                Outcome::NotSent("stopped before its upload".into()),
                Verdict::Ok,
            )
        };
        if *stop.borrow() {
            return not_sent();
        }
        if f.image_len > LARGE {
            let why = format!(
                "{} bytes: frames over 25 MiB need Picsellia's multipart upload, which edgecap does not implement",
                f.image_len
            );
            error!(seq, filename = %f.meta.filename, "{why}");
            return End::Now(Outcome::Rejected(why), Verdict::Ok);
        }
        let image = match f.image().await {
            Ok(i) => i,
            Err(ImageError::Gone(e)) => {
                warn!(seq, error = %e, "frame cannot be uploaded");
                return End::Now(Outcome::Gone, Verdict::Ok);
            }
            Err(ImageError::Transient(e)) => {
                return End::Now(
                    Outcome::Retry(e.clone()),
                    Verdict::Backoff {
                        reason: e,
                        retry_after: None,
                    },
                );
            }
        };
        let mime = f.meta.mime.as_str();
        let presign = PresignRequest {
            object_name: name,
            content_type: mime,
        };
        let url = c.url(&format!(
            "/api/object-storage/{}/generate_presigned_url",
            boot.connector
        ));
        let body = serde_json::to_vec(&presign).unwrap_or_default();
        let presigned: Presigned = tokio::select! {
            r = c.json("asking for a presigned upload", Method::POST, url, Some(body)) => match r {
                Ok((_, p)) => p,
                Err(e) => return End::Now(Outcome::Retry(e.to_string()), e.verdict()),
            },
            _ = stopped(stop) => return not_sent(),
        };
        let stall = c.cfg.stall_timeout;
        let transfer = storage::Transfer {
            http: &c.storage,
            stall,
            throttle: self.throttle.as_ref(),
            stop,
        };
        match storage::upload(&transfer, &presigned, name, mime, image.clone()).await {
            Stored::Done => {}
            Stored::Stopped => return not_sent(),
            Stored::Transient { reason, network } => {
                let reason = c.clean(&reason);
                warn!(seq, reason = %reason, "a frame's storage upload failed; it goes again later");
                let v = if network {
                    Verdict::Offline(reason.clone())
                } else {
                    Verdict::Backoff {
                        reason: reason.clone(),
                        retry_after: None,
                    }
                };
                return End::Now(Outcome::Retry(reason), v);
            }
            Stored::Refused(reason) => {
                let reason = c.clean(&reason);
                warn!(seq, reason = %reason, "storage refused a frame's upload; it counts as an attempt");
                return End::Now(Outcome::Failed(reason), Verdict::Ok);
            }
        }
        let tag_ids: Vec<&str> = f
            .meta
            .tags
            .iter()
            .filter_map(|t| tags.get(t).map(String::as_str))
            .collect();
        let body = Register {
            kind: wire::data_type(mime),
            filename: &f.meta.filename,
            object_name: name,
            content_type: mime,
            tags: tag_ids,
            data_source_id: boot.source.as_deref(),
            meta: crate::encode::jpeg_display_size(&image)
                .map(|(width, height)| Size { width, height }),
            metadata: standard_metadata(f),
            custom_metadata: (!f.meta.custom.is_empty()).then_some(&f.meta.custom),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        drop(image);
        let url = c.url(&format!("/api/datalake/{}/datas", boot.datalake));
        let mut last: Option<ApiError> = None;
        for attempt in 0..REGISTER_TRIES {
            if attempt > 0 {
                // The last answer was lost: ask before registering again.
                if let Some(end) = self.look_up(seq, name).await {
                    return end;
                }
                let pause = std::time::Duration::from_millis(500 << attempt);
                if crate::upload::sleep_or_stop(pause, stop).await {
                    return End::Now(
                        Outcome::Unknown("stopped while its registration was retried".into()),
                        Verdict::Ok,
                    );
                }
            }
            let r = tokio::select! {
                r = c.send("registering a frame", Method::POST, url.clone(), Some(body.clone())) => r,
                _ = stopped(stop) => return End::Now(
                    Outcome::Unknown("stopped during its registration".into()),
                    Verdict::Ok,
                ),
            };
            match r {
                Ok((status, _)) if status.as_u16() == 208 => {
                    info!(seq, object_name = %c.clean(name),
                        "the platform already has this object: delivered");
                    return End::Now(Outcome::Accepted, Verdict::Ok);
                }
                Ok((_, bytes)) => match serde_json::from_slice::<Data>(&bytes) {
                    Ok(d) => return self.by_status(d),
                    Err(e) => {
                        last = Some(ApiError::Garbage(c.clean(&format!(
                            "registering a frame: the answer is not a data ({e})"
                        ))));
                    }
                },
                Err(e) if e.uncertain() => last = Some(e),
                Err(e) => return self.refused(f, e),
            }
        }
        // Every answer lost, and the last lookup was not made yet.
        match self.look_up(seq, name).await {
            Some(end) => end,
            None => {
                let e = last.unwrap_or_else(|| ApiError::Network("no answer".into()));
                End::Now(Outcome::Retry(e.to_string()), e.verdict())
            }
        }
    }

    /// A registration the platform refused outright.
    fn refused(&self, f: &Frame, e: ApiError) -> End {
        let seq = f.seq;
        match e.status() {
            Some(400 | 422) => {
                let text = e.to_string();
                let custom = f.meta.custom.keys();
                let keys: Vec<&str> = custom
                    .iter()
                    .map(String::as_str)
                    .chain(["acquired_at", "latitude", "longitude"])
                    .filter(|k| text.contains(k))
                    .collect();
                let why = if keys.is_empty() {
                    format!("the platform refused this frame's registration: {text}")
                } else {
                    format!(
                        "the platform refused this frame's metadata (keys: {}): {text}",
                        keys.join(", ")
                    )
                };
                error!(seq, filename = %f.meta.filename, keys = ?keys, "{why}; it counts as a failed attempt (check the datalake's custom-metadata schema)");
                End::Now(Outcome::Failed(why), Verdict::Ok)
            }
            _ => End::Now(Outcome::Retry(e.to_string()), e.verdict()),
        }
    }

    /// Looks a frame up by object name: `None` when the platform has no such data.
    async fn look_up(&self, seq: u64, object_name: &str) -> Option<End> {
        match self.client.find_data("object_name", object_name).await {
            Ok(Some(d)) => Some(self.by_status(d)),
            Ok(None) => None,
            Err(e) => {
                self.client.lookup_failed(seq, &e);
                // Keeps its object name, asked about again; a re-send is counted by what
                // left it unknown first (nothing was interrupted here).
                Some(End::Now(
                    Outcome::Unconfirmed(format!("cannot ask the platform: {e}")),
                    e.verdict(),
                ))
            }
        }
    }

    /// A registered data, by its processing status.
    fn by_status(&self, d: Data) -> End {
        match follow::settled(&self.client, &d) {
            Some(o) => End::Now(o, Verdict::Ok),
            None => End::Follow(d.id),
        }
    }

    /// The background follow-up of registered frames still processing.
    fn follow(&self, frames: Vec<(u64, String)>) -> Option<Pending> {
        if frames.is_empty() {
            return None;
        }
        let seqs = frames.iter().map(|(s, _)| *s).collect();
        let client = Arc::clone(&self.client);
        Some(Pending {
            seqs,
            fut: Box::pin(async move { follow::follow(&client, frames).await }),
        })
    }
}

/// The standard `metadata`: `acquired_at` from the capture time, the camera's position.
fn standard_metadata(f: &Frame) -> Option<BTreeMap<&'static str, Value>> {
    let mut m = BTreeMap::new();
    let ms = f
        .meta
        .captured_ms
        .or(match f.meta.custom.get("capture_time_ms") {
            Some(MetaValue::Int(ms)) => Some(ms),
            _ => None,
        });
    if let Some(at) = ms.and_then(wire::acquired_at) {
        m.insert("acquired_at", Value::from(at));
    }
    if let Some(l) = f.meta.location {
        m.insert("latitude", Value::from(l.latitude));
        m.insert("longitude", Value::from(l.longitude));
    }
    (!m.is_empty()).then_some(m)
}

/// The worse of two verdicts: an operator's problem over the link being down over a
/// backoff over fine.
fn worse(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: &Verdict| match v {
        Verdict::Ok => 0,
        Verdict::Split(_) | Verdict::Backoff { .. } | Verdict::RateLimited(_) => 1,
        Verdict::Offline(_) => 2,
        Verdict::OperatorMustAct(_) => 3,
    };
    match (rank(&a), rank(&b)) {
        (x, y) if y > x => b,
        (x, y) if x == y => match (a, b) {
            (
                Verdict::Backoff {
                    reason,
                    retry_after: r1,
                },
                Verdict::Backoff {
                    retry_after: r2, ..
                },
            ) => Verdict::Backoff {
                reason,
                retry_after: r1.max(r2),
            },
            (a, _) => a,
        },
        _ => a,
    }
}
