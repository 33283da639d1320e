//! The Datature Nexus sink: one upload session per batch, per `shared/protocols/nexus.md`.
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
//!    (`GET …/assets/{filename}`): present → accepted, absent → a failed attempt, logged.
//! 4. On shutdown during the PUTs, or when no PUT succeeded, the session is cancelled
//!    (`POST …/assetuploadsessions/{id}:cancel`; 409 means already finished).
//!
//! Everything that comes back from the server is treated as untrusted text: it is shortened
//! and any occurrence of the secret key is masked before it reaches a log line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::backoff::{RateLimiter, parse_retry_after};
use super::{Health, Outcome, Pending, Report, sleep_or_stop, stopped};
use crate::config::{MetaValue, NexusConfig};
use crate::queue::{Leased, Queue, ReadError};

/// The Nexus client.
pub struct NexusSink {
    cfg: NexusConfig,
    client: reqwest::Client,
    base: Url,
    secret_header: HeaderValue,
    queue: Arc<Queue>,
    limiter: Mutex<RateLimiter>,
}

#[derive(Serialize)]
struct SessionRequest<'a> {
    groups: &'a [String],
    assets: Vec<AssetRequest<'a>>,
}

#[derive(Serialize)]
struct AssetRequest<'a> {
    filename: &'a str,
    size: u32,
    crc32c: i32,
    mime: &'a str,
    #[serde(rename = "customMetadata")]
    custom_metadata: &'a BTreeMap<String, MetaValue>,
}

#[derive(Deserialize)]
struct SessionResponse {
    id: String,
    #[serde(rename = "opId")]
    op_id: String,
    assets: Vec<AssetResponse>,
}

#[derive(Deserialize)]
struct AssetResponse {
    metadata: AssetResponseMeta,
    upload: UploadSpec,
}

#[derive(Deserialize)]
struct AssetResponseMeta {
    filename: String,
}

#[derive(Deserialize, Clone)]
struct UploadSpec {
    method: String,
    url: String,
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Operation {
    status: OperationStatus,
}

#[derive(Deserialize)]
struct OperationStatus {
    overview: String,
    #[serde(default)]
    progress: Option<OperationProgress>,
}

#[derive(Deserialize)]
struct OperationProgress {
    #[serde(rename = "withStatus")]
    with_status: WithStatus,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
struct WithStatus {
    finished: u64,
    cancelled: u64,
    errored: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Result of one PUT.
enum Put {
    Uploaded,
    Done(Outcome),
    /// Transient failure; `network` when the connection itself failed.
    Transient {
        reason: String,
        network: bool,
    },
}

impl NexusSink {
    /// Builds the client.
    pub fn new(cfg: NexusConfig, queue: Arc<Queue>) -> Result<Self, String> {
        // Picks ring as rustls' crypto provider (once per process; later calls are no-ops).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.stall_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("edgecap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let base = Url::parse(&cfg.endpoint).map_err(|e| format!("upload.endpoint: {e}"))?;
        let mut secret_header = HeaderValue::from_str(cfg.secret.expose())
            .map_err(|_| "upload secret key: not a valid header value".to_string())?;
        secret_header.set_sensitive(true);
        let limiter = Mutex::new(RateLimiter::new(
            cfg.session_rate_limit,
            cfg.session_rate_window,
        ));
        Ok(Self {
            cfg,
            client,
            base,
            secret_header,
            queue,
            limiter,
        })
    }

    fn url(&self, path: &str) -> Url {
        // RFC 3986 resolution of an absolute path drops any path of the base, as the SDK does.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn api(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .header("Secret-Key", self.secret_header.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.cfg.request_timeout)
    }

    fn project_path(&self, rest: &str) -> String {
        format!("/projects/{}{rest}", self.cfg.project_id)
    }

    /// Masks the secret and shortens server-provided text for logs.
    fn clean(&self, s: &str) -> String {
        let secret = self.cfg.secret.expose();
        let s: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
        if secret.is_empty() {
            s
        } else {
            s.replace(secret, "***")
        }
    }

