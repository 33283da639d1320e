//! The project's assets from the device, for `edgecap nexus …` and `edgecap verify`: list
//! (cursor pages, group filter), get, update (status; custom metadata through the
//! current per-asset endpoint), delete, and group statistics (`docs/protocols/nexus.md`
//! §9), with the daemon's config and key. Nothing here touches the queue. An asset is named
//! by its `asset_…` id or its filename (the API takes either in the same path segment).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Client;
use crate::config::{MetaValue, NexusConfig, Secret};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NexusError {
    /// No asset has this id or filename.
    #[error("no asset {0:?} in the project")]
    NotFound(String),
    /// Too many requests; the server asks to wait this long.
    #[error("the platform asks to slow down (429)")]
    Busy(Option<Duration>),
    /// The platform refused or could not be reached.
    #[error("{0}")]
    Platform(String),
}

/// An asset as the commands show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetView {
    /// `asset_…`.
    pub id: String,
    /// Its filename.
    pub filename: String,
    /// Annotation status.
    #[serde(default)]
    pub status: String,
    /// Creation time, Unix ms.
    #[serde(rename = "createDate", default)]
    pub create_date: i64,
    /// Size, type, groups and custom metadata.
    #[serde(default)]
    pub metadata: AssetMeta,
}

/// An asset's `metadata`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AssetMeta {
    /// Bytes.
    #[serde(rename = "fileSize", default)]
    pub file_size: u64,
    /// MIME type.
    #[serde(rename = "mimeType", default)]
    pub mime_type: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Custom metadata (null when none).
    #[serde(rename = "customMetadata", default)]
    pub custom_metadata: Option<Value>,
}

/// One page of assets and the cursor of the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetPage {
    /// The assets.
    pub data: Vec<AssetView>,
    /// The next page's cursor (none on the last page).
    #[serde(rename = "nextPage", default)]
    pub next_page: Option<String>,
}

/// A group's statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStats {
    /// The group.
    #[serde(default)]
    pub group: String,
    /// Its counts, as the platform gives them.
    #[serde(default)]
    pub statistic: Value,
}

/// The project of a config.
pub struct NexusAdmin {
    client: Client,
}

impl NexusAdmin {
    /// A client for `cfg` with `secret`.
    pub fn new(cfg: &NexusConfig, secret: Secret) -> Result<Self, NexusError> {
        Client::new(cfg.clone(), secret)
            .map(|client| Self { client })
            .map_err(NexusError::Platform)
    }

    /// Masks the key in text for output.
    pub fn clean(&self, s: &str) -> String {
        self.client.clean(s)
    }

    fn asset_url(&self, key: &str, rest: &[&str]) -> Url {
        let mut url = self.client.url(&self.client.project_path("/assets"));
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.push(key);
            segs.extend(rest);
        }
        url
    }

    /// Sends a request; the body of a 2xx answer, `None` on a 404.
    async fn call(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<bytes::Bytes>, NexusError> {
        let resp = req.send().await.map_err(|e| {
            NexusError::Platform(self.clean(&format!("{what}: {}", e.without_url())))
        })?;
        let status = resp.status();
        let retry = crate::upload::backoff::retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        match status {
            s if s.is_success() => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::TOO_MANY_REQUESTS => Err(NexusError::Busy(retry)),
            s => Err(NexusError::Platform(format!(
                "{what}: {}",
                self.client.describe_error_body(s, &body)
            ))),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: &[u8],
    ) -> Result<T, NexusError> {
        serde_json::from_slice(body).map_err(|e| {
            NexusError::Platform(self.clean(&format!(
                "{what}: the answer is not what the protocol says ({e})"
            )))
        })
    }

    /// The asset `key` names (id or filename).
    pub async fn get(&self, key: &str) -> Result<AssetView, NexusError> {
        let req = self.client.api(Method::GET, self.asset_url(key, &[]));
        match self.call("reading an asset", req).await? {
            Some(b) => self.parse("reading an asset", &b),
            None => Err(NexusError::NotFound(key.to_string())),
        }
    }

    /// One page of assets (`limit` per page, `groups` as filters, `page` a cursor).
    pub async fn list(
        &self,
        groups: &[String],
        limit: usize,
        page: Option<&str>,
    ) -> Result<AssetPage, NexusError> {
        let mut url = self.client.url(&self.client.project_path("/assets"));
        {
            let mut q = url.query_pairs_mut();
            if let Some(p) = page {
                q.append_pair("page", p);
            }
            q.append_pair("limit", &limit.to_string());
            for g in groups {
                q.append_pair("group[]", g);
            }
        }
        let req = self.client.api(Method::GET, url);
        match self.call("listing assets", req).await? {
            Some(b) => self.parse("listing assets", &b),
            None => Err(NexusError::Platform(
                "listing assets: the project was not found (404)".into(),
            )),
        }
    }

    /// Sets the asset's status and/or replaces its custom metadata (asset level).
    pub async fn update(
        &self,
        key: &str,
        status: Option<&str>,
        metadata: Option<&BTreeMap<String, MetaValue>>,
    ) -> Result<AssetView, NexusError> {
        if let Some(s) = status {
            let body = json!({ "status": s }).to_string();
            let req = self
                .client
                .api(Method::PATCH, self.asset_url(key, &[]))
                .body(body);
            if self.call("updating an asset", req).await?.is_none() {
                return Err(NexusError::NotFound(key.to_string()));
            }
        }
        if let Some(m) = metadata {
            let body = json!({
                "parent": {"kind": "customMetadata#assetParent"},
                "customMetadata": m,
            })
            .to_string();
            let req = self
                .client
                .api(Method::PUT, self.asset_url(key, &["customMetadatas"]))
                .body(body);
            if self
                .call("setting an asset's custom metadata", req)
                .await?
                .is_none()
            {
                return Err(NexusError::NotFound(key.to_string()));
            }
        }
        self.get(key).await
    }

    /// Deletes the asset `key` names.
    pub async fn delete(&self, key: &str) -> Result<(), NexusError> {
        // As the SDK: no content type, an explicit empty body.
        let req = self
            .client
            .http
            .request(Method::DELETE, self.asset_url(key, &[]))
            .header("Secret-Key", self.client.secret_header())
            .header(CONTENT_LENGTH, "0")
            .body(Vec::new())
            .timeout(self.client.cfg.request_timeout);
        match self.call("deleting an asset", req).await? {
            Some(_) => Ok(()),
            None => Err(NexusError::NotFound(key.to_string())),
        }
    }

    /// Statistics of `groups` (all when empty).
    pub async fn groups(&self, groups: &[String]) -> Result<Vec<GroupStats>, NexusError> {
        let mut url = self.client.url(&self.client.project_path("/assetgroups"));
        {
            let mut q = url.query_pairs_mut();
            for g in groups {
                q.append_pair("group[]", g);
            }
        }
        let req = self.client.api(Method::GET, url);
        match self.call("reading group statistics", req).await? {
            Some(b) => self.parse("reading group statistics", &b),
            None => Err(NexusError::Platform(
                "reading group statistics: the project was not found (404)".into(),
            )),
        }
    }
}
