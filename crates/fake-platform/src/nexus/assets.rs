//! The fake's asset routes (`docs/protocols/nexus.md` §9): list with `limit`, a `page`
//! cursor and `group[]` filters; get, `PATCH` (status) and `DELETE` by id or filename;
//! `PUT …/customMetadatas` (asset level); `assetgroups` statistics.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};

use super::{PROJECT, State, StoredAsset, error, json_response, percent_decode};

/// Asset JSON as the platform answers it.
pub(super) fn asset_json(a: &StoredAsset) -> Value {
    json!({
        "id": a.id, "object": "asset", "projectId": PROJECT, "filename": a.filename,
        "status": a.status, "createDate": a.create_ms, "url": "",
        "metadata": {"fileSize": a.size, "mimeType": a.mime, "height": 0, "width": 0,
            "groups": a.groups, "customMetadata": a.custom_metadata},
    })
}

fn not_found() -> Response {
    error(404, "ResourceNotFoundError", "Requested Asset Not Found")
}

/// `rest` is the path after `/projects/{pid}`.
pub(super) fn route(
    s: &mut State,
    method: &Method,
    rest: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let key_of = |k: &str| percent_decode(k);
    match (method.as_str(), rest) {
        ("GET", ["assets"]) => list(s, query),
        ("GET", ["assetgroups"]) => groups(s, query),
        ("GET", ["assets", _]) if s.faults.asset_lookup_5xx > 0 => {
            s.faults.asset_lookup_5xx -= 1;
            s.record.asset_lookups_refused += 1;
            error(503, "ServiceUnavailableError", "asset lookups are down")
        }
        ("GET", ["assets", key]) => match find(s, &key_of(key)) {
            Some(a) => json_response(200, asset_json(a)),
            None => not_found(),
        },
        ("PATCH", ["assets", key]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(400, "BadRequestError", "body is not JSON");
            };
            let key = key_of(key);
            let Some(a) = find_mut(s, &key) else {
                return not_found();
            };
            if let Some(st) = v.get("status").and_then(Value::as_str) {
                a.status = st.to_string();
            }
            if let Some(g) = v.get("groups").and_then(Value::as_array) {
                a.groups = g
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
            }
            json_response(200, asset_json(a))
        }
        ("PUT", ["assets", key, "customMetadatas"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(400, "BadRequestError", "body is not JSON");
            };
            if v["parent"]["kind"] != "customMetadata#assetParent" {
                return error(
                    400,
                    "BadRequestError",
                    "parent.kind must be an asset parent",
                );
            }
            let key = key_of(key);
            let Some(a) = find_mut(s, &key) else {
                return not_found();
            };
            a.custom_metadata = v["customMetadata"].clone();
            json_response(
                200,
                json!({"parent": {"assetId": a.id}, "customMetadata": a.custom_metadata}),
            )
        }
        ("DELETE", ["assets", key]) => {
            if headers.get("content-length").and_then(|v| v.to_str().ok()) != Some("0") {
                s.record
                    .violations
                    .push("asset DELETE without Content-Length: 0".into());
            }
            let key = key_of(key);
            let Some(id) = find(s, &key).map(|a| a.id.clone()) else {
                return not_found();
            };
            s.assets.retain(|_, a| a.id != id);
            json_response(200, json!({"deleted": true, "id": id}))
        }
        _ => error(404, "ResourceNotFoundError", "no route"),
    }
}

fn find<'a>(s: &'a State, key: &str) -> Option<&'a StoredAsset> {
    s.assets.values().find(|a| a.filename == key || a.id == key)
}

fn find_mut<'a>(s: &'a mut State, key: &str) -> Option<&'a mut StoredAsset> {
    s.assets
        .values_mut()
        .find(|a| a.filename == key || a.id == key)
}

/// The query's pairs, percent-decoded (a trailing `&` accepted).
fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn list(s: &mut State, query: Option<&str>) -> Response {
    let q = pairs(query);
    let mut limit = 100usize;
    let mut page = 0usize;
    let mut groups = Vec::new();
    for (k, v) in &q {
        match k.as_str() {
            "limit" => limit = v.parse().unwrap_or(100).max(1),
            // The cursor is opaque to clients; here it is the offset, prefixed.
            "page" => match v.strip_prefix("cur-").and_then(|n| n.parse().ok()) {
                Some(n) => page = n,
                None => return error(400, "BadRequestError", "invalid page cursor"),
            },
            "group[]" => groups.push(v.clone()),
            _ => {}
        }
    }
    s.record.asset_lists += 1;
    let all: Vec<Value> = s
        .assets
        .values()
        .filter(|a| groups.is_empty() || groups.iter().any(|g| a.groups.contains(g)))
        .map(asset_json)
        .collect();
    let data: Vec<Value> = all.iter().skip(page).take(limit).cloned().collect();
    let next = (page + limit < all.len()).then(|| format!("cur-{}", page + limit));
    json_response(
        200,
        json!({"data": data, "nextPage": next, "prevPage": null}),
    )
}

fn groups(s: &State, query: Option<&str>) -> Response {
    let wanted: Vec<String> = pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "group[]")
        .map(|(_, v)| v)
        .collect();
    let mut names: Vec<String> = s
        .assets
        .values()
        .flat_map(|a| a.groups.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let out: Vec<Value> = names
        .into_iter()
        .filter(|g| wanted.is_empty() || wanted.contains(g))
        .map(|g| {
            let in_group: Vec<&StoredAsset> = s
                .assets
                .values()
                .filter(|a| a.groups.contains(&g))
                .collect();
            let count = |st: &str| in_group.iter().filter(|a| a.status == st).count();
            json!({"group": g, "statistic": {
                "totalAssets": in_group.len(),
                "annotatedAssets": count("Annotated"),
                "reviewedAssets": count("Review"),
                "toFixedAssets": count("Tofix"),
                "completedAssets": count("Completed"),
            }})
        })
        .collect();
    json_response(200, Value::Array(out))
}
