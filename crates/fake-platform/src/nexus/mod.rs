//! An in-process fake Datature Nexus server on 127.0.0.1, written to the protocol notes in
//! `docs/protocols/nexus.md` (its "what a fake server must do" section): upload sessions, signed-URL storage PUTs (content type,
//! length and CRC-32C checked), operations, cancel, asset list/get, and switchable faults.
//! It records everything it sees so tests can assert on the wire behaviour.
//!
//! `session.rs` holds upload sessions and operations, `storage.rs` the signed-URL PUTs,
//! `metadata.rs` the bulk metadata endpoint, `assets.rs` the asset routes (list with
//! cursors, get, update, custom metadata, delete, group statistics); this file the state,
//! the server and the routing.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod assets;
mod metadata;
mod session;
mod storage;

use metadata::bulk_metadata;
use session::{create_session, operation};
use storage::storage_put;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const PROJECT: &str = "proj_cd067221d5a6e4007ccbb4afb5966535";

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

/// What to do with an asset's storage PUT.
#[derive(Clone, Debug)]
pub struct PutFault {
    /// Applies to filenames ending with this.
    pub suffix: String,
    pub status: u16,
    /// How many times (None: always).
    pub times: Option<usize>,
    /// The `<Code>` of the XML error body.
    pub code: &'static str,
}

impl PutFault {
    /// `status` for filenames ending with `suffix`, `times` times (None: always).
    pub fn new(suffix: &str, status: u16, times: Option<usize>) -> Self {
        Self {
            suffix: suffix.to_string(),
            status,
            times,
            code: "Injected",
        }
    }
}

#[derive(Default)]
pub struct Faults {
    /// Answers for the next session creations, in order (before any normal handling).
    pub session_create: VecDeque<Scripted>,
    pub put: Vec<PutFault>,
    /// The next operations end `Errored` without creating their assets.
    pub errored_operations: usize,
    /// Session creations allowed per 300 s (None: unlimited).
    pub rate_limit: Option<usize>,
    /// A project-wide limit shared by every client: at most this many sessions *created*
    /// per sliding window (refused attempts do not count); past it, 429
    /// `TooManyRequestsError`, with `Retry-After` (the seconds until the oldest session
    /// leaves the window, rounded up) when `project_limit_retry_after` is set.
    pub project_limit: Option<(usize, Duration)>,
    /// Whether the project limit's 429 carries `Retry-After`.
    pub project_limit_retry_after: bool,
    /// Storage PUTs are answered only after this long (a hung upload) ...
    pub put_delay: Option<Duration>,
    /// ... for this many PUTs (None: all of them).
    pub put_delay_count: Option<usize>,
    /// Operations stay `Running` this long after their last PUT.
    pub operation_delay: Option<Duration>,
    /// Drop the `customMetadata` of session requests, as a current platform may.
    pub ignore_session_metadata: bool,
    /// The next bulk metadata calls answer 503.
    pub metadata_5xx: usize,
    /// The next asset lookups (`GET …/assets/{filename}`) answer 503.
    pub asset_lookup_5xx: usize,
    /// Entries whose metadata holds one of these keys get a per-entry error
    /// ("invalid metadata key …"): a refusal.
    pub metadata_refuse_keys: Vec<String>,
    /// The next entries (over all calls) get a per-entry error that a retry can fix
    /// ("internal error, try again").
    pub metadata_entry_transient: usize,
}

#[derive(Clone, Debug)]
pub struct StoredAsset {
    pub id: String,
    pub filename: String,
    pub bytes: Vec<u8>,
    /// Bytes received (also when `discard_bytes` drops them).
    pub size: u64,
    pub mime: String,
    pub groups: Vec<String>,
    pub custom_metadata: Value,
    pub create_ms: u64,
    /// The session it was uploaded in.
    pub session: String,
    /// Annotation status (`None` until set).
    pub status: String,
}

