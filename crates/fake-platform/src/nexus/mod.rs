//! An in-process fake Datature Nexus server on 127.0.0.1, written to the protocol notes in
//! `docs/protocols/nexus.md` (its "what a fake server must do" section): upload sessions, signed-URL storage PUTs (content type,
//! length and CRC-32C checked), operations, cancel, asset list/get, and switchable faults.
//! It records everything it sees so tests can assert on the wire behaviour.
//!
//! `assets.rs` holds the asset routes (list with cursors, get, update, custom metadata,
//! delete, group statistics); this file the state, the upload flow and the server.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

mod assets;

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

fn now_ms() -> u64 {
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

fn scripted(s: Scripted) -> Response {
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

fn create_session(s: &mut State, body: &[u8]) -> Response {
    s.record.session_attempts.push(Instant::now());
    let answer = |s: &mut State, r: Response| {
        s.record.session_statuses.push(r.status().as_u16());
        r
    };
    if let Some(sc) = s.faults.session_create.pop_front() {
        return answer(s, scripted(sc));
    }
    if let Some(limit) = s.faults.rate_limit {
        let window = Duration::from_secs(300);
        let recent = s
            .record
            .session_attempts
            .iter()
            .filter(|t| t.elapsed() < window)
            .count();
        if recent > limit {
            return answer(s, error(429, "TooManyRequestsError", "Too Many Requests"));
        }
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return answer(s, error(400, "BadRequestError", "body is not JSON"));
    };
    let groups: Vec<String> = match req.get("groups").and_then(|g| g.as_array()) {
        Some(g)
            if g.iter()
                .all(|x| x.as_str().is_some_and(|x| !x.trim().is_empty())) =>
        {
            g.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        }
        _ => {
            return answer(
                s,
                error(400, "BadRequestError", "groups must be an array of strings"),
            );
        }
    };
    let Some(assets) = req.get("assets").and_then(|a| a.as_array()) else {
        return answer(s, error(400, "BadRequestError", "assets missing"));
    };
    if assets.is_empty() || assets.len() > 5000 {
        return answer(
            s,
            error(400, "BadRequestError", "1 to 5000 assets per session"),
        );
    }
    let mut names = std::collections::HashSet::new();
    for a in assets {
        let ok = a.get("filename").and_then(Value::as_str).is_some()
            && a.get("size").and_then(Value::as_u64).is_some_and(|x| x > 0)
            && a.get("crc32c")
                .and_then(Value::as_i64)
                .is_some_and(|c| (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&c))
            && a.get("mime").and_then(Value::as_str).is_some();
        if !ok {
            return answer(s, error(400, "BadRequestError", "asset fields invalid"));
        }
        if let Some(cm) = a.get("customMetadata") {
            let flat = cm.as_object().is_some_and(|o| {
                o.values()
                    .all(|v| v.is_string() || v.is_number() || v.is_boolean())
            });
            if !flat {
                return answer(
                    s,
                    error(400, "BadRequestError", "customMetadata must be flat"),
                );
            }
        }
        if !names.insert(a["filename"].as_str().unwrap_or("").to_string()) {
            return answer(s, error(400, "BadRequestError", "duplicate filename"));
        }
    }
    s.counter += 1;
    let sid = format!("up_{:08x}-0000-4000-8000-{:012x}", s.counter, s.counter);
    let op = format!("op_{:08x}-0000-4000-8000-{:012x}", s.counter, s.counter);
    let port = s.storage_port.unwrap_or(s.port);
    let host = s.host.clone();
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    let opaque =
        base64::engine::general_purpose::STANDARD.encode(json!({"groups": groups}).to_string());
    for a in assets {
        s.counter += 1;
        let token = format!("t{:016x}{:016x}", rand_u64(), s.counter);
        let filename = a["filename"].as_str().unwrap_or("").to_string();
        let crc = a["crc32c"].as_i64().unwrap_or(0);
        let mime = a["mime"].as_str().unwrap_or("").to_string();
        let size = a["size"].as_u64().unwrap_or(0);
        let hash =
            base64::engine::general_purpose::STANDARD.encode((crc as i32 as u32).to_be_bytes());
        let sent = a.get("customMetadata").cloned();
        if sent.is_some() {
            s.record.session_metadata_assets += 1;
        }
        let session_metadata = match sent {
            Some(m) if !s.faults.ignore_session_metadata => m,
            _ => json!({}),
        };
        out.push(json!({
            "metadata": {"filename": filename, "mime": mime, "size": size, "crc32c": crc},
            "upload": {"method": "PUT",
                "url": format!("http://{host}:{port}/storage/{token}?X-Goog-Signature=abc"),
                "headers": {"content-type": mime, "x-goog-hash": format!("crc32c={hash}"),
                    "x-goog-meta-datature-upload": opaque},
                "expiryDate": now_ms() + 3_600_000}
        }));
        s.pending.insert(
            token.clone(),
            PendingAsset {
                session: sid.clone(),
                filename,
                size,
                crc32c: crc,
                mime,
                custom_metadata: session_metadata,
                groups: groups.clone(),
                opaque: opaque.clone(),
                done: false,
            },
        );
        tokens.push(token);
    }
    let errored = if s.faults.errored_operations > 0 {
        s.faults.errored_operations -= 1;
        true
    } else {
        false
    };
    s.record.session_sizes.push(tokens.len());
    s.sessions.insert(
        sid.clone(),
        Session {
            op_id: op.clone(),
            tokens,
            errored,
            cancelled: false,
            created: Instant::now(),
            last_put: None,
            finished_reported: None,
        },
    );
    answer(
        s,
        json_response(200, json!({"id": sid, "opId": op, "assets": out})),
    )
}

/// `POST …/customMetadataBulkUpdates`: attaches metadata to assets by filename; answers
/// `{"errors": [...], "customMetadatas": [...]}` with one error per entry it did not take.
fn bulk_metadata(s: &mut State, body: &[u8]) -> Response {
    let entries = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("customMetadatas").and_then(Value::as_array).cloned());
    let Some(entries) = entries else {
        s.record.metadata_calls.push(0);
        return error(400, "BadRequestError", "customMetadatas missing");
    };
    s.record.metadata_calls.push(entries.len());
    if s.faults.metadata_5xx > 0 {
        s.faults.metadata_5xx -= 1;
        return error(503, "ServiceUnavailableError", "Service Unavailable");
    }
    let mut errors = Vec::new();
    let mut done = Vec::new();
    for e in entries {
        let kind = e.pointer("/parent/kind").and_then(Value::as_str);
        let filename = e.pointer("/parent/filename").and_then(Value::as_str);
        let meta = e.get("customMetadata").and_then(Value::as_object);
        let fail = |why: &str| json!({"customMetadata": e.clone(), "error": why});
        let (Some("customMetadata#assetFilenameParent"), Some(filename), Some(meta)) =
            (kind, filename, meta)
        else {
            errors.push(fail(
                "invalid entry: parent.kind, parent.filename and customMetadata are required",
            ));
            continue;
        };
        if !meta
            .values()
            .all(|v| v.is_string() || v.is_number() || v.is_boolean())
        {
            errors.push(fail(
                "invalid metadata value: must be a string, number or boolean",
            ));
            continue;
        }
        if let Some(k) = s
            .faults
            .metadata_refuse_keys
            .iter()
            .find(|k| meta.contains_key(k.as_str()))
        {
            errors.push(fail(&format!("invalid metadata key {k}")));
            continue;
        }
        if s.faults.metadata_entry_transient > 0 {
            s.faults.metadata_entry_transient -= 1;
            errors.push(fail("internal error, try again"));
            continue;
        }
        let Some(asset) = s.assets.get_mut(filename) else {
            errors.push(fail("Requested Asset Not Found"));
            continue;
        };
        let mut merged = asset
            .custom_metadata
            .as_object()
            .cloned()
            .unwrap_or_default();
        merged.extend(meta.clone());
        asset.custom_metadata = Value::Object(merged);
        *s.record
            .metadata_updates
            .entry(filename.to_string())
            .or_default() += 1;
        done.push(json!({"parent": {"filename": filename}, "customMetadata": meta}));
    }
    json_response(200, json!({"errors": errors, "customMetadatas": done}))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

fn storage_put(
    s: &mut State,
    method: &Method,
    segs: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let token = segs.get(1).copied().unwrap_or("");
    let xml = |status: u16, code: &str| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>"),
        )
            .into_response()
    };
    if method != Method::PUT {
        return xml(405, "MethodNotAllowed");
    }
    if headers.contains_key("secret-key") || headers.contains_key("authorization") {
        s.record
            .violations
            .push("storage PUT carried credentials".into());
    }
    let Some(p) = s.pending.get(token) else {
        return xml(403, "AccessDenied");
    };
    let filename = p.filename.clone();
    // Scripted faults.
    if let Some(i) = s
        .faults
        .put
        .iter()
        .position(|f| filename.ends_with(&f.suffix))
    {
        let f = s.faults.put[i].clone();
        match f.times {
            Some(1) => {
                s.faults.put.remove(i);
            }
            Some(n) => s.faults.put[i].times = Some(n - 1),
            None => {}
        }
        s.record.puts.push((filename, f.status));
        return xml(f.status, f.code);
    }
    let p = &s.pending[token];
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    let hash = headers.get("x-goog-hash").and_then(|v| v.to_str().ok());
    let opaque = headers
        .get("x-goog-meta-datature-upload")
        .and_then(|v| v.to_str().ok());
    let expect_hash = format!(
        "crc32c={}",
        base64::engine::general_purpose::STANDARD.encode((p.crc32c as i32 as u32).to_be_bytes())
    );
    let actual = format!(
        "crc32c={}",
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(body).to_be_bytes())
    );
    let problem = if ct != Some(p.mime.as_str()) {
        Some("content-type differs from the asset's mime")
    } else if body.len() as u64 != p.size {
        Some("body length differs from the declared size")
    } else if hash != Some(expect_hash.as_str()) || actual != expect_hash {
        Some("x-goog-hash or the body's CRC-32C differs from the declared crc32c")
    } else if opaque != Some(p.opaque.as_str()) {
        Some("x-goog-meta-datature-upload not sent back unchanged")
    } else {
        None
    };
    if let Some(why) = problem {
        s.record.puts.push((filename.clone(), 400));
        s.record
            .violations
            .push(format!("bad PUT for {filename}: {why}"));
        return xml(400, "BadDigest");
    }
    s.record.puts.push((filename.clone(), 200));
    let session = p.session.clone();
    if s.sessions.get(&session).is_some_and(|x| x.cancelled) {
        return xml(403, "AccessDenied");
    }
    let errored = s.sessions.get(&session).is_some_and(|x| x.errored);
    if let Some(ses) = s.sessions.get_mut(&session) {
        ses.last_put = Some(Instant::now());
    }
    let p = s.pending.get_mut(token).expect("pending");
    p.done = true;
    if !errored {
        let asset = StoredAsset {
            id: format!("asset_{token}"),
            filename: p.filename.clone(),
            bytes: if s.discard_bytes {
                Vec::new()
            } else {
                body.to_vec()
            },
            size: body.len() as u64,
            mime: p.mime.clone(),
            groups: p.groups.clone(),
            custom_metadata: p.custom_metadata.clone(),
            create_ms: now_ms(),
            session: p.session.clone(),
            status: "None".to_string(),
        };
        if let Some(old) = s.assets.insert(asset.filename.clone(), asset) {
            if s.sessions
                .get(&old.session)
                .is_some_and(|x| x.finished_reported.is_some())
            {
                s.record.duplicates_after_finished.push(filename.clone());
            }
            s.record.duplicates.push(filename);
        }
    }
    (StatusCode::OK, "").into_response()
}

