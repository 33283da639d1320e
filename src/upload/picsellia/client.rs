//! The Picsellia API client: the HTTP clients (one for the platform, one without any
//! credential for object storage), the headers every platform call carries, the start-up
//! lookups (organization, datalake, connector, data source) and the tag cache, the
//! classification of answers, and the small calls the sink and the operator commands share
//! (find a data, follow its processing, attach a tag, delete).
//!
//! Everything the server says is untrusted text: shortened, and any occurrence of the token
//! masked, before it is logged or printed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{info, warn};

use super::wire::{Data, DataPage, Datalake, ErrorBody, Organization, Ping, Tag, WithId};
use crate::config::{PicselliaConfig, Secret};
use crate::upload::backoff::retry_after;
use crate::upload::sink::Verdict;

/// Every status a data can have; the SDK sends all of them on lookups and lists.
pub(super) const ALL_STATUSES: [&str; 4] = ["PENDING", "COMPUTING", "DONE", "ERROR"];
/// Every data type.
pub(super) const ALL_TYPES: [&str; 2] = ["IMAGE", "VIDEO"];

/// Why a call did not give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    /// Nothing (or no complete answer) came back.
    #[error("{0}")]
    Network(String),
    /// A status other than 2xx (or 208).
    #[error("{text}")]
    Status {
        /// The status.
        status: u16,
        /// What it said, cleaned.
        text: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body is not what the protocol says.
    #[error("{0}")]
    Garbage(String),
}

impl ApiError {
    /// The HTTP status, if there was one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What the uploader should do about it.
    pub(super) fn verdict(&self) -> Verdict {
        match self {
            Self::Network(m) => Verdict::Offline(m.clone()),
            Self::Garbage(m) => Verdict::Backoff {
                reason: m.clone(),
                retry_after: None,
            },
            Self::Status {
                status,
                text,
                retry_after,
            } => match status {
                401..=404 => Verdict::OperatorMustAct(text.clone()),
                // The SDK never retries a 429; a client that does waits at least a minute
                // unless the server says otherwise.
                429 => Verdict::Backoff {
                    reason: text.clone(),
                    retry_after: Some(retry_after.unwrap_or(Duration::from_secs(60))),
                },
                _ => Verdict::Backoff {
                    reason: text.clone(),
                    retry_after: *retry_after,
                },
            },
        }
    }

