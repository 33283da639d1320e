//! An in-process fake Picsellia server on 127.0.0.1, written to the protocol notes
//! (`docs/protocols/picsellia.md`): ping, organization, datalake, tags and data sources
//! (find, then create on 404), object names, presigned uploads for both storage styles (an
//! S3-style form POST for `aws`, a `PUT` with `x-ms-blob-type: BlockBlob` for `azure`),
//! registration (checks that the object was uploaded and the tags exist), processing
//! (`PENDING` → `DONE`/`ERROR` after a few reads), lookups, lists, tag attach, delete, and
//! switchable faults. It records what it sees so tests can assert on the wire behaviour.
//!
//! `register.rs` holds the registration and the Data JSON, `storage.rs` the object storage;
//! this file the state, the server and the other routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod register;
mod storage;

use register::{data_json, register};
use storage::storage;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const ORG: &str = "01890000-0000-7000-8000-0000000000a1";
pub const DATALAKE: &str = "01890000-0000-7000-8000-0000000000d1";
pub const CONNECTOR: &str = "01890000-0000-7000-8000-0000000000c1";

/// A fault on the frames whose filename ends with `suffix`.
#[derive(Clone, Debug)]
pub struct FileFault {
    pub suffix: String,
    /// How many times (None: always).
    pub times: Option<usize>,
}

impl FileFault {
    pub fn new(suffix: &str, times: Option<usize>) -> Self {
        Self {
            suffix: suffix.to_string(),
            times,
        }
    }

    /// Whether it applies to `filename` now (and uses one of its times).
    pub(super) fn hit(list: &mut [FileFault], filename: &str) -> bool {
        for f in list.iter_mut() {
            if filename.ends_with(&f.suffix) && f.times != Some(0) {
                if let Some(n) = &mut f.times {
                    *n -= 1;
                }
                return true;
            }
        }
        false
    }
}

#[derive(Default)]
pub struct Faults {
    /// Storage answers 403 for these.
    pub storage_403: Vec<FileFault>,
    /// Registration answers 500 without creating the data.
    pub register_5xx: Vec<FileFault>,
    /// Registration creates the data, then answers 503 (the answer is lost).
    pub register_5xx_after_create: Vec<FileFault>,
    /// Registration hangs `hang` and then answers 504 without creating anything (a
    /// request cut off by a crash never reaches the backend) ...
    pub register_hang_before: Vec<FileFault>,
    /// ... or creates the data and then hangs `hang` before answering.
    pub register_hang_after: Vec<FileFault>,
    pub hang: Duration,
    /// Every registration's answer goes out this long after the data was created.
    pub register_answer_delay: Option<Duration>,
    /// Processing of these ends in `ERROR`.
    pub processing_error: Vec<FileFault>,
    /// Processing of these never ends.
    pub processing_never: Vec<FileFault>,
    /// The next storage requests are answered only after `hang` (a stalled upload).
    pub storage_hang: usize,
    /// The next lookups by object name answer 404 even when the data exists (a lookup
    /// that does not see a registration yet).
    pub find_stale: usize,
    /// Registrations whose custom metadata holds this key are refused with 422 (the
    /// datalake's schema).
    pub schema_refuse_key: Option<String>,
    /// Reads of a data before its processing ends.
    pub processing_reads: usize,
    /// Answer registration with `DONE` at once.
    pub done_at_once: bool,
}

#[derive(Clone, Debug)]
pub struct StoredData {
    pub id: String,
    pub filename: String,
    pub object_name: String,
    pub content_type: String,
    pub tags: Vec<String>,
    pub data_source_id: Value,
    pub meta: Value,
    pub metadata: Value,
    pub custom_metadata: Value,
    pub status: String,
    pub(super) reads: usize,
}

