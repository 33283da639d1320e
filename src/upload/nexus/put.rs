//! Storage uploads: one PUT per frame to the signed URL of its session, at most
//! `put_concurrency` at once (`futures`' `buffer_unordered`, so only that many PUTs and
//! images exist at a time), each with its own deadline and retries.

use std::sync::Arc;

use crate::upload::throttle::{self, Throttle};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::wire::UploadSpec;
use crate::upload::sink::{Frame, ImageError, Outcome};
use crate::upload::{StorageRefusal, sleep_or_stop, stopped, storage_refusal};

/// Result of one PUT.
pub(super) enum Put {
    Uploaded,
    Done(Outcome),
    /// Transient failure; `network` when the connection itself failed.
    Transient {
        reason: String,
        network: bool,
    },
    /// The daemon is stopping: the PUT was not made or not finished (storage did not
    /// take the file).
    Stopped,
}

/// The longest a PUT of `len` bytes may take: the stall timeout plus the time to send it
/// at 16 KiB/s (a poor LTE link), or at the bandwidth cap's share of `parallel` transfers
/// when that is slower. `read_timeout` alone does not bound a server that stops reading
/// the body.
fn capped_deadline(
    stall: Duration,
    len: u32,
    throttle: Option<&Arc<Throttle>>,
    parallel: usize,
) -> Duration {
    stall + throttle::transfer_time(throttle, u64::from(len), parallel, 16_384.0)
}

/// Sends one frame to its signed URL: exactly the returned method and headers, no
/// credentials. A 5xx, 408, 429 or network error is tried twice more (after 1 s, 2 s).
pub(super) async fn put_file(
    client: &reqwest::Client,
    frame: &Frame,
    spec: &UploadSpec,
    deadline: Duration,
    throttle: Option<&Arc<Throttle>>,
    stop: &watch::Receiver<bool>,
) -> Put {
    let seq = frame.seq;
    let Ok(method) = Method::from_bytes(spec.method.as_bytes()) else {
        return Put::Done(Outcome::Rejected(format!(
            "the server asked for an invalid HTTP method {:?}",
            spec.method
        )));
    };
    let Ok(url) = Url::parse(&spec.url) else {
        return Put::Transient {
            reason: "the server returned an invalid upload URL".into(),
            network: false,
        };
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
            }
            _ => {
                return Put::Transient {
                    reason: format!("the server returned an invalid upload header {k:?}"),
                    network: false,
                };
            }
        }
    }
    let delays = [Duration::from_secs(1), Duration::from_secs(2)];
    let mut attempt = 0;
    loop {
        // Opened only now, and streamed from the spool file: an upload holds one chunk.
        let (body, len, damage) = match crate::upload::stream::body(frame, throttle).await {
            Ok(b) => b,
            Err(ImageError::Transient(reason)) => {
                return Put::Transient {
                    reason,
                    network: false,
                };
            }
            Err(ImageError::Gone(e)) => {
                warn!(seq, error = %e, "frame cannot be uploaded");
                return Put::Done(Outcome::Gone);
            }
        };
        // A streamed body has no length of its own; storage wants one.
        let req = client
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .timeout(deadline)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        let res = tokio::select! {
            r = req.send() => r,
            _ = stopped(stop) => return Put::Stopped,
        };
        // The image turned out damaged as it was read: the body failed before its last
        // byte and the file is quarantined; the frame is gone, not to be sent again.
        if let Some(e) = damage.found() {
            warn!(seq, error = %e, "frame cannot be uploaded");
            return Put::Done(Outcome::Gone);
        }
        let (retryable, reason, network) = match res {
            Ok(r) if r.status().as_u16() < 400 => return Put::Uploaded,
            Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                return Put::Transient {
                    reason: "storage answered 403 (signed URL expired or refused); a new session will be used".into(),
                    network: false,
                };
            }
            Ok(r) => {
                let StorageRefusal {
                    status,
                    text,
                    reason,
                    passing,
                } = storage_refusal(r).await;
                if passing {
                    (true, reason, false)
                } else if status == StatusCode::BAD_REQUEST && is_digest_mismatch(&text) {
                    // The bytes were damaged on the way (the spool file's own checksum
                    // held when it was read): a failed attempt, sent again from the spool.
                    return Put::Done(Outcome::Failed(format!(
                        "{reason} (the body did not match its checksum on arrival; it will be sent again)"
                    )));
                } else {
                    return Put::Done(Outcome::Rejected(reason));
                }
            }
            Err(e) => (true, format!("upload failed: {}", e.without_url()), true),
        };
        if !retryable || attempt >= delays.len() {
            return Put::Transient { reason, network };
        }
        debug!(seq, attempt, reason, "retrying a PUT");
        if sleep_or_stop(delays[attempt], stop).await {
            return Put::Stopped;
        }
        attempt += 1;
    }
}

/// Whether a storage error body reports a checksum mismatch (GCS `BadDigest`, S3-style
/// `InvalidDigest`/`XAmzContentSHA256Mismatch`): damage in transit, not a refusal of the frame.
fn is_digest_mismatch(body: &str) -> bool {
    ["BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"]
        .iter()
        .any(|code| body.contains(code))
}

/// PUTs every `(frame, spec)`, `concurrency` at a time; yields `(seq, filename, result)`
/// as each finishes.
pub(super) fn put_all<'a>(
    client: &'a reqwest::Client,
    jobs: Vec<(Frame, UploadSpec)>,
    stall: Duration,
    concurrency: usize,
    throttle: Option<&'a Arc<Throttle>>,
    stop: &'a watch::Receiver<bool>,
) -> impl Stream<Item = (u64, String, Put)> + 'a {
    stream::iter(jobs)
        .map(move |(frame, spec)| async move {
            let deadline = capped_deadline(stall, frame.image_len, throttle, concurrency);
            let put = put_file(client, &frame, &spec, deadline, throttle, stop).await;
            (frame.seq, frame.meta.filename, put)
        })
        .buffer_unordered(concurrency.max(1))
}
