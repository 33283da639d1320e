//! Moving one frame's bytes to object storage through a presigned request (protocol doc
//! §4): a form POST for the `aws`, `minio` and `google` client types, a `PUT` with
//! `x-ms-blob-type: BlockBlob` for `azure`. Storage calls carry no platform credential.
//! Network errors and 5xx/408/429 answers are tried three times in all (after 0.5 s and
//! 1 s); a 403 (a refused or expired presigned request) is transient for this frame only,
//! which gets a new presigned request later; any other 4xx counts as a failed attempt.

use std::sync::Arc;

use crate::upload::throttle::{self, Throttle};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::watch;
use tracing::debug;

use super::wire::Presigned;
use crate::upload::{sleep_or_stop, stopped, storage_refusal};

/// How a storage upload ended.
pub(super) enum Stored {
    /// Storage has the bytes.
    Done,
    /// Not stored, for a passing reason; `network` when the connection itself failed.
    Transient { reason: String, network: bool },
    /// Storage refused the request for a reason of its own (a 4xx other than 403/408/429).
    Refused(String),
    /// The daemon is stopping.
    Stopped,
}

/// The longest an upload of `len` bytes may take: the stall timeout plus the time to send
/// it at 16 KiB/s (a poor LTE link), or at the bandwidth cap when that is slower (the
/// sink's `concurrency` share it).
fn deadline(stall: Duration, len: usize, throttle: Option<&Arc<Throttle>>) -> Duration {
    stall + throttle::transfer_time(throttle, len as u64, 4, 16_384.0)
}

/// How uploads reach storage: the client, the stall timeout, the bandwidth cap, the stop.
pub(super) struct Transfer<'a> {
    pub(super) http: &'a reqwest::Client,
    pub(super) stall: Duration,
    pub(super) throttle: Option<&'a Arc<Throttle>>,
    pub(super) stop: &'a watch::Receiver<bool>,
}

/// Uploads `image` as `object_name` following `presigned`.
pub(super) async fn upload(
    t: &Transfer<'_>,
    presigned: &Presigned,
    object_name: &str,
    content_type: &str,
    image: Bytes,
) -> Stored {
    let Transfer {
        http,
        stall,
        throttle,
        stop,
    } = *t;
    let Ok(url) = Url::parse(&presigned.presigned_url_data.url) else {
        return Stored::Transient {
            reason: "the platform returned an invalid presigned URL".into(),
            network: false,
        };
    };
    let kind = presigned.client_type.to_ascii_lowercase();
    let azure = match kind.as_str() {
        "aws" | "minio" | "google" => false,
        "azure" => true,
        other => {
            return Stored::Refused(format!(
                "the platform asked for an unknown storage client type {other:?}"
            ));
        }
    };
    let fields: Vec<(String, String)> = presigned
        .presigned_url_data
        .fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    let timeout = deadline(stall, image.len(), throttle);
    let capped = throttle.is_some_and(|t| t.rate().is_some());
    let delays = [Duration::from_millis(500), Duration::from_secs(1)];
    let mut attempt = 0;
    loop {
        let req = if azure {
            let mut r = http
                .request(Method::PUT, url.clone())
                .timeout(timeout)
                .body(throttle::body(throttle, image.clone()));
            if capped {
                r = r.header(reqwest::header::CONTENT_LENGTH, image.len());
            }
            for (k, v) in &fields {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    r = r.header(k, v);
                }
            }
            r.header(CONTENT_TYPE, content_type)
                .header("x-ms-blob-type", "BlockBlob")
        } else {
            // The fields in the server's order, then Content-Type, then the file (no
            // per-part content type), as the SDK builds the form.
            let mut form = Form::new();
            for (k, v) in &fields {
                form = form.text(k.clone(), v.clone());
            }
            form = form.text("Content-Type", content_type.to_string());
            let part = Part::stream_with_length(
                throttle::body(throttle, image.clone()),
                image.len() as u64,
            )
            .file_name(object_name.to_string());
            form = form.part("file", part);
            http.request(Method::POST, url.clone())
                .timeout(timeout)
                .multipart(form)
        };
        let res = tokio::select! {
            r = req.send() => r,
            _ = stopped(stop) => return Stored::Stopped,
        };
        let (reason, network) = match res {
            Ok(r) if r.status().as_u16() < 400 => return Stored::Done,
            Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                return Stored::Transient {
                    reason: "storage answered 403 (presigned request refused or expired); a new one is asked for later".into(),
                    network: false,
                };
            }
            Ok(r) => {
                let refusal = storage_refusal(r).await;
                if !refusal.passing {
                    return Stored::Refused(refusal.reason);
                }
                (refusal.reason, false)
            }
            Err(e) => (format!("storage upload failed: {}", e.without_url()), true),
        };
        if attempt >= delays.len() {
            return Stored::Transient { reason, network };
        }
        debug!(object_name, attempt, reason, "retrying a storage upload");
        if sleep_or_stop(delays[attempt], stop).await {
            return Stored::Stopped;
        }
        attempt += 1;
    }
}