    /// A failure that leaves it unknown whether the server acted on the request (the
    /// request may have been processed: network loss after sending, 5xx, 429).
    pub(super) fn uncertain(&self) -> bool {
        match self {
            Self::Network(_) | Self::Garbage(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        }
    }
}

/// What the start-up lookups found.
#[derive(Debug, Clone)]
pub(crate) struct Boot {
    /// Organization id.
    pub(crate) org: String,
    /// Datalake id and name.
    pub(crate) datalake: String,
    pub(crate) datalake_name: String,
    /// The datalake's storage connector.
    pub(crate) connector: String,
    /// The data source id, when one is configured.
    pub(crate) source: Option<String>,
}

/// The API client of one datalake.
pub(crate) struct Client {
    pub(crate) cfg: PicselliaConfig,
    secret: Secret,
    http: reqwest::Client,
    /// Object storage: no credential, no platform header.
    pub(super) storage: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    device: String,
    boot: Mutex<Option<Arc<Boot>>>,
    /// The organization header, once the organization is known (and has a default
    /// connector, as the SDK decides).
    org_header: Mutex<Option<HeaderValue>>,
    tags: Mutex<HashMap<String, String>>,
}

/// Whether `s` is a canonical hyphenated UUID (then a configured name is taken as an id).
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Client {
    /// Builds the client; `device` fills `{device}` in the data source name.
    pub(crate) fn new(cfg: PicselliaConfig, secret: Secret, device: &str) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |ua: bool| {
            let b = reqwest::Client::builder()
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.stall_timeout)
                .pool_idle_timeout(Duration::from_secs(60));
            let b = if ua {
                b.user_agent(concat!("edgecap/", env!("CARGO_PKG_VERSION")))
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        let base = Url::parse(&cfg.host).map_err(|e| format!("upload.picsellia.host: {e}"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
            .map_err(|_| "upload.picsellia api token: not a valid header value".to_string())?;
        auth.set_sensitive(true);
        Ok(Self {
            http: build(true)?,
            storage: build(false)?,
            cfg,
            secret,
            base,
            auth,
            device: device.to_string(),
            boot: Mutex::new(None),
            org_header: Mutex::new(None),
            tags: Mutex::new(HashMap::new()),
        })
    }

    /// Masks the token and shortens server-provided text for logs.
    pub(crate) fn clean(&self, s: &str) -> String {
        crate::upload::masked(s, self.secret.expose(), 300)
    }

    pub(super) fn url(&self, path: &str) -> Url {
        // An absolute path replaces any path of the host, as the SDK's urljoin does.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// A platform request: the token, JSON content type on every method (as the SDK), the
    /// organization header once known, the request timeout.
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.cfg.request_timeout);
        let org = self
            .org_header
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(v) = org {
            r = r.header("X-Picsellia-Organization", v);
        }
        r
    }

    /// Sends a call; `Ok((status, body))` for a 2xx (208 included: the caller decides).
    pub(super) async fn send(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        let mut req = self.request(method, url);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Network(self.clean(&format!("{what}: {}", e.without_url()))))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| {
            ApiError::Network(
                self.clean(&format!("{what}: reading the answer: {}", e.without_url())),
            )
        })?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        Err(self.status_error(what, status, &headers, &bytes))
    }

    /// An error from a non-2xx answer: the platform's `message` and `detail`.
    fn status_error(
        &self,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ApiError {
        let said = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { message, detail }) => {
                let mut m = message.unwrap_or_else(|| format!("No message ({})", status.as_u16()));
                match detail {
                    Some(Value::Array(items)) => {
                        m += ". Detail:";
                        for i in items {
                            m += &format!(" > {}", value_text(&i));
                        }
                    }
                    Some(Value::Null) | None => {}
                    Some(d) => m += &format!(". Detail: {}", value_text(&d)),
                }
                m
            }
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let retry_after = retry_after(headers);
        ApiError::Status {
            status: status.as_u16(),
            text: self.clean(&format!("{what}: {status}: {said}")),
            retry_after,
        }
    }

