//! Custom metadata through the bulk endpoint, the way SDK 1.12 attaches it
//! (`metadata_api = "bulk"` or `"both"`; `docs/protocols/nexus.md` §4): once the platform
//! has a batch's images, one `POST /projects/{pid}/customMetadataBulkUpdates` attaches
//! every frame's metadata by filename (`customMetadata#assetFilenameParent`).
//!
//! The answer lists per-entry `errors`. An entry the platform refuses for a reason that
//! retrying cannot fix (an invalid key or value, a value too long) is a refusal: the frame
//! goes dead, logged with its keys and the platform's words. Anything else (the asset not
//! visible yet, a server error, a lost connection) leaves the frame's metadata pending:
//! the queue keeps the frame, marked so that only the metadata is sent again. An error
//! that names no filename, or a 400 for the whole call, is narrowed down by sending each
//! entry on its own.

use std::collections::BTreeMap;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tracing::error;

use super::client::Client;
use crate::custom_meta::CustomMeta;
use crate::upload::sink::{Outcome, Verdict};

/// The parent kind that names an asset by its filename.
const FILENAME_PARENT: &str = "customMetadata#assetFilenameParent";

/// Calls at once while narrowing an answer down entry by entry.
const SPLIT_CONCURRENCY: usize = 4;

/// One frame's metadata to attach. A pending operation keeps its frames' jobs until the
/// platform has the images (up to four operations of up to 750 frames at once): the
/// metadata stays the JSON text it was read as ([`CustomMeta`]), a few hundred bytes a
/// frame.
#[derive(Debug, Clone)]
pub(super) struct MetaJob {
    pub(super) seq: u64,
    pub(super) filename: String,
    custom: CustomMeta,
}

impl MetaJob {
    /// The job for frame `seq` called `filename`.
    pub(super) fn new(seq: u64, filename: String, custom: CustomMeta) -> Self {
        Self {
            seq,
            filename,
            custom,
        }
    }
}

#[derive(Serialize)]
struct BulkRequest<'a> {
    #[serde(rename = "customMetadatas")]
    custom_metadatas: Vec<BulkEntry<'a>>,
}

#[derive(Serialize)]
struct BulkEntry<'a> {
    parent: Parent<'a>,
    #[serde(rename = "customMetadata")]
    custom_metadata: &'a CustomMeta,
}

#[derive(Serialize)]
struct Parent<'a> {
    kind: &'static str,
    filename: &'a str,
}

/// What one call decided.
enum Answer {
    /// An outcome for every job, and the link verdict.
    Done(Vec<(u64, Outcome)>, Verdict),
    /// The call cannot say which entry is at fault: send each on its own.
    Narrow,
}

/// Attaches the metadata of `jobs`; one outcome per job: `Accepted`, `MetadataPending`
/// or `Rejected`.
pub(super) async fn attach(c: &Client, jobs: &[MetaJob]) -> (Vec<(u64, Outcome)>, Verdict) {
    if jobs.is_empty() {
        return (Vec::new(), Verdict::Ok);
    }
    match call(c, jobs).await {
        Answer::Done(o, v) => (o, v),
        Answer::Narrow => {
            let answers: Vec<Answer> = stream::iter(jobs.to_vec())
                .map(|j| async move { call(c, std::slice::from_ref(&j)).await })
                .buffer_unordered(SPLIT_CONCURRENCY)
                .collect()
                .await;
            let mut outcomes = Vec::with_capacity(jobs.len());
            let mut verdict = Verdict::Ok;
            for a in answers {
                if let Answer::Done(o, v) = a {
                    outcomes.extend(o);
                    verdict = worse(verdict, v);
                }
            }
            (outcomes, verdict)
        }
    }
}

/// The verdict that paces the uploader more: an error over `Ok`, the first error kept.
pub(super) fn worse(a: Verdict, b: Verdict) -> Verdict {
    match a {
        Verdict::Ok => b,
        a => a,
    }
}

