//! The inbox: how frames reach a running daemon from outside it — `edgecap enqueue` while
//! the daemon holds the queue, or any program on the device (a detector, a script).
//!
//! ```text
//! <queue>/inbox/                 created by the daemon, mode 2770 (its group may write)
//!   <name>.jpg | .jpeg           an image to queue; it appears by rename(2), so it is whole
//!   <name>.jpg.json              optional sidecar (Sidecar), renamed into place BEFORE the image
//!   <name>.<blake3>[.again].frame  a prepared frame (`edgecap enqueue`): a spool file whose
//!                                metadata the daemon writes in place (queue/adopt.rs)
//!   .<anything>                  ignored: files still being written
//! ```
//!
//! The daemon's taker ([`Taker`], `taker.rs`) lists the folder when an item is renamed
//! into it (inotify, `arrivals.rs`), every [`POLL`] in any case, and at once again after a
//! round that took something; names each item's frame like a captured one
//! (camera from the sidecar, else the first camera; a run id of its own), commits up to
//! [`GROUP`] of them in one group (one fsync round), notes their digests, and only then
//! deletes the images it copied. A crash between the commit and the delete leaves an item
//! that is already queued: its digest is then known and the item is deleted, not queued
//! again (an item sent with `allow_duplicates` is queued again: the one case that can
//! repeat a frame). An item that cannot be queued (not a JPEG, a sidecar that does not
//! parse, an unknown camera) is moved to `<queue>/quarantine/` with a warning; a full
//! queue leaves items where they are until there is room. Nothing is deleted unqueued.
//!
//! Why a folder and not a socket: a writer needs nothing but `rename(2)` (any language, a
//! shell's `mv`), items wait safely while the daemon restarts or is stopped (the next
//! start takes them), and the kernel's rename is the whole protocol — there is no
//! connection state to get wrong. The cost is latency of up to [`POLL`], which a data
//! collector does not notice.
//!
//! `edgecap enqueue` ([`hand_over`], `hand_over.rs`) writes *prepared frames* rather than
//! plain images: spool files already, with the image's checksum, its digest in the name,
//! and a placeholder ([`Placeholder`]: the sidecar's fields and the image's size) padded
//! to leave room for the real metadata. The daemon writes the frame's header and metadata
//! over the placeholder and renames the file into the spool: the image is written once,
//! not twice (`queue/adopt.rs` says why and how it stays crash-safe). It writes them as
//! hidden files, makes them durable with one `syncfs(2)` per group (in a second thread,
//! while the next group is written), renames them in and syncs the folder, so the command
//! returns only when the hand-over survives a power cut.
//! A daemon that cannot adopt a prepared frame (its metadata outgrew the room, or the
//! file is not writable for it) copies it like a plain image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::MetaValue;
use crate::queue::{Digest, digest_from_hex, digest_hex};

mod arrivals;
mod hand_over;
mod taker;

pub use hand_over::{HandOverError, HandedOver, hand_over};
pub use taker::Taker;

/// The inbox folder's name inside the queue directory.
pub const INBOX: &str = "inbox";
/// How often the taker looks at an empty inbox.
pub const POLL: Duration = Duration::from_millis(200);
/// Items per commit group.
pub const GROUP: usize = 256;
/// How long a full queue (or a failing disk) holds the taker back.
const HOLD_BACK: Duration = Duration::from_secs(5);
/// The suffix of a prepared frame's name.
const PREPARED: &str = ".frame";
/// Before [`PREPARED`]: the item is queued even when its content was queued before.
const AGAIN: &str = ".again";

/// The inbox folder of the queue in `queue_dir`.
pub fn inbox_dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join(INBOX)
}

/// What may come with an image (`<image>.json`); every field optional.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// The configured camera the frame counts as (default: the first camera).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// Custom metadata added to the camera's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, MetaValue>,
    /// Capture time, Unix milliseconds (default: the image file's modification time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_ms: Option<i64>,
    /// Where the image came from (kept as `source_file` in the metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    /// Queue the image even when the same content was enqueued before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_duplicates: bool,
}

fn is_image(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
}

fn sidecar_of(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".json");
    PathBuf::from(s)
}

/// What a prepared frame holds as metadata until the daemon names it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    /// What a sidecar would say (the camera, the capture time, the source file).
    pub sidecar: Sidecar,
    /// The image's width in pixels.
    pub width: u32,
    /// The image's height in pixels.
    pub height: u32,
}

/// An entry of the inbox the taker takes.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// A JPEG image (with its sidecar, if any).
    Image,
    /// A prepared frame: its content's digest when the name gives one, and whether it is
    /// queued even when that content was queued before.
    Prepared { digest: Option<Digest>, again: bool },
}

/// What the entry called `name` is, if the taker takes it.
fn item(name: &str) -> Option<Item> {
    if name.starts_with('.') {
        return None;
    }
    if is_image(name) {
        return Some(Item::Image);
    }
    let stem = name.strip_suffix(PREPARED)?;
    let (stem, again) = match stem.strip_suffix(AGAIN) {
        Some(s) => (s, true),
        None => (stem, false),
    };
    let digest = stem.rsplit_once('.').and_then(|(_, d)| digest_from_hex(d));
    Some(Item::Prepared { digest, again })
}

/// The name of a prepared frame: `<stem>.<blake3 hex>[.again].frame`.
fn prepared_name(stem: &str, digest: &Digest, again: bool) -> String {
    format!(
        "{stem}.{}{}{PREPARED}",
        digest_hex(digest),
        if again { AGAIN } else { "" }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn item_names_say_what_the_taker_does_with_them() {
        let d = crate::queue::digest(b"jpeg");
        assert_eq!(item("a.jpg"), Some(Item::Image));
        assert_eq!(item("a.JPEG"), Some(Item::Image));
        assert_eq!(item(".a.jpg"), None);
        assert_eq!(item("a.jpg.json"), None);
        assert_eq!(item("a.png"), None);
        assert_eq!(
            item(&prepared_name("enqueue-1", &d, false)),
            Some(Item::Prepared {
                digest: Some(d),
                again: false
            })
        );
        assert_eq!(
            item(&prepared_name("enqueue-1", &d, true)),
            Some(Item::Prepared {
                digest: Some(d),
                again: true
            })
        );
        assert_eq!(
            item("from-a-script.frame"),
            Some(Item::Prepared {
                digest: None,
                again: false
            })
        );
        assert_eq!(item(&format!(".{}", prepared_name("x", &d, false))), None);
    }
}