    /// A call whose 2xx answer is JSON of type `T`.
    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, T), ApiError> {
        let (status, bytes) = self.send(what, method, url, body).await?;
        serde_json::from_slice(&bytes)
            .map(|t| (status, t))
            .map_err(|e| {
                ApiError::Garbage(self.clean(&format!(
                    "{what}: the answer is not what the protocol says ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )))
            })
    }

    /// `url` with query pairs added.
    pub(super) fn with_query(&self, path: &str, pairs: &[(&str, &str)]) -> Url {
        let mut url = self.url(path);
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    fn boot_cached(&self) -> Option<Arc<Boot>> {
        self.boot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The start-up lookups, cached after the first success.
    pub(crate) async fn boot(&self) -> Result<Arc<Boot>, ApiError> {
        if let Some(b) = self.boot_cached() {
            return Ok(b);
        }
        self.refresh().await
    }

    /// Does the start-up lookups again (a check at start and after a refusal): ping,
    /// organization, datalake and its connector, data source.
    pub(crate) async fn refresh(&self) -> Result<Arc<Boot>, ApiError> {
        *self.boot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.org_header.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let operator = |text: String| ApiError::Status {
            status: 404,
            text,
            retry_after: None,
        };
        let (_, ping): (_, Ping) = self
            .json(
                "connecting to the platform",
                Method::GET,
                self.url("/api/home/ping"),
                None,
            )
            .await?;
        let org_id = match &self.cfg.organization {
            Some(o) if is_uuid(o) => o.to_lowercase(),
            Some(name) => {
                let url = self.with_query("/api/organizations/find", &[("name", name)]);
                let what = format!("finding organization {name:?} (upload.picsellia.organization)");
                self.json::<WithId>(&what, Method::GET, url, None)
                    .await?
                    .1
                    .id
            }
            None => ping.default_organization.ok_or_else(|| {
                operator(
                    "the token has no default organization: set upload.picsellia.organization"
                        .into(),
                )
            })?,
        };
        let (_, org): (_, Organization) = self
            .json(
                "reading the organization",
                Method::GET,
                self.url(&format!("/api/organization/{org_id}")),
                None,
            )
            .await?;
        if org.default_connector_id.is_some() {
            *self.org_header.lock().unwrap_or_else(|e| e.into_inner()) =
                HeaderValue::from_str(&org.id).ok();
        }
        let pairs: Vec<(&str, &str)> = match &self.cfg.datalake {
            Some(d) if is_uuid(d) => vec![("id", d.as_str())],
            Some(d) => vec![("name", d.as_str())],
            None => Vec::new(),
        };
        let url = self.with_query(&format!("/api/organization/{}/datalake", org.id), &pairs);
        let (_, dl): (_, Datalake) = self
            .json(
                "finding the datalake (upload.picsellia.datalake)",
                Method::GET,
                url,
                None,
            )
            .await?;
        let connector = dl.connector_id.clone().ok_or_else(|| {
            operator(format!(
                "datalake {:?} has no storage connector: the platform cannot take uploads into it",
                dl.name
            ))
        })?;
        let mut boot = Boot {
            org: org.id.clone(),
            datalake: dl.id,
            datalake_name: dl.name,
            connector,
            source: None,
        };
        if let Some(name) = &self.cfg.data_source {
            let name = name.replace("{device}", &self.device);
            boot.source = Some(self.find_or_create_source(&boot.org, &name).await?);
        }
        let boot = Arc::new(boot);
        *self.boot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&boot));
        info!(organization = %boot.org, datalake = %self.clean(&boot.datalake_name),
            "picsellia datalake found");
        Ok(boot)
    }

    async fn find_or_create_source(&self, org: &str, name: &str) -> Result<String, ApiError> {
        let url = self.with_query(
            &format!("/api/organization/{org}/datasources/find"),
            &[("name", name)],
        );
        match self
            .json::<WithId>("finding the data source", Method::GET, url, None)
            .await
        {
            Ok((_, s)) => Ok(s.id),
            Err(e) if e.status() == Some(404) => {
                let body =
                    serde_json::to_vec(&serde_json::json!({ "name": name })).unwrap_or_default();
                let url = self.url(&format!("/api/organization/{org}/datasources"));
                let (_, s): (_, WithId) = self
                    .json("creating the data source", Method::POST, url, Some(body))
                    .await?;
                info!(source = %self.clean(name), "picsellia data source created");
                Ok(s.id)
            }
            Err(e) => Err(e),
        }
    }

    /// The ids of the data tags `names`, created where missing (find, then create on a
    /// 404, as the SDK does); cached for the life of the process.
    pub(crate) async fn tag_ids(&self, names: &[String]) -> Result<Vec<String>, ApiError> {
        let boot = self.boot().await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let cached = self
                .tags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned();
            let id = match cached {
                Some(id) => id,
                None => {
                    let id = self.find_or_create_tag(&boot.datalake, name).await?;
                    self.tags
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), id.clone());
                    id
                }
            };
            out.push(id);
        }
        Ok(out)
    }

    async fn find_or_create_tag(&self, dl: &str, name: &str) -> Result<String, ApiError> {
        let url = self.with_query(&format!("/api/datalake/{dl}/tags/find"), &[("name", name)]);
        let what = format!("finding tag {name:?}");
        match self.json::<Tag>(&what, Method::GET, url, None).await {
            Ok((_, t)) => Ok(t.id),
            Err(e) if e.status() == Some(404) => {
                let body =
                    serde_json::to_vec(&serde_json::json!({ "name": name })).unwrap_or_default();
                let url = self.url(&format!("/api/datalake/{dl}/tags"));
                let what = format!("creating tag {name:?}");
                let (_, t): (_, Tag) = self.json(&what, Method::POST, url, Some(body)).await?;
                info!(tag = %self.clean(&t.name), "picsellia data tag created");
                Ok(t.id)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /api/datalake/{dl}/datas/find?<by>=<value>` with every status and type:
    /// `Ok(None)` when the platform has no such data (404).
    pub(crate) async fn find_data(&self, by: &str, value: &str) -> Result<Option<Data>, ApiError> {
        let boot = self.boot().await?;
        let mut pairs: Vec<(&str, &str)> = vec![(by, value)];
        pairs.extend(ALL_STATUSES.iter().map(|s| ("upload_statuses", *s)));
        pairs.extend(ALL_TYPES.iter().map(|t| ("types", *t)));
        let url = self.with_query(
            &format!("/api/datalake/{}/datas/find", boot.datalake),
            &pairs,
        );
        match self
            .json::<Data>("looking a data up", Method::GET, url, None)
            .await
        {
            Ok((_, d)) => Ok(Some(d)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/data/{id}`.
    pub(crate) async fn get_data(&self, id: &str) -> Result<Data, ApiError> {
        let url = self.url(&format!("/api/data/{id}"));
        Ok(self.json("reading a data", Method::GET, url, None).await?.1)
    }

    /// A data by id (a UUID) or else by filename.
    pub(crate) async fn data_by_id_or_filename(&self, key: &str) -> Result<Option<Data>, ApiError> {
        if is_uuid(key) {
            match self.get_data(key).await {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.status() == Some(404) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            self.find_data("filename", key).await
        }
    }

    /// One page of the datalake's data (`offset` on the first, as the SDK).
    pub(crate) async fn list_data(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<DataPage, ApiError> {
        let boot = self.boot().await?;
        let (limit, offset) = (limit.to_string(), offset.to_string());
        let mut pairs: Vec<(&str, &str)> = vec![("limit", &limit), ("offset", &offset)];
        pairs.extend(ALL_STATUSES.iter().map(|s| ("upload_statuses", *s)));
        pairs.extend(ALL_TYPES.iter().map(|t| ("types", *t)));
        let url = self.with_query(&format!("/api/datalake/{}/datas", boot.datalake), &pairs);
        Ok(self
            .json("listing the datalake", Method::GET, url, None)
            .await?
            .1)
    }

    /// `POST /api/tag/{tag}/attach` with `[data]`.
    pub(crate) async fn attach_tag(&self, tag_id: &str, data_id: &str) -> Result<(), ApiError> {
        let url = self.url(&format!("/api/tag/{tag_id}/attach"));
        let body = serde_json::to_vec(&[data_id]).unwrap_or_default();
        self.send("attaching a tag", Method::POST, url, Some(body))
            .await
            .map(|_| ())
    }

    /// `DELETE /api/data/{id}`.
    pub(crate) async fn delete_data(&self, id: &str) -> Result<(), ApiError> {
        let url = self.url(&format!("/api/data/{id}"));
        self.send("deleting a data", Method::DELETE, url, None)
            .await
            .map(|_| ())
    }

    /// Whether the platform answers at all (any HTTP status counts).
    pub(super) async fn probe(&self) -> Result<(), String> {
        match self
            .request(Method::GET, self.url("/api/home/ping"))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.clean(&e.without_url().to_string())),
        }
    }

    /// Logs a lookup that failed while deciding a frame's fate.
    pub(super) fn lookup_failed(&self, seq: u64, e: &ApiError) {
        warn!(seq, error = %e, "cannot ask the platform whether it has this frame; asked again before it is registered");
    }
}

/// A JSON value as text (strings without their quotes).
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
