//! The contract between the uploader and a platform: a batch of [`Frame`]s in, one
//! [`Outcome`] per frame and a [`Verdict`] on the link out ([`Report`]).
//!
//! A sink never touches the queue. It receives, per frame, the metadata and an [`Image`]:
//! the bytes themselves, or a handle that reads them from the queue's spool file (checksum
//! verified) when the sink is ready to send them, so a 5000-frame batch never holds 5000
//! images in memory.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::frame::FrameMeta;
pub use crate::queue::SessionRef;
use crate::queue::{Leased, Queue, ReadError};

/// What became of one frame of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The platform has it: delete it from the queue.
    Accepted,
    /// The platform has it, under this id (its receipt names it).
    AcceptedAs(String),
    /// Not delivered for a reason outside the frame (network, server, expired URL): try
    /// again later; does not count as an attempt.
    Retry(String),
    /// The platform failed this frame (e.g. its processing errored): counts an attempt.
    Failed(String),
    /// Refused for good (e.g. a 400 on its upload): mark dead now.
    Rejected(String),
    /// The frame could not be read (quarantined or missing); the queue already dealt with it.
    Gone,
    /// The platform has the image but did not take the metadata (yet): only the metadata is
    /// sent again, later; does not count as an attempt.
    MetadataPending(String),
    /// Went into a session but its bytes never reached storage (the daemon stopped before
    /// its upload finished): back to pending, and its next session is not counted as a
    /// re-send.
    NotSent(String),
    /// Sent into a recorded session whose end is not known (the daemon is stopping): the
    /// session stays noted, and the next start asks the platform before sending it again.
    Unknown(String),
    /// Sent into a recorded session, and the platform could not be asked whether it took
    /// the frame (its operation did not end cleanly, then the lookup failed: the link
    /// went down, the server errs): the session stays noted, and the frame is asked about
    /// before it is sent again. Nothing was interrupted, so unlike [`Outcome::Unknown`] a
    /// re-send counts as one after an error.
    Unconfirmed(String),
}

impl Outcome {
    /// Whether the platform has the frame (image and metadata).
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Accepted | Self::AcceptedAs(_))
    }
}

/// The sink's verdict on the link after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Working.
    Ok,
    /// The platform cannot be reached: go offline and probe.
    Offline(String),
    /// The platform answered with a transient error: back off (at least `retry_after`).
    Backoff {
        /// Why.
        reason: String,
        /// The server's `Retry-After`, or a minimum the sink asks for.
        retry_after: Option<Duration>,
    },
    /// The platform's shared session limit was reached (429 on creating a session): the
    /// sink's pacer has slowed down, and the batch waits for [`Sink::next_session_in`].
    /// Not a failure of the link: no backoff, and the frames' attempts are not counted.
    RateLimited(String),
    /// The platform refused the batch as a whole (400): retry with half the batch.
    Split(String),
    /// Configuration is wrong (401/403/404 on the API): an operator must act. Backs off to
    /// the maximum delay and keeps trying.
    OperatorMustAct(String),
}

/// A sink's answer for one batch.
pub struct Report {
    /// One outcome per frame decided now. Frames neither listed here nor in `pending`
    /// are put back as `Retry`.
    pub outcomes: Vec<(u64, Outcome)>,
    /// The link verdict.
    pub verdict: Verdict,
    /// Frames whose fate the platform decides later (a Nexus operation), followed in the
    /// background while the next batch goes out.
    pub pending: Option<Pending>,
}

impl Report {
    /// Every frame of `batch` back to the queue for `why`, with `verdict`.
    pub fn retry_all(batch: &[Frame], why: &str, verdict: Verdict) -> Self {
        Self {
            outcomes: batch
                .iter()
                .map(|f| (f.seq, Outcome::Retry(why.to_string())))
                .collect(),
            verdict,
            pending: None,
        }
    }
}

/// Frames waiting on the platform, and the future that decides them.
pub struct Pending {
    /// The frames it decides.
    pub seqs: Vec<u64>,
    /// Resolves to one outcome per frame; must resolve promptly once `stop` is set.
    pub fut: Decision,
}

/// A future resolving to one outcome per frame.
pub type Decision = std::pin::Pin<Box<dyn Future<Output = Vec<(u64, Outcome)>> + Send>>;

/// A platform the uploader can deliver to.
pub trait Sink: Send + Sync + 'static {
    /// Delivers one batch (all frames share their groups). Must return promptly once
    /// `stop` is set.
    fn send(
        &self,
        batch: Vec<Frame>,
        stop: &watch::Receiver<bool>,
    ) -> impl Future<Output = Report> + Send;

    /// Whether the platform answers at all (used while offline).
    fn probe(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Whether the configured destination exists and accepts edgecap's credentials (one
    /// cheap call, before the first batch and after a refusal). `Ok` by default.
    fn check(&self) -> impl Future<Output = Verdict> + Send {
        async { Verdict::Ok }
    }

    /// How long until the sink may start its next batch (its platform's session limit);
    /// zero when it may now, or has no limit.
    fn next_session_in(&self) -> Duration {
        Duration::ZERO
    }

    /// Batches the sink may still start in its rate window (None: no limit).
    fn sessions_left(&self) -> Option<usize> {
        None
    }

    /// The session rate the sink allows itself now (sessions per window, learnt from the
    /// platform's 429s) and the 429s it got since start (None: no session limit).
    fn session_pace(&self) -> Option<(f64, u64)> {
        None
    }

    /// After a restart: `frames` went into `session` and their fate is unknown. Ask the
    /// platform which of them it has (`Accepted`, or `MetadataPending` when only the
    /// metadata is still to be attached) and which must be sent again (`Retry`); close
    /// the session if it is still open. By default every frame is sent again.
    fn recover(
        &self,
        session: SessionRef,
        frames: Vec<Frame>,
    ) -> impl Future<Output = Report> + Send {
        let _ = session;
        async move { Report::retry_all(&frames, "no session to recover", Verdict::Ok) }
    }
}