#[derive(Default)]
pub struct Record {
    /// Registration requests (filename, status answered; 0 for a hung one).
    pub registrations: Vec<(String, u16)>,
    /// Storage uploads: (object name, "form" or "blob", status answered).
    pub uploads: Vec<(String, &'static str, u16)>,
    /// Lookups by object name.
    pub lookups: usize,
    pub tags_created: Vec<String>,
    pub sources_created: Vec<String>,
    /// Protocol violations noticed in the client's requests.
    pub violations: Vec<String>,
    /// Requests refused for their token.
    pub refused_tokens: usize,
    /// Object names issued.
    pub object_names: usize,
}

#[derive(Default)]
pub struct State {
    pub faults: Faults,
    pub record: Record,
    /// Data by id.
    pub data: BTreeMap<String, StoredData>,
    /// Uploaded objects: name → bytes.
    pub objects: BTreeMap<String, Vec<u8>>,
    /// Tags: name → id.
    pub tags: BTreeMap<String, String>,
    pub sources: BTreeMap<String, String>,
    /// `aws` (form POST) or `azure` (PUT).
    pub client_type: String,
    /// Keep only the size of uploaded objects (long benchmarks).
    pub discard_bytes: bool,
    counter: u64,
    host: String,
}

impl State {
    /// Data per filename (more than one: a duplicate).
    pub fn per_filename(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in self.data.values() {
            *m.entry(d.filename.clone()).or_default() += 1;
        }
        m
    }

    /// Filenames registered more than once.
    pub fn duplicates(&self) -> Vec<String> {
        self.per_filename()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(f, _)| f)
            .collect()
    }

    pub(super) fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("01890000-0000-7000-8000-{:012x}", self.counter)
    }
}

pub type Shared = Arc<Mutex<State>>;

/// A running fake server; stops when dropped.
pub struct FakePicsellia {
    pub addr: SocketAddr,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePicsellia {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer, and a pause before it goes out.
struct Answer {
    response: Response,
    delay_after: Option<Duration>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            delay_after: None,
        }
    }
}

