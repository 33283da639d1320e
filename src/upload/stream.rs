//! A stored image as a request body: read from its spool file in
//! [`STREAM_CHUNK`] pieces as the connection takes them, so an upload holds a few chunks in
//! memory whatever the frame's size, and no frame-sized buffer (a fresh mapping each, past
//! glibc's mmap threshold) is allocated per frame.
//!
//! One blocking task per body reads the file (the same cost as reading the frame whole,
//! which it replaces) and hands chunks over a channel of [`IN_FLIGHT`]: a slow link stops
//! the reader instead of buffering the file. The task first verifies the image's checksum
//! in one pass ([`crate::queue::Queue::open_image`]), so a damaged file is quarantined
//! before a byte goes, and checks it again as the bytes go: a mismatch at the end fails
//! the body (the request fails, the frame stays queued, and the next open quarantines it).
//! Dropping the body (a stop, a timeout) ends the task at its next chunk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::sink::{Frame, Image, ImageError, ImageStore, image_error};
use super::throttle::Throttle;
use crate::queue::STREAM_CHUNK;

/// `frame`'s image as a request body and its length: bytes in memory as they are; a
/// stored image streamed from its spool file ([`image_stream`]). Through `throttle` when a
/// cap is set. The caller sets `Content-Length`.
pub async fn body(
    frame: &Frame,
    throttle: Option<&Arc<Throttle>>,
) -> Result<(reqwest::Body, u64), ImageError> {
    match &frame.image {
        Image::Bytes(b) => Ok((super::throttle::body(throttle, b.clone()), b.len() as u64)),
        Image::Stored(store) => {
            let (stream, len) = image_stream(
                Arc::clone(store),
                frame.seq,
                frame.image_crc,
                throttle.filter(|t| t.rate().is_some()).cloned(),
            )
            .await?;
            Ok((reqwest::Body::wrap_stream(stream), len))
        }
    }
}

/// Chunks read ahead of the connection.
pub const IN_FLIGHT: usize = 2;

type Chunk = Result<Bytes, std::io::Error>;

/// Frame `seq`'s image from `store` as a body stream checked against `crc` (CRC-32C),
/// and its length; paced by `throttle` when given. Fails (before any byte) when the file cannot be opened or is damaged.
pub async fn image_stream(
    store: Arc<dyn ImageStore>,
    seq: u64,
    crc: u32,
    throttle: Option<Arc<Throttle>>,
) -> Result<(impl Stream<Item = Chunk> + Send + 'static, u64), ImageError> {
    let (opened_tx, opened_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let (file, len) = match store.open_image(seq) {
            Ok(x) => x,
            Err(e) => {
                let _ = opened_tx.send(Err(image_error(e)));
                return;
            }
        };
        let _ = opened_tx.send(Ok(len));
        pump(file, len, crc, &tx);
    });
    let len = opened_rx
        .await
        .map_err(|_| ImageError::Transient("the read task ended early".into()))??;
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let paced = chunks.then(move |c| {
        let t = throttle.clone();
        async move {
            if let (Some(t), Ok(b)) = (&t, &c) {
                t.take(b.len()).await;
            }
            c
        }
    });
    Ok((paced, u64::from(len)))
}

/// Reads `len` bytes from `file` (positioned at the image by `open_image`) in chunks into
/// `tx`, one buffer reused, and fails the stream at the end unless they match `want`.
fn pump(mut file: std::fs::File, len: u32, want: u32, tx: &mpsc::Sender<Chunk>) {
    use std::io::Read;
    let mut left = len as usize;
    let mut crc = 0u32;
    let mut buf = BytesMut::with_capacity(STREAM_CHUNK);
    while left > 0 {
        let n = left.min(STREAM_CHUNK);
        // Takes the allocation back once the connection has written the chunk before.
        buf.reserve(n);
        buf.resize(n, 0);
        if let Err(e) = file.read_exact(&mut buf[..n]) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        left -= n;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        if left == 0 && crc != want {
            let e = std::io::Error::other("image checksum mismatch while streaming");
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if tx.blocking_send(Ok(buf.split_to(n).freeze())).is_err() {
            return; // the body was dropped
        }
    }
}
