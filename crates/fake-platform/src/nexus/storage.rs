//! The fake's signed-URL storage PUT: content type, length and CRC-32C checked, faults
//! (status, delay), duplicates recorded, assets created.

use std::time::Instant;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::*;

pub(super) fn storage_put(
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