impl FakePicsellia {
    /// Starts on a free port with storage of `client_type` (`aws` or `azure`).
    pub async fn start(client_type: &str) -> Self {
        let state = Shared::default();
        {
            let mut s = state.lock().unwrap();
            s.client_type = client_type.to_string();
            s.faults.processing_reads = 1;
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind fake server");
        let addr = listener.local_addr().expect("addr");
        state.lock().unwrap().host = format!("http://{addr}");
        let st = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let st = Arc::clone(&st);
            async move {
                if let Some(d) = storage_hang(&st, &u) {
                    tokio::time::sleep(d).await;
                }
                if let Some(d) = hang_before(&st, &m, &u, &b) {
                    tokio::time::sleep(d).await;
                    return error(504, "Gateway Timeout");
                }
                let a = handle(&st, m, u, h, b);
                if let Some(d) = a.delay_after {
                    tokio::time::sleep(d).await;
                }
                a.response
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

pub(super) fn json_response(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn error(status: u16, message: &str) -> Response {
    json_response(status, json!({"message": message, "detail": null}))
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn q1(q: &[(String, String)], k: &str) -> Option<String> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone())
}

/// A storage request that must hang first.
fn storage_hang(st: &Shared, u: &Uri) -> Option<Duration> {
    let mut s = st.lock().unwrap();
    if !u.path().starts_with("/storage/") || s.faults.storage_hang == 0 {
        return None;
    }
    s.faults.storage_hang -= 1;
    Some(s.faults.hang)
}

/// A registration that must hang, then fail without creating anything.
fn hang_before(st: &Shared, m: &Method, u: &Uri, b: &Bytes) -> Option<Duration> {
    if m != Method::POST || !u.path().ends_with("/datas") {
        return None;
    }
    let v: Value = serde_json::from_slice(b).ok()?;
    let filename = v["filename"].as_str()?.to_string();
    let mut s = st.lock().unwrap();
    let hang = s.faults.hang;
    FileFault::hit(&mut s.faults.register_hang_before, &filename).then(|| {
        s.record.registrations.push((filename, 0));
        hang
    })
}

fn handle(st: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Answer {
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut s = st.lock().unwrap();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if segs.first() == Some(&"storage") {
        if auth.is_some() || headers.contains_key("x-picsellia-organization") {
            s.record.violations.push(format!(
                "{path}: the platform's credentials sent to storage"
            ));
        }
        return storage(&mut s, &method, &segs, &headers, &body).into();
    }
    if auth != Some(&format!("Bearer {TOKEN}")) {
        s.record.refused_tokens += 1;
        return error(401, "Token is invalid or expired").into();
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        s.record.violations.push(format!(
            "{method} {path} without Content-type: application/json"
        ));
    }
    // The bootstrap calls go before the organization is known; every later one carries it.
    let after_boot = !matches!(
        segs.as_slice(),
        ["api", "home", "ping"] | ["api", "organizations", "find"] | ["api", "organization", _]
    );
    if after_boot
        && headers
            .get("x-picsellia-organization")
            .and_then(|v| v.to_str().ok())
            != Some(ORG)
    {
        s.record
            .violations
            .push(format!("{method} {path} without X-Picsellia-Organization"));
    }
    let q = query(&uri);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "home", "ping"]) => json_response(
            200,
            json!({"sdk_version": "6.37.0", "default_organization": ORG, "username": "u"}),
        ),
        ("GET", ["api", "organizations", "find"]) => match q1(&q, "name").as_deref() {
            Some("acme") => json_response(200, json!({"id": ORG, "name": "acme"})),
            _ => error(404, "Organization not found"),
        },
        ("GET", ["api", "organization", org]) if *org == ORG => json_response(
            200,
            json!({"id": ORG, "name": "acme", "default_connector_id": CONNECTOR}),
        ),
        ("GET", ["api", "organization", org, "datalake"]) if *org == ORG => {
            let ok = match (q1(&q, "id"), q1(&q, "name")) {
                (Some(id), _) => id == DATALAKE,
                (None, Some(name)) => name == "default",
                (None, None) => true,
            };
            if ok {
                json_response(
                    200,
                    json!({"id": DATALAKE, "name": "default", "connector_id": CONNECTOR}),
                )
            } else {
                error(404, "Datalake not found")
            }
        }
        ("GET", ["api", "datalake", dl, "tags", "find"]) if *dl == DATALAKE => {
            let name = q1(&q, "name").unwrap_or_default();
            match s.tags.get(&name) {
                Some(id) => {
                    json_response(200, json!({"id": id, "name": name, "target_type": "DATA"}))
                }
                None => error(404, "Tag not found"),
            }
        }
        ("POST", ["api", "datalake", dl, "tags"]) if *dl == DATALAKE => {
            let Some(name) = body_json["name"].as_str().map(str::to_string) else {
                return error(400, "name is required").into();
            };
            let id = s.next_id();
            s.tags.insert(name.clone(), id.clone());
            s.record.tags_created.push(name.clone());
            json_response(201, json!({"id": id, "name": name, "target_type": "DATA"}))
        }
        ("GET", ["api", "organization", org, "datasources", "find"]) if *org == ORG => {
            let name = q1(&q, "name").unwrap_or_default();
            match s.sources.get(&name) {
                Some(id) => json_response(200, json!({"id": id, "name": name})),
                None => error(404, "Data source not found"),
            }
        }
        ("POST", ["api", "organization", org, "datasources"]) if *org == ORG => {
            let name = body_json["name"].as_str().unwrap_or_default().to_string();
            let id = s.next_id();
            s.sources.insert(name.clone(), id.clone());
            s.record.sources_created.push(name.clone());
            json_response(201, json!({"id": id, "name": name}))
        }
        (
            "POST",
            [
                "api",
                "organization",
                org,
                "connector",
                conn,
                "generate_object_name",
            ],
        ) if *org == ORG && *conn == CONNECTOR => {
            let filename = body_json["filename"].as_str().unwrap_or_default();
            if body_json["type"] != "DATA" {
                s.record
                    .violations
                    .push("generate_object_name without type DATA".into());
            }
            let dir = body_json["upload_dir"].as_str().unwrap_or("data");
            s.record.object_names += 1;
            let id = s.next_id();
            json_response(
                200,
                json!({"object_name": format!("{dir}/{id}-{filename}")}),
            )
        }
        ("POST", ["api", "object-storage", conn, "generate_presigned_url"])
            if *conn == CONNECTOR =>
        {
            presigned(&s, &body_json)
        }
        ("POST", ["api", "datalake", dl, "datas"]) if *dl == DATALAKE => {
            let filename = body_json["filename"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let r = register(&mut s, &body_json, &body);
            if r.status().is_success()
                && FileFault::hit(&mut s.faults.register_hang_after, &filename)
            {
                return Answer {
                    response: r,
                    delay_after: Some(s.faults.hang),
                };
            }
            if r.status().is_success() {
                return Answer {
                    response: r,
                    delay_after: s.faults.register_answer_delay,
                };
            }
            r
        }
        ("GET", ["api", "datalake", dl, "datas", "find"]) if *dl == DATALAKE => find(&mut s, &q),
        ("GET", ["api", "datalake", dl, "datas"]) if *dl == DATALAKE => {
            let limit: usize = q1(&q, "limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            let offset: usize = q1(&q, "offset").and_then(|l| l.parse().ok()).unwrap_or(0);
            let tags = s.tags.clone();
            let items: Vec<Value> = s
                .data
                .values()
                .skip(offset)
                .take(limit)
                .map(|d| data_json(d, &tags))
                .collect();
            json_response(
                200,
                json!({"items": items, "count": s.data.len(), "next_cursor": null}),
            )
        }
        ("GET", ["api", "data", id]) => {
            let mut refuse = std::mem::take(&mut s.faults.processing_error);
            let mut never = std::mem::take(&mut s.faults.processing_never);
            let reads = s.faults.processing_reads;
            let tags = s.tags.clone();
            let answer = match s.data.get_mut(*id) {
                None => error(404, "Data not found"),
                Some(d) => {
                    d.reads += 1;
                    if d.status == "PENDING"
                        && d.reads >= reads
                        && !FileFault::hit(&mut never, &d.filename)
                    {
                        d.status = if FileFault::hit(&mut refuse, &d.filename) {
                            "ERROR"
                        } else {
                            "DONE"
                        }
                        .into();
                    }
                    json_response(200, data_json(d, &tags))
                }
            };
            s.faults.processing_error = refuse;
            s.faults.processing_never = never;
            answer
        }
        ("DELETE", ["api", "data", id]) => match s.data.remove(*id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(404, "Data not found"),
        },
        ("POST", ["api", "tag", tag, "attach"]) => {
            let Some(ids) = body_json.as_array() else {
                return error(400, "a list of ids is expected").into();
            };
            let tag = tag.to_string();
            for id in ids.iter().filter_map(|v| v.as_str()) {
                if let Some(d) = s.data.get_mut(id)
                    && !d.tags.contains(&tag)
                {
                    d.tags.push(tag.clone());
                }
            }
            json_response(200, json!({}))
        }
        _ => error(404, "no route"),
    }
    .into()
}

/// A presigned upload pointing back at this server, in the configured storage style.
fn presigned(s: &State, body: &Value) -> Response {
    let object = body["object_name"].as_str().unwrap_or_default().to_string();
    let token = percent_encoding::utf8_percent_encode(&object, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let host = &s.host;
    if s.client_type == "azure" {
        json_response(
            200,
            json!({"client_type": "AZURE", "presigned_url_data": {
                "url": format!("{host}/storage/blob/{token}?sv=2024&sig=fake"),
                "fields": {"x-ms-version": "2024-05-04"}}}),
        )
    } else {
        json_response(
            200,
            json!({"client_type": "aws", "presigned_url_data": {
                "url": format!("{host}/storage/form"),
                "fields": {"key": object, "policy": "eyJmYWtlIjp0cnVlfQ==",
                    "x-amz-signature": format!("sig-{token}")}}}),
        )
    }
}

/// `datas/find` by object name, filename or id (every status asked for, as the SDK does).
fn find(s: &mut State, q: &[(String, String)]) -> Response {
    let statuses = q.iter().filter(|(k, _)| k == "upload_statuses").count();
    if statuses != 4 {
        s.record
            .violations
            .push("find without the four upload_statuses".into());
    }
    let by_object = q1(q, "object_name");
    if by_object.is_some() {
        s.record.lookups += 1;
        if s.faults.find_stale > 0 {
            s.faults.find_stale -= 1;
            return error(404, "Data not found");
        }
    }
    let (filename, id) = (q1(q, "filename"), q1(q, "id"));
    let found: Vec<&StoredData> = s
        .data
        .values()
        .filter(|d| {
            by_object.as_deref() == Some(d.object_name.as_str())
                || filename.as_deref() == Some(d.filename.as_str())
                || id.as_deref() == Some(d.id.as_str())
        })
        .collect();
    match found.as_slice() {
        [d] => json_response(200, data_json(d, &s.tags)),
        [] => error(404, "Data not found"),
        _ => error(400, "filename is duplicated"),
    }
}
