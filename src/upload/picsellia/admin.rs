//! The datalake from the device, for `edgecap picsellia data …`: list (optionally by tag),
//! get, tag and delete a data, with the daemon's config and token. Nothing here touches the
//! queue. A data is named by its id (a UUID) or by its filename.
//!
//! Listing by tag filters the pages on the device: the protocol notes document no tag
//! filter on the list call. Pages are read with `limit`/`offset` (1000 per page, at most
//! [`MAX_PAGES`] pages), which the SDK also uses for ordered lists.

use serde::Serialize;
use serde_json::Value;

use super::client::{ApiError, Client};
use super::wire::Data;
use crate::config::{PicselliaConfig, Secret};

/// Page size of a list call (the platform's maximum).
const PAGE: usize = 1000;
/// Pages read at most while filtering by tag.
pub const MAX_PAGES: usize = 100;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No data has this id or filename.
    #[error("no data {0:?} in the datalake")]
    NotFound(String),
    /// Too many requests; the server asks to wait this long.
    #[error("the platform asks to slow down (429)")]
    Busy(Option<std::time::Duration>),
    /// The platform refused or could not be reached.
    #[error("{0}")]
    Platform(String),
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Status {
                status: 429,
                retry_after,
                ..
            } => Self::Busy(retry_after),
            e => Self::Platform(e.to_string()),
        }
    }
}

/// A data as the commands show it.
#[derive(Debug, Clone, Serialize)]
pub struct DataView {
    /// Its id.
    pub id: String,
    /// Its filename.
    pub filename: String,
    /// Its object name in storage.
    pub object_name: String,
    /// `PENDING`, `COMPUTING`, `DONE` or `ERROR`.
    pub status: String,
    /// Its tags' names.
    pub tags: Vec<String>,
    /// Standard metadata.
    pub metadata: Value,
    /// Custom metadata.
    pub custom_metadata: Value,
}

impl From<Data> for DataView {
    fn from(d: Data) -> Self {
        Self {
            id: d.id,
            filename: d.filename,
            object_name: d.object_name,
            status: d.upload_status,
            tags: d.tags.into_iter().map(|t| t.name).collect(),
            metadata: d.metadata.unwrap_or(Value::Null),
            custom_metadata: d.custom_metadata.unwrap_or(Value::Null),
        }
    }
}

/// The datalake of a config.
pub struct Admin {
    client: Client,
}

impl Admin {
    /// A client for `cfg` with `token`; `device` fills `{device}` in the data source name.
    pub fn new(cfg: &PicselliaConfig, token: Secret, device: &str) -> Result<Self, AdminError> {
        Client::new(cfg.clone(), token, device)
            .map(|client| Self { client })
            .map_err(AdminError::Platform)
    }

    /// The datalake's name, once found.
    pub async fn datalake(&self) -> Result<String, AdminError> {
        Ok(self.client.boot().await?.datalake_name.clone())
    }

    /// Up to `limit` data, those tagged `tag` when given.
    pub async fn list(&self, tag: Option<&str>, limit: usize) -> Result<Vec<DataView>, AdminError> {
        let mut out = Vec::new();
        let page = if tag.is_some() {
            PAGE
        } else {
            limit.clamp(1, PAGE)
        };
        for n in 0..MAX_PAGES {
            let items = self.client.list_data(page, n * page).await?.items;
            let len = items.len();
            out.extend(
                items
                    .into_iter()
                    .filter(|d| tag.is_none_or(|t| d.tags.iter().any(|x| x.name == t)))
                    .map(DataView::from),
            );
            if out.len() >= limit || len < page {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The data `key` names (id or filename).
    pub async fn get(&self, key: &str) -> Result<DataView, AdminError> {
        self.client
            .data_by_id_or_filename(key)
            .await?
            .map(DataView::from)
            .ok_or_else(|| AdminError::NotFound(key.to_string()))
    }

    /// The data whose `by` (`object_name`, `filename` or `id`) is `value`.
    pub async fn find(&self, by: &str, value: &str) -> Result<DataView, AdminError> {
        self.client
            .find_data(by, value)
            .await?
            .map(DataView::from)
            .ok_or_else(|| AdminError::NotFound(value.to_string()))
    }

    /// Attaches the data tags `tags` (created where missing) to the data `key` names.
    pub async fn tag(&self, key: &str, tags: &[String]) -> Result<DataView, AdminError> {
        let data = self.get(key).await?;
        for id in self.client.tag_ids(tags).await? {
            self.client.attach_tag(&id, &data.id).await?;
        }
        self.get(&data.id).await
    }

    /// Deletes the data `key` names; returns what it was.
    pub async fn delete(&self, key: &str) -> Result<DataView, AdminError> {
        let data = self.get(key).await?;
        self.client.delete_data(&data.id).await?;
        Ok(data)
    }

    /// Masks the token in text for output.
    pub fn clean(&self, s: &str) -> String {
        self.client.clean(s)
    }
}