struct PendingAsset {
    session: String,
    filename: String,
    size: u64,
    crc32c: i64,
    mime: String,
    custom_metadata: Value,
    groups: Vec<String>,
    opaque: String,
    done: bool,
}

struct Session {
    op_id: String,
    tokens: Vec<String>,
    errored: bool,
    cancelled: bool,
    created: Instant,
    last_put: Option<Instant>,
    finished_reported: Option<Instant>,
}

#[derive(Default)]
pub struct Record {
    /// Times of every session-create request (including refused ones).
    pub session_attempts: Vec<Instant>,
    /// Status answered to each session-create request.
    pub session_statuses: Vec<u16>,
    /// Asset counts per created session.
    pub session_sizes: Vec<usize>,
    /// Storage PUTs: (filename, status answered).
    pub puts: Vec<(String, u16)>,
    /// Filenames uploaded more than once (a re-upload replaces).
    pub duplicates: Vec<String>,
    /// Of those, the ones whose earlier upload's operation had already reported
    /// `Finished` (a client that asked would have known it was there).
    pub duplicates_after_finished: Vec<String>,
    pub cancels: usize,
    pub probes: usize,
    /// Per session: (created, first time a poll answered `Finished`).
    pub operations: Vec<(Instant, Option<Instant>)>,
    /// Protocol violations the server noticed in the client's requests.
    pub violations: Vec<String>,
    /// Assets that came with `customMetadata` in their session request.
    pub session_metadata_assets: usize,
    /// Entries per bulk metadata call (including refused calls).
    pub metadata_calls: Vec<usize>,
    /// Metadata attached through the bulk endpoint, per filename (how many times).
    pub metadata_updates: BTreeMap<String, usize>,
    /// Asset list calls.
    pub asset_lists: usize,
    /// Asset lookups answered 503 by the `asset_lookup_5xx` fault.
    pub asset_lookups_refused: usize,
    /// Sessions created: (when, the device: the first asset's filename up to its first
    /// `_`, as edgecap's default filename template starts).
    pub sessions_created_at: Vec<(Instant, String)>,
    /// 429s of the project limit, per device (as above).
    pub limited_by_device: BTreeMap<String, usize>,
}

#[derive(Default)]
pub struct State {
    pub faults: Faults,
    pub record: Record,
    pub assets: BTreeMap<String, StoredAsset>,
    pending: BTreeMap<String, PendingAsset>,
    sessions: BTreeMap<String, Session>,
    counter: u64,
    port: u16,
    /// The address signed URLs name (the one the server listens on).
    host: String,
    /// Keep only the size of uploaded files, not their bytes (long benchmarks).
    pub discard_bytes: bool,
    /// When set, signed URLs point at this port (a proxy in front of the server).
    pub storage_port: Option<u16>,
}

impl State {
    /// Sessions neither cancelled nor with every asset uploaded: what a client left open
    /// on the platform.
    pub fn open_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|x| {
                !x.cancelled
                    && !x
                        .tokens
                        .iter()
                        .all(|t| self.pending.get(t).is_some_and(|p| p.done))
            })
            .count()
    }

    /// Open sessions that received at least one PUT: sessions a client used and then
    /// forgot (one it never sent a byte into can only have been lost between its creation
    /// and the client noting it).
    pub fn open_sessions_used(&self) -> usize {
        self.sessions
            .values()
            .filter(|x| {
                !x.cancelled
                    && x.last_put.is_some()
                    && !x
                        .tokens
                        .iter()
                        .all(|t| self.pending.get(t).is_some_and(|p| p.done))
            })
            .count()
    }

    /// Sessions created.
    pub fn sessions_created(&self) -> usize {
        self.sessions.len()
    }
}

pub type Shared = Arc<Mutex<State>>;

/// A running fake server; stops when dropped.
pub struct FakeNexus {
    pub addr: SocketAddr,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNexus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNexus {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::start_on(0, Shared::default()).await
    }

