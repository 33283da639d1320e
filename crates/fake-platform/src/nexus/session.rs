//! The fake's upload sessions (create: the checks of the protocol notes, signed URLs, the
//! rate limit and scripted faults) and their operations (`Queued`/`Running` until every
//! asset was PUT, then `Finished`; `Errored` on request).

use std::time::{Duration, Instant};

use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::*;

pub(super) fn create_session(s: &mut State, body: &[u8]) -> Response {
    s.record.session_attempts.push(Instant::now());
    let answer = |s: &mut State, r: Response| {
        s.record.session_statuses.push(r.status().as_u16());
        r
    };
    if let Some(sc) = s.faults.session_create.pop_front() {
        return answer(s, scripted(sc));
    }
    if let Some(limit) = s.faults.rate_limit {
        let window = Duration::from_secs(300);
        let recent = s
            .record
            .session_attempts
            .iter()
            .filter(|t| t.elapsed() < window)
            .count();
        if recent > limit {
            return answer(s, error(429, "TooManyRequestsError", "Too Many Requests"));
        }
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return answer(s, error(400, "BadRequestError", "body is not JSON"));
    };
    let groups: Vec<String> = match req.get("groups").and_then(|g| g.as_array()) {
        Some(g)
            if g.iter()
                .all(|x| x.as_str().is_some_and(|x| !x.trim().is_empty())) =>
        {
            g.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        }
        _ => {
            return answer(
                s,
                error(400, "BadRequestError", "groups must be an array of strings"),
            );
        }
    };
    let Some(assets) = req.get("assets").and_then(|a| a.as_array()) else {
        return answer(s, error(400, "BadRequestError", "assets missing"));
    };
    if assets.is_empty() || assets.len() > 5000 {
        return answer(
            s,
            error(400, "BadRequestError", "1 to 5000 assets per session"),
        );
    }
    let mut names = std::collections::HashSet::new();
    for a in assets {
        let ok = a.get("filename").and_then(Value::as_str).is_some()
            && a.get("size").and_then(Value::as_u64).is_some_and(|x| x > 0)
            && a.get("crc32c")
                .and_then(Value::as_i64)
                .is_some_and(|c| (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&c))
            && a.get("mime").and_then(Value::as_str).is_some();
        if !ok {
            return answer(s, error(400, "BadRequestError", "asset fields invalid"));
        }
        if let Some(cm) = a.get("customMetadata") {
            let flat = cm.as_object().is_some_and(|o| {
                o.values()
                    .all(|v| v.is_string() || v.is_number() || v.is_boolean())
            });
            if !flat {
                return answer(
                    s,
                    error(400, "BadRequestError", "customMetadata must be flat"),
                );
            }
        }
        if !names.insert(a["filename"].as_str().unwrap_or("").to_string()) {
            return answer(s, error(400, "BadRequestError", "duplicate filename"));
        }
    }
    let device = assets
        .first()
        .and_then(|a| a["filename"].as_str())
        .and_then(|f| f.split('_').next())
        .unwrap_or("")
        .to_string();
    if let Some((limit, window)) = s.faults.project_limit {
        let in_window: Vec<Instant> = s
            .record
            .sessions_created_at
            .iter()
            .rev()
            .take_while(|(t, _)| t.elapsed() < window)
            .map(|(t, _)| *t)
            .collect();
        if in_window.len() >= limit {
            *s.record.limited_by_device.entry(device).or_default() += 1;
            let mut r = error(429, "TooManyRequestsError", "Too Many Requests");
            if s.faults.project_limit_retry_after {
                let oldest = in_window.last().copied().unwrap_or_else(Instant::now);
                let left = window.saturating_sub(oldest.elapsed());
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                if let Ok(v) = secs.to_string().parse() {
                    r.headers_mut().insert("retry-after", v);
                }
            }
            return answer(s, r);
        }
    }
    s.record.sessions_created_at.push((Instant::now(), device));
    s.counter += 1;
    let sid = format!("up_{:08x}-0000-4000-8000-{:012x}", s.counter, s.counter);
    let op = format!("op_{:08x}-0000-4000-8000-{:012x}", s.counter, s.counter);
    let port = s.storage_port.unwrap_or(s.port);
    let host = s.host.clone();
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    let opaque =
        base64::engine::general_purpose::STANDARD.encode(json!({"groups": groups}).to_string());
    for a in assets {
        s.counter += 1;
        let token = format!("t{:016x}{:016x}", rand_u64(), s.counter);
        let filename = a["filename"].as_str().unwrap_or("").to_string();
        let crc = a["crc32c"].as_i64().unwrap_or(0);
        let mime = a["mime"].as_str().unwrap_or("").to_string();
        let size = a["size"].as_u64().unwrap_or(0);
        let hash =
            base64::engine::general_purpose::STANDARD.encode((crc as i32 as u32).to_be_bytes());
        let sent = a.get("customMetadata").cloned();
        if sent.is_some() {
            s.record.session_metadata_assets += 1;
        }
        let session_metadata = match sent {
            Some(m) if !s.faults.ignore_session_metadata => m,
            _ => json!({}),
        };
        out.push(json!({
            "metadata": {"filename": filename, "mime": mime, "size": size, "crc32c": crc},
            "upload": {"method": "PUT",
                "url": format!("http://{host}:{port}/storage/{token}?X-Goog-Signature=abc"),
                "headers": {"content-type": mime, "x-goog-hash": format!("crc32c={hash}"),
                    "x-goog-meta-datature-upload": opaque},
                "expiryDate": now_ms() + 3_600_000}
        }));
        s.pending.insert(
            token.clone(),
            PendingAsset {
                session: sid.clone(),
                filename,
                size,
                crc32c: crc,
                mime,
                custom_metadata: session_metadata,
                groups: groups.clone(),
                opaque: opaque.clone(),
                done: false,
            },
        );
        tokens.push(token);
    }
    let errored = if s.faults.errored_operations > 0 {
        s.faults.errored_operations -= 1;
        true
    } else {
        false
    };
    s.record.session_sizes.push(tokens.len());
    s.sessions.insert(
        sid.clone(),
        Session {
            op_id: op.clone(),
            tokens,
            errored,
            cancelled: false,
            created: Instant::now(),
            last_put: None,
            finished_reported: None,
        },
    );
    answer(
        s,
        json_response(200, json!({"id": sid, "opId": op, "assets": out})),
    )
}