fn operation(s: &mut State, op: &str) -> Response {
    let delay = s.faults.operation_delay.unwrap_or_default();
    let Some(ses) = s.sessions.values().find(|x| x.op_id == op) else {
        return error(404, "ResourceNotFoundError", "no such operation");
    };
    let settled = ses.last_put.is_some_and(|t| t.elapsed() >= delay);
    let total = ses.tokens.len() as u64;
    let done = ses
        .tokens
        .iter()
        .filter(|t| s.pending.get(*t).is_some_and(|p| p.done))
        .count() as u64;
    let (overview, finished, errored, queued) = if ses.cancelled {
        ("Cancelled", 0, 0, 0)
    } else if done < total || !settled {
        (
            "Running",
            done.min(total.saturating_sub(1)),
            0,
            total - done.min(total.saturating_sub(1)),
        )
    } else if ses.errored {
        ("Errored", 0, total, 0)
    } else {
        ("Finished", total, 0, 0)
    };
    let cancelled = if ses.cancelled { total } else { 0 };
    if overview == "Finished" {
        let ses = s
            .sessions
            .values_mut()
            .find(|x| x.op_id == op)
            .expect("session");
        ses.finished_reported.get_or_insert_with(Instant::now);
    }
    s.record.operations = s
        .sessions
        .values()
        .map(|x| (x.created, x.finished_reported))
        .collect();
    json_response(
        200,
        json!({"id": op, "object": "operation", "kind": "nexus.assets.upload",
            "status": {"overview": overview, "message": overview,
                "progress": {"unit": "asset", "withStatus": {"Queued": queued, "Running": 0,
                    "Finished": finished, "Cancelled": cancelled, "Errored": errored}}},
            "createDate": now_ms(), "updateDate": now_ms()}),
    )
}
