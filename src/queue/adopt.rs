//! Prepared frames: spool files written *outside* the queue (by `edgecap enqueue` into a
//! running daemon's inbox) and adopted into a commit group without copying their image.
//!
//! A prepared frame is a spool file of format version 2 whose metadata is a placeholder
//! chosen by its writer, padded with spaces to leave room ([`pad_meta`]): JSON allows
//! whitespace after the value, so the metadata's length stays fixed while its text
//! changes. Adopting one ([`Group::adopt`]) writes the frame's real header (its `seq`, the
//! header checksum) and metadata over the file's first `36 + meta_len` bytes, padded to
//! the same length; the group's commit then fsyncs the file and renames it into the spool
//! like any other. The image is neither read nor written: its checksum, computed by the
//! writer, is verified when the frame is uploaded, as every frame's is.
//!
//! Why: through the inbox a frame was written twice (by `enqueue` into the inbox, then by
//! the daemon into the spool), both fsync'd. Adopting halves the bytes written for a
//! hand-over (an SD card's time and wear) and takes the daemon's copy off the CPU.
//!
//! Crash safety is the group's protocol (parent docs): a crash before the rename leaves
//! the item in the inbox, never counted, holding a seq and maybe its real metadata
//! already; it is adopted again at the next start under a new seq (a stamped item's
//! metadata is kept as it is). After the rename and before the index's transaction, the
//! reconcile finds a valid spool file without an entry and indexes it. When the real
//! metadata does not fit the room, the daemon may not write the file (another user
//! wrote it and the group's write bit is missing), or the file is on another filesystem
//! ([`Queue::can_adopt_from`](super::Queue::can_adopt_from)), the caller copies the frame
//! instead ([`read_prepared`] and [`Group::add`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::AddError;
use super::files::{INDEX_MARGIN_BYTES, free_bytes};
use super::group::{Group, Staged};
use super::index::Entry;
use super::spool::{self, Header, SpoolError};
use crate::frame::FrameMeta;

/// The `seq` a prepared frame carries until a daemon adopts it (no frame has it).
pub const PREPARED_SEQ: u64 = 0;

/// `json` followed by spaces up to `room` bytes; `None` when it is longer.
pub fn pad_meta(json: &[u8], room: usize) -> Option<Vec<u8>> {
    let pad = room.checked_sub(json.len())?;
    let mut out = Vec::with_capacity(room);
    out.extend_from_slice(json);
    out.resize(json.len() + pad, b' ');
    Some(out)
}

/// Writes a prepared frame to `path` (which must not exist) without syncing it: the
/// `placeholder` JSON padded to `room` bytes as its metadata, then `image`. The file is
/// made readable and writable by its group (the daemon's, through the inbox's setgid
/// bit), whatever the umask, so the daemon can adopt it.
pub fn write_prepared_unsynced(
    path: &Path,
    placeholder: &[u8],
    room: usize,
    image: &[u8],
) -> Result<File, SpoolError> {
    let meta = pad_meta(placeholder, room).ok_or_else(|| SpoolError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "the placeholder metadata ({} bytes) is longer than its room ({room})",
            placeholder.len()
        ),
    })?;
    let (file, _) = spool::write_unsynced(path, PREPARED_SEQ, &meta, image)?;
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o660))
        .map_err(|source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(file)
}

/// A prepared frame opened (read and write) for adoption, its header checked.
pub struct Prepared {
    path: PathBuf,
    file: File,
    header: Header,
    meta: Vec<u8>,
}

impl Prepared {
    /// Opens the prepared frame at `path` for writing and checks its header: a file that
    /// is not one is `Corrupt`; one this process may not write is an `Io` error
    /// (`PermissionDenied`), for which [`read_prepared`] still serves.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let (header, meta) = read_checked(path, &mut file)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header,
            meta,
        })
    }

    /// The metadata it holds: the writer's placeholder, or the frame's own when a daemon
    /// stamped it and stopped before the rename. Padding trimmed.
    pub fn meta(&self) -> &[u8] {
        trim_padding(&self.meta)
    }
}

