//! A stored image as a request body: read from its spool file in
//! [`STREAM_CHUNK`] pieces as the connection takes them, so an upload holds a few chunks in
//! memory whatever the frame's size, and no frame-sized buffer (a fresh mapping each, past
//! glibc's mmap threshold) is allocated per frame.
//!
//! One blocking task per body reads the file and hands chunks over a channel of
//! [`IN_FLIGHT`]: a slow link stops the reader instead of buffering the file. The image is
//! read once: its checksum (CRC-32C, from the spool header) is computed as the chunks go,
//! and the last chunk is held back until it matches. A damaged image therefore never
//! reaches storage complete: the body fails before its last byte (the request fails), the
//! task has the queue quarantine the file (counted and logged, as when a read finds the
//! damage), and [`Damage`] tells the sender the frame is gone, so it neither retries nor
//! releases it. Until 2026-11-27 the task read the whole image once more before the
//! first byte went, to find the damage earlier; the same guarantee for a tenth less of a
//! drain's CPU (BENCHMARKS.md). Dropping the body (a stop, a timeout) ends the task at its
//! next chunk.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::sink::{Frame, Image, ImageError, ImageStore, image_error};
use super::throttle::Throttle;
use crate::queue::STREAM_CHUNK;

/// What the reading task found wrong with an image it streamed: set, before the stream
/// fails, when the image did not match its checksum (the frame has been quarantined by
/// then), so the sender tells a damaged file from a failed connection.
#[derive(Clone, Debug, Default)]
pub struct Damage(Arc<OnceLock<String>>);