/// Where a sink notes, durably and before it sends any bytes, the session a batch went
/// into, so that a restart can ask the platform about it ([`Sink::recover`]).
pub trait SessionJournal: Send + Sync + 'static {
    /// `seqs` went into `session`. Blocks until it is on disk.
    fn session_started(&self, seqs: &[u64], session: &SessionRef);

    /// Each frame went into a session of its own (a Picsellia object name), all noted in
    /// one durable write. Blocks until it is on disk.
    fn sessions_started(&self, frames: &[(u64, SessionRef)]);
}

impl SessionJournal for Queue {
    fn session_started(&self, seqs: &[u64], session: &SessionRef) {
        self.record_session(seqs, session);
    }

    fn sessions_started(&self, frames: &[(u64, SessionRef)]) {
        self.record_sessions(frames);
    }
}

/// Reads a queued frame's image with its checksum verified.
pub trait ImageStore: Send + Sync + 'static {
    /// The image of frame `seq`.
    fn read_image(&self, seq: u64) -> Result<Vec<u8>, ReadError>;

    /// Opens frame `seq`'s image for streaming: the file positioned at its first byte;
    /// the file and the image's length. The image's checksum is checked by the reader as
    /// the bytes go.
    fn open_image(&self, seq: u64) -> Result<(std::fs::File, u32), ReadError>;

    /// Frame `seq`'s image did not match its checksum while it was streamed: the store
    /// sets it aside (counted and logged) and says what became of it.
    fn image_damaged(&self, seq: u64, reason: &str) -> ReadError;
}

impl ImageStore for Queue {
    fn read_image(&self, seq: u64) -> Result<Vec<u8>, ReadError> {
        Queue::read_image(self, seq)
    }

    fn open_image(&self, seq: u64) -> Result<(std::fs::File, u32), ReadError> {
        Queue::open_image(self, seq)
    }

    fn image_damaged(&self, seq: u64, reason: &str) -> ReadError {
        Queue::image_damaged(self, seq, reason)
    }
}

/// Where a frame's image comes from.
#[derive(Clone)]
pub enum Image {
    /// In memory.
    Bytes(Bytes),
    /// In the queue, read when it is sent.
    Stored(Arc<dyn ImageStore>),
}

/// Why an image could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A passing failure (I/O): the frame stays queued.
    #[error("{0}")]
    Transient(String),
    /// The frame is gone (corrupt and quarantined, or its file missing); the queue has
    /// already counted and logged it.
    #[error("{0}")]
    Gone(String),
}

/// One frame handed to a sink.
#[derive(Clone)]
pub struct Frame {
    /// Queue sequence number (the key of its outcome).
    pub seq: u64,
    /// Its name, groups and metadata.
    pub meta: FrameMeta,
    /// Image size in bytes.
    pub image_len: u32,
    /// CRC-32C of the image.
    pub image_crc: u32,
    /// The image.
    pub image: Image,
    /// The platform already has the image: only the metadata is to be sent.
    pub image_delivered: bool,
    /// The session (or object name) the frame last went into when its fate was left
    /// unknown (a crash, a stop, an outage that kept the platform from being asked): the
    /// sink asks the platform about it before it sends it again.
    pub previous: Option<SessionRef>,
}

impl Frame {
    /// A leased frame whose image stays in `store` until it is sent.
    pub fn stored(l: Leased, store: Arc<dyn ImageStore>) -> Self {
        Self {
            seq: l.seq,
            meta: l.meta,
            image_len: l.image_len,
            image_crc: l.image_crc,
            image: Image::Stored(store),
            image_delivered: l.image_delivered,
            previous: l.previous,
        }
    }

    /// A frame whose image is in memory.
    pub fn in_memory(seq: u64, meta: FrameMeta, image: Bytes) -> Self {
        Self {
            seq,
            meta,
            image_len: u32::try_from(image.len()).unwrap_or(u32::MAX),
            image_crc: crc32c::crc32c(&image),
            image: Image::Bytes(image),
            image_delivered: false,
            previous: None,
        }
    }

    /// The image bytes, read from the queue if need be (on a blocking thread).
    pub async fn image(&self) -> Result<Bytes, ImageError> {
        match &self.image {
            Image::Bytes(b) => Ok(b.clone()),
            Image::Stored(store) => {
                let (store, seq) = (Arc::clone(store), self.seq);
                tokio::task::spawn_blocking(move || read_stored(store.as_ref(), seq))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ImageError::Transient(format!("read task failed: {e}")))
                    })
            }
        }
    }

    /// The image bytes, for callers already on a blocking thread.
    pub fn image_blocking(&self) -> Result<Bytes, ImageError> {
        match &self.image {
            Image::Bytes(b) => Ok(b.clone()),
            Image::Stored(store) => read_stored(store.as_ref(), self.seq),
        }
    }
}

fn read_stored(store: &dyn ImageStore, seq: u64) -> Result<Bytes, ImageError> {
    store.read_image(seq).map(Bytes::from).map_err(image_error)
}

pub(crate) fn image_error(e: ReadError) -> ImageError {
    match e {
        ReadError::Io { source, .. } => ImageError::Transient(source.to_string()),
        e => ImageError::Gone(e.to_string()),
    }
}
