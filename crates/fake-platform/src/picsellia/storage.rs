//! The fake's object storage: the S3-style form POST (every presigned field echoed in
//! order, then `Content-Type`, then the file named after the object) and the Azure-style
//! block-blob PUT, with the 403 fault.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{FileFault, State};

/// A form part: name, filename, content.
type FormPart = (String, Option<String>, Vec<u8>);

/// A storage request.
pub(super) fn storage(
    s: &mut State,
    method: &Method,
    segs: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (object, kind, bytes) = match (method.as_str(), segs) {
        ("POST", ["storage", "form"]) => {
            let Some(parts) = parse_form(headers, body) else {
                s.record
                    .violations
                    .push("storage form is not multipart/form-data".into());
                return (StatusCode::BAD_REQUEST, "bad form").into_response();
            };
            let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
            if names != ["key", "policy", "x-amz-signature", "Content-Type", "file"] {
                s.record
                    .violations
                    .push(format!("storage form parts {names:?}"));
            }
            let key = parts
                .iter()
                .find(|p| p.0 == "key")
                .map(|p| String::from_utf8_lossy(&p.2).into_owned())
                .unwrap_or_default();
            let file = parts.iter().find(|p| p.0 == "file");
            if file.and_then(|f| f.1.as_deref()) != Some(key.as_str()) {
                s.record
                    .violations
                    .push("storage file part not named after the object".into());
            }
            (key, "form", file.map(|f| f.2.clone()).unwrap_or_default())
        }
        ("PUT", ["storage", "blob", token]) => {
            if headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()) != Some("BlockBlob") {
                s.record
                    .violations
                    .push("blob PUT without x-ms-blob-type: BlockBlob".into());
            }
            if headers.get("x-ms-version").is_none() {
                s.record
                    .violations
                    .push("blob PUT without the presigned fields as headers".into());
            }
            let object = percent_encoding::percent_decode_str(token)
                .decode_utf8_lossy()
                .into_owned();
            (object, "blob", body.to_vec())
        }
        _ => return (StatusCode::NOT_FOUND, "no such storage route").into_response(),
    };
    // `<dir>/<36-character id>-<filename>`.
    let filename = object
        .rsplit('/')
        .next()
        .and_then(|b| b.get(37..))
        .unwrap_or_default()
        .to_string();
    if FileFault::hit(&mut s.faults.storage_403, &filename) {
        s.record.uploads.push((object, kind, 403));
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        )
            .into_response();
    }
    let stored = if s.discard_bytes {
        // Only the ends, for the JPEG checks.
        let n = bytes.len();
        [&bytes[..n.min(2)], &bytes[n.saturating_sub(2)..]].concat()
    } else {
        bytes
    };
    s.objects.insert(object.clone(), stored);
    let status = if kind == "form" { 204 } else { 201 };
    s.record.uploads.push((object, kind, status));
    StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response()
}

/// The parts of a `multipart/form-data` body, in order.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Option<Vec<FormPart>> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    let boundary = ct
        .strip_prefix("multipart/form-data")?
        .split("boundary=")
        .nth(1)?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut parts = Vec::new();
    let start = find(body, delim.as_bytes())?;
    let mut rest = &body[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delim}").as_bytes())?;
        let content = rest[..end].to_vec();
        rest = &rest[end + 2 + delim.len()..];
        let disp = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let field = |k: &str| {
            disp.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_string())
        };
        parts.push((field("name")?, field("filename"), content));
    }
}