impl Damage {
    /// What was found, if the image turned out damaged.
    pub fn found(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// `frame`'s image as a request body, its length, and where a damaged image is reported:
/// bytes in memory as they are; a stored image streamed from its spool file
/// ([`image_stream`]). Through `throttle` when a cap is set. The caller sets
/// `Content-Length`.
pub async fn body(
    frame: &Frame,
    throttle: Option<&Arc<Throttle>>,
) -> Result<(reqwest::Body, u64, Damage), ImageError> {
    match &frame.image {
        Image::Bytes(b) => Ok((
            super::throttle::body(throttle, b.clone()),
            b.len() as u64,
            Damage::default(),
        )),
        Image::Stored(store) => {
            let (stream, len, damage) = image_stream(
                Arc::clone(store),
                frame.seq,
                frame.image_crc,
                throttle.filter(|t| t.rate().is_some()).cloned(),
            )
            .await?;
            Ok((reqwest::Body::wrap_stream(stream), len, damage))
        }
    }
}

/// Chunks read ahead of the connection.
pub const IN_FLIGHT: usize = 2;

type Chunk = Result<Bytes, std::io::Error>;

/// Frame `seq`'s image from `store` as a body stream checked against `crc` (CRC-32C),
/// its length, and its [`Damage`]; paced by `throttle` when given. Fails (before any byte)
/// when the file cannot be opened or its header is damaged; a damaged image fails the
/// stream before its last chunk.
pub async fn image_stream(
    store: Arc<dyn ImageStore>,
    seq: u64,
    crc: u32,
    throttle: Option<Arc<Throttle>>,
) -> Result<(impl Stream<Item = Chunk> + Send + 'static, u64, Damage), ImageError> {
    let (opened_tx, opened_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let damage = Damage::default();
    let found = damage.clone();
    tokio::task::spawn_blocking(move || {
        let (file, len) = match store.open_image(seq) {
            Ok(x) => x,
            Err(e) => {
                let _ = opened_tx.send(Err(image_error(e)));
                return;
            }
        };
        let _ = opened_tx.send(Ok(len));
        if let Some(reason) = pump(file, len, crc, &tx) {
            // Quarantined and counted first, then the body fails: by the time the
            // request has failed, `found` says why.
            let gone = store.image_damaged(seq, reason);
            let _ = found.0.set(gone.to_string());
            let _ = tx.blocking_send(Err(std::io::Error::other(reason)));
        }
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
    Ok((paced, u64::from(len), damage))
}

/// Reads `len` bytes from `file` (positioned at the image by `open_image`) in chunks into
/// `tx`, one buffer reused. The last chunk goes only if the image matches `want`; when it
/// does not, nothing more is sent and the mismatch is returned for the caller to report.
fn pump(
    mut file: std::fs::File,
    len: u32,
    want: u32,
    tx: &mpsc::Sender<Chunk>,
) -> Option<&'static str> {
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
            return None;
        }
        left -= n;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        if left == 0 && crc != want {
            return Some("image checksum mismatch");
        }
        if tx.blocking_send(Ok(buf.split_to(n).freeze())).is_err() {
            return None; // the body was dropped
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::ReadError;
    use std::io::Write;
    use std::sync::Mutex;

    /// An image file on disk, opened at its first byte; records the damage reports.
    struct OneFile {
        path: std::path::PathBuf,
        damaged: Mutex<Vec<(u64, String)>>,
    }

    impl ImageStore for OneFile {
        fn read_image(&self, _: u64) -> Result<Vec<u8>, ReadError> {
            unreachable!("streaming never reads a whole image")
        }
        fn open_image(&self, _: u64) -> Result<(std::fs::File, u32), ReadError> {
            let f = std::fs::File::open(&self.path).unwrap();
            let len = f.metadata().unwrap().len() as u32;
            Ok((f, len))
        }
        fn image_damaged(&self, seq: u64, reason: &str) -> ReadError {
            self.damaged.lock().unwrap().push((seq, reason.to_string()));
            ReadError::Quarantined {
                seq,
                reason: reason.to_string(),
            }
        }
    }

    /// Streams a 3.5-chunk image checked against `crc`: the chunks that went, the error
    /// the stream ended with, the damage found and the reports the store got.
    async fn stream_with(
        crc_of: impl Fn(&[u8]) -> u32,
    ) -> (
        Vec<u8>,
        Option<String>,
        Option<String>,
        Vec<(u64, String)>,
        Vec<u8>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let image: Vec<u8> = (0..STREAM_CHUNK * 7 / 2).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&image)
            .unwrap();
        let store = Arc::new(OneFile {
            path,
            damaged: Mutex::new(Vec::new()),
        });
        let (stream, len, damage) = image_stream(store.clone(), 7, crc_of(&image), None)
            .await
            .unwrap();
        assert_eq!(len, image.len() as u64);
        let mut got = Vec::new();
        let mut error = None;
        let mut stream = std::pin::pin!(stream);
        while let Some(c) = stream.next().await {
            match c {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let found = damage.found().map(str::to_string);
        let reports = store.damaged.lock().unwrap().clone();
        (got, error, found, reports, image)
    }

    #[tokio::test]
    async fn a_sound_image_goes_whole_and_reports_nothing() {
        let (got, error, found, reports, image) = stream_with(crc32c::crc32c).await;
        assert_eq!(got, image);
        assert_eq!(error, None);
        assert_eq!(found, None);
        assert!(reports.is_empty(), "{reports:?}");
    }

    #[tokio::test]
    async fn a_damaged_image_never_goes_whole_and_is_reported_once_before_the_body_fails() {
        let (got, error, found, reports, image) = stream_with(|b| crc32c::crc32c(b) ^ 1).await;
        // Everything but the last chunk went; the last was held back.
        assert_eq!(got.len(), STREAM_CHUNK * 3, "{} bytes went", got.len());
        assert_eq!(got, image[..STREAM_CHUNK * 3]);
        assert_eq!(error.as_deref(), Some("image checksum mismatch"));
        assert_eq!(reports, vec![(7, "image checksum mismatch".to_string())]);
        let found = found.expect("the damage is known once the body has failed");
        assert!(found.contains("quarantine"), "{found}");
    }
}