    /// Starts on `port` (0: any) of 127.0.0.1 with existing state.
    pub async fn start_on(port: u16, state: Shared) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], port)), state).await
    }

    /// Starts on `addr` with existing state.
    pub async fn start_at(addr: SocketAddr, state: Shared) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake server");
        let addr = listener.local_addr().expect("addr");
        {
            let mut g = state.lock().unwrap();
            g.port = addr.port();
            g.host = addr.ip().to_string();
        }
        let st = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let st = Arc::clone(&st);
            async move {
                let delay = if u.path().starts_with("/storage/") {
                    let mut g = st.lock().unwrap();
                    match g.faults.put_delay_count {
                        Some(0) => None,
                        Some(n) => {
                            g.faults.put_delay_count = Some(n - 1);
                            g.faults.put_delay
                        }
                        None => g.faults.put_delay,
                    }
                } else {
                    None
                };
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                handle(st, m, u, h, b)
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn json_response(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

pub(super) fn scripted(s: Scripted) -> Response {
    let mut r = (
        StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        s.body,
    )
        .into_response();
    for (k, v) in s.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn handle(st: Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut s = st.lock().unwrap();
    if segs.first() == Some(&"storage") {
        return storage_put(&mut s, &method, &segs, &headers, &body);
    }
    // Every API call: Secret-Key, exactly, and a proj_ id.
    if headers.get("secret-key").and_then(|v| v.to_str().ok()) != Some(SECRET) {
        return error(
            403,
            "ForbiddenError",
            "No Access Rights to Requested Resources",
        );
    }
    if method != Method::DELETE
        && headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json")
    {
        s.record.violations.push(format!(
            "{method} {path} without Content-Type: application/json"
        ));
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["projects", pid]) if *pid == PROJECT => {
            s.record.probes += 1;
            json_response(
                200,
                json!({"id": PROJECT, "name": "fake", "workspaceId": "ws_x", "type": "ObjectDetection",
                    "createDate": 1, "localization": "MULTI", "tags": [], "groups": ["main"]}),
            )
        }
        ("POST", ["projects", pid, "assetuploadsessions"]) if *pid == PROJECT => {
            create_session(&mut s, &body)
        }
        ("POST", ["projects", pid, "assetuploadsessions", sid_cancel]) if *pid == PROJECT => {
            let Some(sid) = sid_cancel.strip_suffix(":cancel") else {
                return error(404, "ResourceNotFoundError", "no route");
            };
            s.record.cancels += 1;
            if headers.get("content-length").and_then(|v| v.to_str().ok()) != Some("0") {
                s.record
                    .violations
                    .push(format!("{path} without Content-Length: 0"));
            }
            let finished = s.sessions.get(sid).is_some_and(|ses| {
                ses.tokens
                    .iter()
                    .all(|t| s.pending.get(t).is_some_and(|p| p.done))
            });
            match s.sessions.get_mut(sid) {
                None => error(404, "ResourceNotFoundError", "no such session"),
                Some(_) if finished => error(409, "ConflictError", "session finished"),
                Some(ses) => {
                    ses.cancelled = true;
                    json_response(200, json!({"cancelled": true, "id": sid}))
                }
            }
        }
        ("GET", ["projects", pid, "operations", op]) if *pid == PROJECT => operation(&mut s, op),
        ("POST", ["projects", pid, "customMetadataBulkUpdates"]) if *pid == PROJECT => {
            bulk_metadata(&mut s, &body)
        }
        (_, ["projects", pid, "assets", ..] | ["projects", pid, "assetgroups"])
            if *pid == PROJECT =>
        {
            assets::route(&mut s, &method, &segs[2..], uri.query(), &headers, &body)
        }
        _ if segs.get(1).is_some_and(|p| *p != PROJECT) => error(
            404,
            "ResourceNotFoundError",
            "Requested Project Resource Not Found",
        ),
        _ => error(404, "ResourceNotFoundError", "no route"),
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}