    fn describe_error_body(&self, status: StatusCode, body: &[u8]) -> String {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody {
                code: Some(c),
                message: Some(m),
            }) => self.clean(&format!("{status} {c}: {m}")),
            Ok(ErrorBody {
                message: Some(m), ..
            }) => self.clean(&format!("{status}: {m}")),
            _ => self.clean(&format!("{status}: {}", String::from_utf8_lossy(body))),
        }
    }

    /// Health for a non-2xx answer of the API.
    fn classify(&self, what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Health {
        let text = format!("{what}: {}", self.describe_error_body(status, body));
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match status.as_u16() {
            401 | 403 | 404 => Health::OperatorMustAct(text),
            // The SDK waits 60 s before retrying a 429 that says nothing more.
            429 => Health::Backoff {
                reason: text,
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(60))),
            },
            408 => Health::Backoff {
                reason: text,
                retry_after,
            },
            400..=499 => Health::Split(text),
            _ => Health::Backoff {
                reason: text,
                retry_after,
            },
        }
    }

    fn network_error(&self, what: &str, e: reqwest::Error) -> Health {
        Health::Offline(self.clean(&format!("{what}: {}", e.without_url())))
    }

    /// Checks that the API answers at all (any HTTP status counts).
    pub async fn probe(&self) -> Result<(), String> {
        let url = self.url(&self.project_path(""));
        match self.api(Method::GET, url).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.clean(&e.without_url().to_string())),
        }
    }

    /// Sessions the client-side limiter still allows in its window now.
    pub fn sessions_left(&self) -> usize {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .available(Instant::now())
    }

    async fn wait_for_rate_limit(&self, stop: &watch::Receiver<bool>) -> bool {
        loop {
            let wait = {
                let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
                let w = l.wait_time(Instant::now());
                if w.is_zero() {
                    l.record(Instant::now());
                }
                w
            };
            if wait.is_zero() {
                return false;
            }
            info!(
                wait_secs = wait.as_secs(),
                limit = self.cfg.session_rate_limit,
                window_secs = self.cfg.session_rate_window.as_secs(),
                "session rate limit reached; waiting"
            );
            if sleep_or_stop(wait, stop).await {
                return true;
            }
        }
    }

    /// Sends one batch through one upload session.
    pub async fn send(
        self: &Arc<Self>,
        batch: Vec<Leased>,
        stop: &watch::Receiver<bool>,
    ) -> Report {
        let retry_all = |batch: &[Leased], why: &str, health: Health| Report {
            pending: None,
            outcomes: batch
                .iter()
                .map(|l| (l.seq, Outcome::Retry(why.to_string())))
                .collect(),
            health,
        };
        if batch.is_empty() {
            return retry_all(&batch, "", Health::Ok);
        }
        if self.wait_for_rate_limit(stop).await {
            return retry_all(&batch, "shutting down", Health::Ok);
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
                    custom_metadata: &l.meta.custom,
                })
                .collect(),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => {
                return retry_all(
                    &batch,
                    "cannot encode request",
                    Health::Split(format!("cannot encode the session request: {e}")),
                );
            }
        };
        let url = self.url(&self.project_path("/assetuploadsessions"));
        let resp = tokio::select! {
            r = self.api(Method::POST, url).body(body).send() => r,
            _ = stopped(stop) => return retry_all(&batch, "shutting down", Health::Ok),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect() {
                    // Nothing reached the server: the attempt does not count against its
                    // session limit (an outage must not use up the window).
                    self.limiter
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget_last();
                }
                let h = self.network_error("creating an upload session", e);
                return retry_all(&batch, "session not created", h);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let h = self.network_error("reading the session response", e);
                return retry_all(&batch, "session response lost", h);
            }
        };
        if !status.is_success() {
            let h = self.classify("creating an upload session", status, &headers, &bytes);
            return retry_all(&batch, "session not created", h);
        }
        let session: SessionResponse = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let h = Health::Backoff {
                    reason: self.clean(&format!(
                        "the session response is not what the protocol says ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )),
                    retry_after: None,
                };
                return retry_all(&batch, "garbage session response", h);
            }
        };
        let session_id = self.clean(&session.id);
        let op_id = session.op_id.clone();
        info!(session = %session_id, operation = %self.clean(&op_id), frames = batch.len(),
            "upload session created");
        let mut specs: BTreeMap<String, UploadSpec> = session
            .assets
            .into_iter()
            .map(|a| (a.metadata.filename, a.upload))
            .collect();

        // PUT every file that has an upload spec, `put_concurrency` at a time. Only that
        // many tasks exist at once: a task per frame of a 5000-frame batch would hold
        // megabytes of idle futures.
        let mut outcomes: Vec<(u64, Outcome)> = Vec::new();
        let mut missing = 0usize;
        let mut jobs = Vec::with_capacity(batch.len());
        for l in &batch {
            let Some(spec) = specs.remove(&l.meta.filename) else {
                missing += 1;
                outcomes.push((
                    l.seq,
                    Outcome::Retry("missing from session response".into()),
                ));
                continue;
            };
            let deadline = put_deadline(self.cfg.stall_timeout, l.image_len);
            jobs.push((l.seq, l.meta.filename.clone(), spec, deadline));
        }
        drop(specs);
        let mut jobs = jobs.into_iter();
        let mut tasks = tokio::task::JoinSet::new();
        let spawn_next = |tasks: &mut tokio::task::JoinSet<_>, jobs: &mut std::vec::IntoIter<_>| {
            let Some((seq, name, spec, deadline)): Option<(u64, String, UploadSpec, Duration)> =
                jobs.next()
            else {
                return;
            };
            let client = self.client.clone();
            let queue = Arc::clone(&self.queue);
            let stop = stop.clone();
            tasks.spawn(async move {
                let r = put_file(&client, &queue, seq, &spec, deadline, &stop).await;
                (seq, name, r)
            });
        };
        for _ in 0..self.cfg.put_concurrency.max(1) {
            spawn_next(&mut tasks, &mut jobs);
        }
        let mut uploaded: Vec<(u64, String)> = Vec::new();
        let mut network_failures = 0usize;
        let mut transient: Option<String> = None;
        if missing > 0 {
            // A server that lists fewer assets than asked for is not healthy: back off
            // instead of sending the rest again at once.
            let why = format!(
                "the session response has no upload URL for {missing} of {} frame(s); they go into a later session",
                batch.len()
            );
            warn!(session = %session_id, missing, "{why}");
            transient = Some(why);
        }
        while let Some(res) = tasks.join_next().await {
            spawn_next(&mut tasks, &mut jobs);
            let Ok((seq, name, put)) = res else { continue };
            match put {
                Put::Uploaded => uploaded.push((seq, name)),
                Put::Done(Outcome::Rejected(m)) => {
                    let m = self.clean(&m);
                    error!(seq, reason = %m, "storage refused the frame's upload");
                    outcomes.push((seq, Outcome::Rejected(m)));
                }
                Put::Done(Outcome::Failed(m)) => {
                    let m = self.clean(&m);
                    warn!(seq, reason = %m, "a frame's upload failed; it counts as an attempt");
                    outcomes.push((seq, Outcome::Failed(m)));
                }
                Put::Done(o) => outcomes.push((seq, o)),
                Put::Transient { reason, network } => {
                    if network {
                        network_failures += 1;
                    }
                    outcomes.push((seq, Outcome::Retry(reason.clone())));
                    transient = Some(reason);
                }
            }
        }
        let health = match transient {
            Some(r) if uploaded.is_empty() && network_failures > 0 => Health::Offline(r),
            Some(r) => Health::Backoff {
                reason: r,
                retry_after: None,
            },
            None => Health::Ok,
        };
        if *stop.borrow() || uploaded.is_empty() {
            self.cancel(&session.id).await;
            outcomes.extend(
                uploaded
                    .into_iter()
                    .map(|(s, _)| (s, Outcome::Retry("session cancelled".into()))),
            );
            return Report {
                outcomes,
                health,
                pending: None,
            };
        }
        let partial = (uploaded.len() < batch.len()).then_some(uploaded.len() as u64);
        let seqs = uploaded.iter().map(|(s, _)| *s).collect();
        let sink = Arc::clone(self);
        let stop = stop.clone();
        let fut = async move {
            sink.finish(session_id, op_id, uploaded, partial, stop)
                .await
        };
        Report {
            outcomes,
            health,
            pending: Some(Pending {
                seqs,
                fut: Box::pin(fut),
            }),
        }
    }

    /// Follows a session's operation and decides the fate of its uploaded frames.
    async fn finish(
        self: Arc<Self>,
        session_id: String,
        op_id: String,
        uploaded: Vec<(u64, String)>,
        partial: Option<u64>,
        stop: watch::Receiver<bool>,
    ) -> Vec<(u64, Outcome)> {
        match self.await_operation(&op_id, partial, &stop).await {
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
                    (s, Outcome::Retry(why.into()))
                })
                .collect(),
            OpEnd::Check(why) => {
                warn!(session = %session_id, operation = %self.clean(&op_id), why = %why,
                    frames = uploaded.len(), "operation did not finish cleanly; checking each asset");
                let mut out = Vec::with_capacity(uploaded.len());
                for (seq, name) in uploaded {
                    out.push((seq, self.check_asset(&name, &why).await));
                }
                out
            }
        }
    }

    async fn cancel(&self, session_id: &str) {
        let url =
            self.url(&self.project_path(&format!("/assetuploadsessions/{session_id}:cancel")));
        let req = self
            .api(Method::POST, url)
            .body(Vec::new())
            .timeout(Duration::from_secs(3));
        match req.send().await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::CONFLICT => {
                info!(session = %self.clean(session_id), "upload session cancelled");
            }
            Ok(r) => warn!(session = %self.clean(session_id), status = %r.status(),
                "cancelling the upload session failed"),
            Err(e) => {
                warn!(session = %self.clean(session_id), error = %self.clean(&e.without_url().to_string()),
                "cancelling the upload session failed")
            }
        }
    }

    /// Follows an operation to its end. `partial = Some(n)`: only `n` of the session's
    /// assets were uploaded, so the operation may never report `Finished` as a whole; it is
    /// over for us once its progress accounts for `n` assets.
    async fn await_operation(
        &self,
        op_id: &str,
        partial: Option<u64>,
        stop: &watch::Receiver<bool>,
    ) -> OpEnd {
        let deadline = Instant::now() + self.cfg.operation_timeout;
        let url = self.url(&self.project_path(&format!("/operations/{op_id}")));
        loop {
            let resp = self.api(Method::GET, url.clone()).send().await;
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
                    if r.status().is_client_error()
                        && r.status() != StatusCode::TOO_MANY_REQUESTS =>
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
                    self.cfg.operation_timeout.as_secs()
                ));
            }
            if sleep_or_stop(self.cfg.operation_poll, stop).await {
                // One last look before giving up on it for this run.
                continue;
            }
        }
    }

    async fn check_asset(&self, filename: &str, why: &str) -> Outcome {
        let mut url = self.url(&self.project_path("/assets"));
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.push(filename);
        }
        match self.api(Method::GET, url).send().await {
            Ok(r) if r.status().is_success() => Outcome::Accepted,
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                error!(
                    filename,
                    why, "the platform did not create this asset; it will be uploaded again"
                );
                Outcome::Failed(format!("{why}; asset not created"))
            }
            Ok(r) => Outcome::Retry(format!("{why}; asset lookup answered {}", r.status())),
            Err(e) => Outcome::Retry(
                self.clean(&format!("{why}; asset lookup failed: {}", e.without_url())),
            ),
        }
    }
}