/// Reads a prepared frame without writing it: its metadata (padding trimmed) and its
/// image, both checksums verified. What a daemon copies when it cannot adopt the file.
pub fn read_prepared(path: &Path) -> Result<(Vec<u8>, Vec<u8>), SpoolError> {
    let mut file = File::open(path).map_err(|source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (header, mut meta) = read_checked(path, &mut file)?;
    let image = spool::read_image(path, &mut file, &header)?;
    let len = trim_padding(&meta).len();
    meta.truncate(len);
    Ok((meta, image))
}

/// Header (a version 2 one: it has a seq to write) and metadata bytes, checked.
fn read_checked(path: &Path, file: &mut File) -> Result<(Header, Vec<u8>), SpoolError> {
    let (head, head_len, meta) = spool::read_head_raw(path, file)?;
    if head_len != spool::HEADER_LEN {
        return Err(SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: "a version 1 spool file cannot be adopted".into(),
        });
    }
    let header = spool::check_head(path, &head[..head_len], &meta)?;
    Ok((header, meta))
}

fn trim_padding(meta: &[u8]) -> &[u8] {
    let end = meta
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &meta[..end]
}

/// Why [`Group::adopt`] did not take a prepared frame.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The frame's metadata is longer than the room the writer left: copy it instead.
    #[error("its metadata ({len} bytes) does not fit the room left for it ({room})")]
    NoRoom {
        /// The metadata's length.
        len: usize,
        /// The room.
        room: usize,
    },
    /// The budget refused it, or writing its header failed.
    #[error(transparent)]
    Add(#[from] AddError),
}

impl super::Queue {
    /// Whether prepared frames in `dir` can be adopted: `dir` is on the spool's
    /// filesystem (a rename from another fails, and would fail at every try).
    pub fn can_adopt_from(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(dir), std::fs::metadata(&self.spool)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        }
    }
}

impl Group<'_> {
    /// Adopts the prepared frame `item` as the group's next frame with `meta`: its header
    /// and metadata are written in place (unsynced), the image stays where it is. The
    /// group's commit syncs the file and renames it from the inbox into the spool; until
    /// then (and if the commit fails) the file stays in the inbox.
    pub fn adopt(&mut self, item: Prepared, meta: &FrameMeta) -> Result<u64, AdoptError> {
        let q = self.queue();
        let json = serde_json::to_vec(meta).map_err(|e| {
            AddError::Write(SpoolError::Corrupt {
                path: item.path.clone(),
                reason: format!("cannot encode metadata: {e}"),
            })
        })?;
        let room = item.header.meta_len as usize;
        let padded = pad_meta(&json, room).ok_or(AdoptError::NoRoom {
            len: json.len(),
            room,
        })?;
        let bytes = item.header.file_len();
        let seq = q.reserve(bytes, !self.is_from_files())?;
        // The image is on the disk already; the index still needs its margin.
        let full = free_bytes(&item.path).is_some_and(|free| free < INDEX_MARGIN_BYTES);
        let written = if full {
            Err(SpoolError::Io {
                path: item.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "the disk is nearly full (no room left for the index)",
                ),
            })
        } else {
            self.watch();
            stamp(&item, seq, &padded)
        };
        if let Err(e) = written {
            q.unreserve(bytes, false);
            return Err(AddError::Write(e).into());
        }
        self.push(Staged {
            seq,
            file: item.file,
            tmp: item.path,
            entry: Entry::new(bytes, meta.filename.clone(), meta.groups.clone()),
            adopted: true,
        });
        Ok(seq)
    }
}

/// Writes frame `seq`'s header and the padded metadata over the item's first bytes.
fn stamp(item: &Prepared, seq: u64, padded: &[u8]) -> Result<(), SpoolError> {
    let corrupt = |reason: &str| SpoolError::Corrupt {
        path: item.path.clone(),
        reason: reason.into(),
    };
    let (head, _) =
        spool::encode_head_for(seq, padded, item.header.image_len, item.header.image_crc)
            .ok_or_else(|| corrupt("metadata larger than 4 GiB"))?;
    item.file
        .write_all_at(&head, 0)
        .map_err(|source| SpoolError::Io {
            path: item.path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn padding_keeps_the_length_and_the_json() {
        let p = pad_meta(br#"{"a":1}"#, 20).unwrap();
        assert_eq!(p.len(), 20);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(trim_padding(&p), br#"{"a":1}"#);
        assert!(pad_meta(br#"{"a":1}"#, 6).is_none());
    }
}