pub(super) fn operation(s: &mut State, op: &str) -> Response {
    let delay = s.faults.operation_delay.unwrap_or_default();
    let Some(ses) = s.sessions.values().find(|x| x.op_id == op) else {
        return error(404, "ResourceNotFoundError", "no such operation");
    };
    let settled = ses.last_put.is_some_and(|t| t.elapsed() >= delay);
    let total = ses.tokens.len() as u64;
    let done = ses
        .tokens
        .iter()
        .filter(|t| s.pending.get(*t).is_some_and(|p| p.done))
        .count() as u64;
    let (overview, finished, errored, queued) = if ses.cancelled {
        ("Cancelled", 0, 0, 0)
    } else if done < total || !settled {
        (
            "Running",
            done.min(total.saturating_sub(1)),
            0,
            total - done.min(total.saturating_sub(1)),
        )
    } else if ses.errored {
        ("Errored", 0, total, 0)
    } else {
        ("Finished", total, 0, 0)
    };
    let cancelled = if ses.cancelled { total } else { 0 };
    if overview == "Finished" {
        let ses = s
            .sessions
            .values_mut()
            .find(|x| x.op_id == op)
            .expect("session");
        ses.finished_reported.get_or_insert_with(Instant::now);
    }
    s.record.operations = s
        .sessions
        .values()
        .map(|x| (x.created, x.finished_reported))
        .collect();
    json_response(
        200,
        json!({"id": op, "object": "operation", "kind": "nexus.assets.upload",
            "status": {"overview": overview, "message": overview,
                "progress": {"unit": "asset", "withStatus": {"Queued": queued, "Running": 0,
                    "Finished": finished, "Cancelled": cancelled, "Errored": errored}}},
            "createDate": now_ms(), "updateDate": now_ms()}),
    )
}
