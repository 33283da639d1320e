//! The fake's custom-metadata bulk endpoint, with per-entry errors (refused keys, passing
//! failures) and 503 faults.

use axum::response::Response;
use serde_json::{Value, json};

use super::*;

/// `POST …/customMetadataBulkUpdates`: attaches metadata to assets by filename; answers
/// `{"errors": [...], "customMetadatas": [...]}` with one error per entry it did not take.
pub(super) fn bulk_metadata(s: &mut State, body: &[u8]) -> Response {
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
