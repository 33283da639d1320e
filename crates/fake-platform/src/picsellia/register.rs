//! The fake's registration (`POST /api/datalake/{dl}/datas`: the SDK's key order, the
//! object uploaded, the tags known, the schema fault, 208 for a known object name) and the
//! Data JSON it answers with.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{DATALAKE, FileFault, State, StoredData, error, json_response};

/// The keys of a registration, in the order the SDK sends them.
const ORDER: [&str; 9] = [
    "type",
    "filename",
    "object_name",
    "content_type",
    "tags",
    "data_source_id",
    "meta",
    "metadata",
    "custom_metadata",
];

/// Data JSON as the platform answers it (with a field the client does not know).
pub(super) fn data_json(d: &StoredData, tags: &BTreeMap<String, String>) -> Value {
    let tag_list: Vec<Value> = d
        .tags
        .iter()
        .map(|id| {
            let name = tags
                .iter()
                .find(|(_, v)| *v == id)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            json!({"id": id, "name": name, "target_type": "DATA"})
        })
        .collect();
    let mut v = json!({
        "id": d.id, "object_name": d.object_name, "filename": d.filename, "type": "IMAGE",
        "content_type": d.content_type, "upload_status": d.status,
        "presigned_url": format!("https://storage.invalid/{}", d.object_name),
        "metadata": d.metadata, "custom_metadata": d.custom_metadata,
        "tags": tag_list, "datalake_id": DATALAKE, "server_extra": {"added": true},
    });
    if d.status == "DONE" {
        v["meta"] = d.meta.clone();
    }
    v
}

/// Registers a data; `raw` is the body as sent (for the key order).
pub(super) fn register(s: &mut State, b: &Value, raw: &[u8]) -> Response {
    let filename = b["filename"].as_str().unwrap_or_default().to_string();
    let object = b["object_name"].as_str().unwrap_or_default().to_string();
    let raw = String::from_utf8_lossy(raw);
    let mut at: Vec<(usize, &str)> = ORDER
        .iter()
        .filter(|k| b.get(**k).is_some())
        .filter_map(|k| raw.find(&format!("\"{k}\":")).map(|i| (i, *k)))
        .collect();
    at.sort();
    let sent: Vec<&str> = at.iter().map(|(_, k)| *k).collect();
    let expected: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|k| b.get(*k).is_some())
        .collect();
    let known = b
        .as_object()
        .is_some_and(|o| o.keys().all(|k| ORDER.contains(&k.as_str())));
    if sent != expected || expected.len() < 6 || !known {
        s.record
            .violations
            .push(format!("registration keys {sent:?}"));
    }
    if b["type"] != "IMAGE" {
        s.record
            .violations
            .push(format!("registration type {}", b["type"]));
    }
    let answer = |s: &mut State, status: u16| {
        s.record.registrations.push((filename.clone(), status));
    };
    if FileFault::hit(&mut s.faults.register_5xx, &filename) {
        answer(s, 500);
        return error(500, "Internal Server Error");
    }
    if !s.objects.contains_key(&object) {
        answer(s, 400);
        return error(400, "object_name was not uploaded");
    }
    let tags: Vec<String> = b["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if tags.iter().any(|t| !s.tags.values().any(|v| v == t)) {
        answer(s, 400);
        return error(400, "unknown tag");
    }
    if let Some(k) = s.faults.schema_refuse_key.clone()
        && b["custom_metadata"].get(&k).is_some()
    {
        answer(s, 422);
        return json_response(
            422,
            json!({"message": "custom_metadata does not match the datalake's schema",
                "detail": [format!("{k}: extra key not allowed")]}),
        );
    }
    if s.data.values().any(|d| d.object_name == object) {
        answer(s, 208);
        return (StatusCode::ALREADY_REPORTED, "").into_response();
    }
    let id = s.next_id();
    let status = if s.faults.done_at_once {
        "DONE"
    } else {
        "PENDING"
    };
    let d = StoredData {
        id: id.clone(),
        filename: filename.clone(),
        object_name: object,
        content_type: b["content_type"].as_str().unwrap_or_default().to_string(),
        tags,
        data_source_id: b["data_source_id"].clone(),
        meta: b["meta"].clone(),
        metadata: b["metadata"].clone(),
        custom_metadata: b["custom_metadata"].clone(),
        status: status.into(),
        reads: 0,
    };
    s.data.insert(id, d.clone());
    if FileFault::hit(&mut s.faults.register_5xx_after_create, &filename) {
        answer(s, 503);
        return error(503, "Service Unavailable");
    }
    answer(s, 201);
    json_response(201, data_json(&d, &s.tags))
}