async fn call(c: &Client, jobs: &[MetaJob]) -> Answer {
    let pending = |why: &str, verdict: Verdict| {
        Answer::Done(
            jobs.iter()
                .map(|j| (j.seq, Outcome::MetadataPending(why.to_string())))
                .collect(),
            verdict,
        )
    };
    let body = BulkRequest {
        custom_metadatas: jobs
            .iter()
            .map(|j| BulkEntry {
                parent: Parent {
                    kind: FILENAME_PARENT,
                    filename: &j.filename,
                },
                custom_metadata: &j.custom,
            })
            .collect(),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => {
            return pending(
                "cannot encode the metadata request",
                Verdict::Backoff {
                    reason: format!("cannot encode the metadata request: {e}"),
                    retry_after: None,
                },
            );
        }
    };
    let url = c.url(&c.project_path("/customMetadataBulkUpdates"));
    let resp = match c.api(Method::POST, url).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let v = c.network_error("attaching metadata", e);
            return pending("metadata not sent", v);
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let v = c.network_error("reading the metadata answer", e);
            return pending("metadata answer lost", v);
        }
    };
    if status.as_u16() == 400 && jobs.len() > 1 {
        return Answer::Narrow;
    }
    if !status.is_success() {
        let v = c.classify("attaching metadata", status, &headers, &bytes);
        return match v {
            Verdict::Split(reason) => Answer::Done(refuse(c, &jobs[0], &reason), Verdict::Ok),
            v => pending("metadata not accepted", v),
        };
    }
    let Some(errors) = answer_errors(&bytes) else {
        let reason = c.clean(&format!(
            "the metadata answer is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        ));
        return pending(
            "garbage metadata answer",
            Verdict::Backoff {
                reason,
                retry_after: None,
            },
        );
    };
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut unnamed: Vec<String> = Vec::new();
    for e in errors
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = e
            .get("error")
            .map(|t| t.as_str().map_or_else(|| t.to_string(), String::from))
            .unwrap_or_else(|| e.to_string());
        let text = c.clean(&text);
        match error_filename(e) {
            Some(name) if jobs.iter().any(|j| j.filename == name) => {
                refused.insert(name, text);
            }
            _ if jobs.len() == 1 => {
                refused.insert(jobs[0].filename.clone(), text);
            }
            _ => unnamed.push(text),
        }
    }
    if !unnamed.is_empty() {
        return Answer::Narrow;
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut verdict = Verdict::Ok;
    for j in jobs {
        match refused.get(&j.filename) {
            None => outcomes.push((j.seq, Outcome::Accepted)),
            Some(text) if is_refusal(text) => outcomes.extend(refuse(c, j, text)),
            Some(text) => {
                outcomes.push((
                    j.seq,
                    Outcome::MetadataPending(format!("metadata not attached yet: {text}")),
                ));
                verdict = worse(
                    verdict,
                    Verdict::Backoff {
                        reason: format!("metadata of {} not attached: {text}", j.filename),
                        retry_after: None,
                    },
                );
            }
        }
    }
    Answer::Done(outcomes, verdict)
}

/// The `errors` member of a bulk answer (`None` when there is none, or the answer is not
/// an object); `None` outside when the answer is not JSON at all. Only `errors` is built:
/// the rest of the answer (the platform lists every record it wrote, ~1 KB per frame) is
/// skipped as it is read instead of being built as a tree, 3.7 MiB at the peak of a
/// 1000-frame batch.
fn answer_errors(bytes: &[u8]) -> Option<Option<Value>> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Errors;
    impl<'de> Visitor<'de> for Errors {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut errors = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "errors" {
                    errors = Some(map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(errors)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match de
        .deserialize_map(Errors)
        .and_then(|e| de.end().map(|()| e))
    {
        Ok(errors) => Some(errors),
        // Valid JSON that is not an object carries no errors.
        Err(_) => serde_json::from_slice::<IgnoredAny>(bytes)
            .ok()
            .map(|_| None),
    }
}

/// A refusal of `j`'s metadata: logged with its keys, the frame goes dead.
fn refuse(c: &Client, j: &MetaJob, text: &str) -> Vec<(u64, Outcome)> {
    let text = c.clean(text);
    let keys = j.custom.keys();
    error!(seq = j.seq, filename = %j.filename, keys = ?keys, reason = %text,
        "the platform refused this frame's metadata; the frame is marked dead (its image is on the platform)");
    vec![(
        j.seq,
        Outcome::Rejected(format!("metadata refused: {text}")),
    )]
}

/// The filename an error entry is about, wherever the server put it.
fn error_filename(e: &Value) -> Option<String> {
    let candidates = [
        e.pointer("/customMetadata/parent/filename"),
        e.pointer("/parent/filename"),
        e.pointer("/filename"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .map(String::from)
}

/// Whether an error text says the metadata itself is unacceptable (retrying the same
/// metadata cannot help), as opposed to a passing condition.
fn is_refusal(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "invalid",
        "not allowed",
        "unsupported",
        "too long",
        "too large",
        "too many",
        "exceed",
        "malformed",
        "must be",
    ]
    .iter()
    .any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetaValue;
    use serde_json::json;

    #[test]
    fn a_job_sends_its_metadata_as_the_map_would_and_knows_its_keys() {
        let mut custom = BTreeMap::new();
        custom.insert("site".to_string(), MetaValue::Str("north \"gate\"".into()));
        custom.insert("n".to_string(), MetaValue::Int(-3));
        custom.insert("ok".to_string(), MetaValue::Bool(true));
        custom.insert("t".to_string(), MetaValue::Float(0.5));
        let job = MetaJob::new(7, "a.jpg".into(), CustomMeta::from_map(&custom));
        let entry = |c| {
            serde_json::to_value(BulkEntry {
                parent: Parent {
                    kind: FILENAME_PARENT,
                    filename: "a.jpg",
                },
                custom_metadata: c,
            })
            .unwrap()
        };
        assert_eq!(
            entry(&job.custom)["customMetadata"],
            serde_json::to_value(&custom).unwrap()
        );
        assert_eq!(
            entry(&job.custom)["customMetadata"]["site"],
            "north \"gate\""
        );
        assert_eq!(job.custom.keys(), vec!["n", "ok", "site", "t"]);
    }

    #[test]
    fn error_entries_name_their_frame_wherever_the_filename_is() {
        let nested = json!({"customMetadata": {"parent": {"kind": FILENAME_PARENT, "filename": "a.jpg"}, "customMetadata": {}}, "error": "x"});
        assert_eq!(error_filename(&nested).as_deref(), Some("a.jpg"));
        let flat = json!({"parent": {"filename": "b.jpg"}, "error": "x"});
        assert_eq!(error_filename(&flat).as_deref(), Some("b.jpg"));
        assert_eq!(error_filename(&json!({"error": "x"})), None);
    }

    #[test]
    fn an_answer_gives_its_errors_whatever_else_it_holds() {
        let full = br#"{"customMetadatas": [{"parent": {"filename": "a.jpg"}, "customMetadata": {"k": 1}}], "errors": [{"error": "x"}], "extra": {"n": [1, 2]}}"#;
        assert_eq!(answer_errors(full), Some(Some(json!([{"error": "x"}]))));
        assert_eq!(answer_errors(br#"{"customMetadatas": []}"#), Some(None));
        // JSON, but not an object: no errors, as before.
        assert_eq!(answer_errors(b"[1, 2]"), Some(None));
        assert_eq!(answer_errors(b"\"ok\""), Some(None));
        // Not JSON: garbage.
        assert_eq!(answer_errors(b"<html>oops</html>"), None);
        assert_eq!(answer_errors(br#"{"errors": []} trailing"#), None);
    }

    #[test]
    fn only_what_retrying_cannot_fix_is_a_refusal() {
        assert!(is_refusal("Invalid metadata value for key site"));
        assert!(is_refusal("value exceeds the maximum length"));
        assert!(!is_refusal("Requested Asset Not Found"));
        assert!(!is_refusal("internal error, try again"));
    }
}
