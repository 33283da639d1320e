//! The Picsellia wire format: the JSON bodies edgecap sends and reads (protocol notes in
//! `docs/protocols/picsellia.md`). Unknown fields in answers are ignored, so a server may
//! add to them; the SDK's required fields are required here too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::custom_meta::CustomMeta;

/// `GET /api/home/ping`.
#[derive(Deserialize)]
pub(super) struct Ping {
    #[serde(default)]
    pub(super) default_organization: Option<String>,
}

/// Anything with an `id` (`organizations/find`, data sources).
#[derive(Deserialize)]
pub(super) struct WithId {
    pub(super) id: String,
}

/// `GET /api/organization/{id}`.
#[derive(Deserialize)]
pub(super) struct Organization {
    pub(super) id: String,
    #[serde(default)]
    pub(super) default_connector_id: Option<String>,
}

/// `GET /api/organization/{id}/datalake`.
#[derive(Deserialize)]
pub(super) struct Datalake {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) connector_id: Option<String>,
}

/// A tag (`tags/find`, `tags`).
#[derive(Deserialize)]
pub(super) struct Tag {
    pub(super) id: String,
    pub(super) name: String,
}

/// `POST …/generate_object_name`.
#[derive(Serialize)]
pub(super) struct ObjectNameRequest<'a> {
    pub(super) filename: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) upload_dir: Option<&'a str>,
}

#[derive(Deserialize)]
pub(super) struct ObjectName {
    pub(super) object_name: String,
}

/// `POST /api/object-storage/{connector}/generate_presigned_url`.
#[derive(Serialize)]
pub(super) struct PresignRequest<'a> {
    pub(super) object_name: &'a str,
    pub(super) content_type: &'a str,
}

#[derive(Deserialize)]
pub(super) struct Presigned {
    pub(super) client_type: String,
    pub(super) presigned_url_data: PresignedData,
}

#[derive(Deserialize)]
pub(super) struct PresignedData {
    pub(super) url: String,
    /// Form fields (S3 style) or headers (Azure), in the server's order.
    pub(super) fields: serde_json::Map<String, Value>,
}

/// `POST /api/datalake/{dl}/datas`: keys in the SDK's order, optional ones left out.
#[derive(Serialize)]
pub(super) struct Register<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) filename: &'a str,
    pub(super) object_name: &'a str,
    pub(super) content_type: &'a str,
    pub(super) tags: Vec<&'a str>,
    pub(super) data_source_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) meta: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<BTreeMap<&'static str, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) custom_metadata: Option<&'a CustomMeta>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(super) struct Size {
    pub(super) width: u32,
    pub(super) height: u32,
}

/// Data JSON (registration, `GET /api/data/{id}`, `datas/find`, lists).
#[derive(Deserialize, Serialize, Clone, Debug)]
pub(crate) struct Data {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) object_name: String,
    #[serde(default)]
    pub(crate) filename: String,
    pub(crate) upload_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) custom_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<DataTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) meta: Option<Value>,
}

/// A tag as Data JSON lists it.
#[derive(Deserialize, Serialize, Clone, Debug)]
pub(crate) struct DataTag {
    #[serde(default)]
    pub(crate) id: String,
    pub(crate) name: String,
}

impl Data {
    /// Processing is over (any status but `PENDING`/`COMPUTING`, as the SDK reads it).
    pub(super) fn ready(&self) -> bool {
        !matches!(self.upload_status.as_str(), "PENDING" | "COMPUTING")
    }
}

/// A page of Data (`GET /api/datalake/{dl}/datas`).
#[derive(Deserialize)]
pub(crate) struct DataPage {
    pub(crate) items: Vec<Data>,
}

/// An error body: `message` and an optional `detail` (a list or anything else).
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) detail: Option<Value>,
}

/// The registration's `type`, from the content type as the SDK decides it.
pub(super) fn data_type(content_type: &str) -> &'static str {
    if content_type.starts_with("video/") {
        "VIDEO"
    } else {
        "IMAGE"
    }
}

/// `acquired_at` in the form the SDK sends (naive `YYYY-MM-DDTHH:MM:SS`); edgecap's
/// capture time is UTC.
pub(super) fn acquired_at(unix_ms: i64) -> Option<String> {
    let ts = jiff::Timestamp::from_millisecond(unix_ms).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn registration_keys_go_in_the_sdk_order_and_optional_ones_are_left_out() {
        let custom: CustomMeta =
            BTreeMap::from([("k".to_string(), crate::config::MetaValue::Str("v".into()))]).into();
        let mut metadata = BTreeMap::new();
        metadata.insert("latitude", Value::from(1.5));
        let r = Register {
            kind: "IMAGE",
            filename: "a.jpg",
            object_name: "data/x-a.jpg",
            content_type: "image/jpeg",
            tags: vec!["t1"],
            data_source_id: None,
            meta: Some(Size {
                width: 7,
                height: 5,
            }),
            metadata: Some(metadata),
            custom_metadata: Some(&custom),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"IMAGE","filename":"a.jpg","object_name":"data/x-a.jpg","content_type":"image/jpeg","tags":["t1"],"data_source_id":null,"meta":{"width":7,"height":5},"metadata":{"latitude":1.5},"custom_metadata":{"k":"v"}}"#
        );
        let bare = Register {
            meta: None,
            metadata: None,
            custom_metadata: None,
            tags: vec![],
            ..r
        };
        assert!(!serde_json::to_string(&bare).unwrap().contains("meta"));
        assert_eq!(
            acquired_at(1_700_000_000_123).unwrap(),
            "2023-11-14T22:13:20"
        );
        assert_eq!(data_type("image/jpeg"), "IMAGE");
        assert_eq!(data_type("video/mp4"), "VIDEO");
    }
}