/// The `crc32c` value Nexus wants: the big-endian CRC-32C digest read as a signed i32
/// (protocol doc §4.2), i.e. the u32 reinterpreted in two's complement.
pub fn nexus_crc32c(crc: u32) -> i32 {
    i32::from_be_bytes(crc.to_be_bytes())
}

enum OpEnd {
    Finished,
    /// Stopped before the operation ended: nothing is known.
    Unknown,
    /// Ended badly or timed out: look the assets up one by one.
    Check(String),
}

/// The longest a PUT of `len` bytes may take: the stall timeout plus the time to send it
/// at 16 KiB/s (a poor LTE link). `read_timeout` alone does not bound a server that stops
/// reading the body.
fn put_deadline(stall: Duration, len: u32) -> Duration {
    stall + Duration::from_secs_f64(f64::from(len) / 16_384.0)
}

async fn put_file(
    client: &reqwest::Client,
    queue: &Arc<Queue>,
    seq: u64,
    spec: &UploadSpec,
    deadline: Duration,
    stop: &watch::Receiver<bool>,
) -> Put {
    let q = Arc::clone(queue);
    let image = match tokio::task::spawn_blocking(move || q.read_image(seq)).await {
        Ok(Ok(i)) => bytes::Bytes::from(i),
        Ok(Err(ReadError::Io { source, .. })) => {
            return Put::Transient {
                reason: source.to_string(),
                network: false,
            };
        }
        Ok(Err(e)) => {
            warn!(seq, error = %e, "frame cannot be uploaded");
            return Put::Done(Outcome::Gone);
        }
        Err(e) => {
            return Put::Transient {
                reason: format!("read task failed: {e}"),
                network: false,
            };
        }
    };
    let Ok(method) = Method::from_bytes(spec.method.as_bytes()) else {
        return Put::Done(Outcome::Rejected(format!(
            "the server asked for an invalid HTTP method {:?}",
            spec.method
        )));
    };
    let Ok(url) = Url::parse(&spec.url) else {
        return Put::Transient {
            reason: "the server returned an invalid upload URL".into(),
            network: false,
        };
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
            }
            _ => {
                return Put::Transient {
                    reason: format!("the server returned an invalid upload header {k:?}"),
                    network: false,
                };
            }
        }
    }
    let delays = [Duration::from_secs(1), Duration::from_secs(2)];
    let mut attempt = 0;
    loop {
        let req = client
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .timeout(deadline)
            .body(image.clone());
        let res = tokio::select! {
            r = req.send() => r,
            _ = stopped(stop) => return Put::Transient { reason: "shutting down".into(), network: false },
        };
        let (retryable, reason, network) = match res {
            Ok(r) if r.status().as_u16() < 400 => return Put::Uploaded,
            Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                return Put::Transient {
                    reason: "storage answered 403 (signed URL expired or refused); a new session will be used".into(),
                    network: false,
                };
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
                let reason = format!("storage answered {status}: {text}");
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    (true, reason, false)
                } else if status == StatusCode::BAD_REQUEST && is_digest_mismatch(&text) {
                    // The bytes were damaged on the way (the spool file's own checksum
                    // held when it was read): a failed attempt, sent again from the spool.
                    return Put::Done(Outcome::Failed(format!(
                        "{reason} (the body did not match its checksum on arrival; it will be sent again)"
                    )));
                } else {
                    return Put::Done(Outcome::Rejected(reason));
                }
            }
            Err(e) => (true, format!("upload failed: {}", e.without_url()), true),
        };
        if !retryable || attempt >= delays.len() {
            return Put::Transient { reason, network };
        }
        debug!(seq, attempt, reason, "retrying a PUT");
        if sleep_or_stop(delays[attempt], stop).await {
            return Put::Transient {
                reason: "shutting down".into(),
                network: false,
            };
        }
        attempt += 1;
    }
}

/// Whether a storage error body reports a checksum mismatch (GCS `BadDigest`, S3-style
/// `InvalidDigest`/`XAmzContentSHA256Mismatch`): damage in transit, not a refusal of the frame.
fn is_digest_mismatch(body: &str) -> bool {
    ["BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"]
        .iter()
        .any(|code| body.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The test vectors of protocol doc §4.2: (content, JSON `crc32c`, `x-goog-hash`).
    #[test]
    fn crc32c_matches_the_protocol_test_vectors() {
        let all: Vec<u8> = (0..=255u8).collect();
        let cases: [(&[u8], i32, &str); 5] = [
            (b"", 0, "crc32c=AAAAAA=="),
            (b"123456789", -486108541, "crc32c=4waSgw=="),
            (b"a", -1043315920, "crc32c=wdBDMA=="),
            (&[0u8; 32], -1970194774, "crc32c=ipE2qg=="),
            (&all, -1673258933, "crc32c=nEQYSw=="),
        ];
        for (content, json, hash) in cases {
            let crc = crc32c::crc32c(content);
            assert_eq!(nexus_crc32c(crc), json);
            let b64 = base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes());
            assert_eq!(format!("crc32c={b64}"), hash);
        }
    }
}
