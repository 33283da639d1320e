//! Spool files: one file per frame, the format described in the parent module's docs.
//!
//! This file owns encoding and decoding the header, writing a frame to a temporary file,
//! and reading it back with its checksums verified. It knows nothing of the index.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::frame::FrameMeta;

/// First 8 bytes of every spool file.
pub const MAGIC: &[u8; 8] = b"EDGECAPF";
/// Current format version (2: the header carries the frame's sequence number).
pub const VERSION: u16 = 2;
/// Size of the fixed header of the current version.
pub const HEADER_LEN: usize = 36;
/// Size of the fixed header of version 1 (still read).
pub const HEADER_LEN_V1: usize = 28;
/// Largest metadata block accepted when reading (a corrupt length must not allocate GBs).
pub const MAX_META_LEN: u32 = 1024 * 1024;
/// Largest image accepted when reading.
pub const MAX_IMAGE_LEN: u32 = 512 * 1024 * 1024;

/// What is wrong with a spool file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An OS error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid spool file; it belongs in quarantine.
    #[error("{path}: corrupt spool file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
}

impl SpoolError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(super) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the metadata JSON.
    pub meta_len: u32,
    /// Length of the image.
    pub image_len: u32,
    /// CRC-32C of the image bytes (the value Nexus wants, before its i32 cast).
    pub image_crc: u32,
    /// The frame's sequence number (its identity; `None` in a version-1 file).
    pub seq: Option<u64>,
}

impl Header {
    /// Length of the fixed header.
    fn head_len(&self) -> usize {
        if self.seq.is_some() {
            HEADER_LEN
        } else {
            HEADER_LEN_V1
        }
    }

    /// Total file length this header implies.
    pub fn file_len(&self) -> u64 {
        self.head_len() as u64 + u64::from(self.meta_len) + u64::from(self.image_len)
    }
}

/// Encodes header + metadata (everything before the image) of frame `seq`.
pub fn encode_head(seq: u64, meta_json: &[u8], image: &[u8]) -> Option<(Vec<u8>, Header)> {
    let image_len = u32::try_from(image.len()).ok()?;
    encode_head_for(seq, meta_json, image_len, crc32c::crc32c(image))
}

/// [`encode_head`] for an image known by its length and checksum.
pub(super) fn encode_head_for(
    seq: u64,
    meta_json: &[u8],
    image_len: u32,
    image_crc: u32,
) -> Option<(Vec<u8>, Header)> {
    let meta_len = u32::try_from(meta_json.len()).ok()?;
    let mut head = Vec::with_capacity(HEADER_LEN + meta_json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&meta_len.to_le_bytes());
    head.extend_from_slice(&image_len.to_le_bytes());
    head.extend_from_slice(&image_crc.to_le_bytes());
    head.extend_from_slice(&seq.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&head), meta_json);
    head.extend_from_slice(&header_crc.to_le_bytes());
    head.extend_from_slice(meta_json);
    let header = Header {
        meta_len,
        image_len,
        image_crc,
        seq: Some(seq),
    };
    Some((head, header))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// The fixed header `head` (magic and version checked), its checksum verified over it and
/// the metadata bytes `meta`.
pub(super) fn check_head(path: &Path, head: &[u8], meta: &[u8]) -> Result<Header, SpoolError> {
    let crc_at = head.len() - 4;
    let h = Header {
        meta_len: le_u32(head, 12),
        image_len: le_u32(head, 16),
        image_crc: le_u32(head, 20),
        seq: (head.len() == HEADER_LEN).then(|| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&head[24..32]);
            u64::from_le_bytes(x)
        }),
    };
    let stored = le_u32(head, crc_at);
    let actual = crc32c::crc32c_append(crc32c::crc32c(&head[..crc_at]), meta);
    if stored != actual {
        return Err(SpoolError::corrupt(path, "header checksum mismatch"));
    }
    Ok(h)
}

/// Header and metadata read and checked (magic, version, lengths, header checksum), the
/// metadata decoded; `f` left at the image.
fn read_head(path: &Path, f: &mut File) -> Result<(Header, FrameMeta), SpoolError> {
    let (h, meta) = read_head_checked(path, f)?;
    let meta: FrameMeta = serde_json::from_slice(&meta)
        .map_err(|e| SpoolError::corrupt(path, format!("metadata is not valid JSON: {e}")))?;
    Ok((h, meta))
}

/// Header and metadata bytes read and checked like [`read_head`]'s, the metadata left
/// as bytes (not parsed); `f` left at the image.
fn read_head_checked(path: &Path, f: &mut File) -> Result<(Header, Vec<u8>), SpoolError> {
    let (head, head_len, meta) = read_head_raw(path, f)?;
    let h = check_head(path, &head[..head_len], &meta)?;
    Ok((h, meta))
}

/// The fixed header (and its length) and the metadata's bytes, with magic, version and
/// lengths (against the file's) checked but not the checksum.
pub(super) fn read_head_raw(
    path: &Path,
    f: &mut File,
) -> Result<([u8; HEADER_LEN], usize, Vec<u8>), SpoolError> {
    let len = f.metadata().map_err(|e| SpoolError::io(path, e))?.len();
    if len < HEADER_LEN_V1 as u64 {
        return Err(SpoolError::corrupt(
            path,
            format!("truncated: {len} bytes, shorter than the header"),
        ));
    }
    let mut head = [0u8; HEADER_LEN];
    f.read_exact(&mut head[..HEADER_LEN_V1])
        .map_err(|e| SpoolError::io(path, e))?;
    if &head[..8] != MAGIC {
        return Err(SpoolError::corrupt(path, "bad magic"));
    }
    let head_len = match u16::from_le_bytes([head[8], head[9]]) {
        1 => HEADER_LEN_V1,
        2 => HEADER_LEN,
        v => {
            return Err(SpoolError::corrupt(
                path,
                format!("unknown format version {v}"),
            ));
        }
    };
    if head_len > HEADER_LEN_V1 {
        if len < head_len as u64 {
            return Err(SpoolError::corrupt(
                path,
                format!("truncated: {len} bytes, shorter than the header"),
            ));
        }
        f.read_exact(&mut head[HEADER_LEN_V1..head_len])
            .map_err(|e| SpoolError::io(path, e))?;
    }
    let meta_len = le_u32(&head, 12);
    let image_len = le_u32(&head, 16);
    if meta_len > MAX_META_LEN || image_len > MAX_IMAGE_LEN {
        return Err(SpoolError::corrupt(path, "implausible lengths in header"));
    }
    let expect = head_len as u64 + u64::from(meta_len) + u64::from(image_len);
    if len != expect {
        return Err(SpoolError::corrupt(
            path,
            format!("length {len} bytes, header says {expect} (truncated or padded)"),
        ));
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta)
        .map_err(|e| SpoolError::io(path, e))?;
    Ok((head, head_len, meta))
}

/// Checks that the file of frame `seq` is that frame's (a valid file copied over another
/// one carries the other's sequence number).
fn check_identity(path: &Path, h: &Header, seq: u64) -> Result<(), SpoolError> {
    match h.seq {
        Some(s) if s != seq => Err(SpoolError::corrupt(
            path,
            format!("the file holds frame {s}, not frame {seq} (copied over another?)"),
        )),
        _ => Ok(()),
    }
}

/// [`read_meta`] of the file that must hold frame `seq`.
pub fn read_meta_of(path: &Path, seq: u64) -> Result<(Header, FrameMeta), SpoolError> {
    let (h, m) = read_meta(path)?;
    check_identity(path, &h, seq)?;
    Ok((h, m))
}

/// [`read_frame`] of the file that must hold frame `seq`.
pub fn read_frame_of(path: &Path, seq: u64) -> Result<(Header, FrameMeta, Vec<u8>), SpoolError> {
    let (h, m, image) = read_frame(path)?;
    check_identity(path, &h, seq)?;
    Ok((h, m, image))
}

/// Reads and checks header and metadata only (cheap: used when reconciling at start-up and
/// when building a batch). The image checksum is verified by [`read_frame`].
pub fn read_meta(path: &Path) -> Result<(Header, FrameMeta), SpoolError> {
    let mut f = File::open(path).map_err(|e| SpoolError::io(path, e))?;
    let (h, m) = read_head(path, &mut f)?;
    Ok((h, m))
}

/// Bytes per read when an image is streamed from its spool file: one buffer of this size
/// per upload, reused for every chunk, instead of a buffer per frame. 60 KiB: each chunk
/// is a hand-over between the reading thread and the connection, so larger chunks cost
/// fewer wake-ups (16 KiB chunks took 0.37–0.46 s of CPU to drain 1000 frames of 108 KB,
/// 60 KiB ones 0.29–0.30 s, 0.5 MiB more peak RSS), and below glibc's 64 KiB mmap
/// threshold a chunk's buffer comes from the heap, not a fresh mapping.
pub const STREAM_CHUNK: usize = 60 * 1024;

/// Opens frame `seq`'s file for streaming its image: header and metadata checked by
/// their checksum (the metadata is not parsed: the lease has parsed it), and the file left
/// positioned at the image's first byte. Returns the file and the header, whose
/// `image_crc` the reader checks as the bytes go (`upload/stream.rs`): the image is read
/// once, not once to check it and again to send it.
pub fn open_image_of(path: &Path, seq: u64) -> Result<(File, Header), SpoolError> {
    let mut f = File::open(path).map_err(|e| SpoolError::io(path, e))?;
    let (h, _) = read_head_checked(path, &mut f)?;
    check_identity(path, &h, seq)?;
    Ok((f, h))
}

/// Reads a whole frame and verifies both checksums.
pub fn read_frame(path: &Path) -> Result<(Header, FrameMeta, Vec<u8>), SpoolError> {
    let mut f = File::open(path).map_err(|e| SpoolError::io(path, e))?;
    let (h, m) = read_head(path, &mut f)?;
    let image = read_image(path, &mut f, &h)?;
    Ok((h, m, image))
}

/// The image that follows the metadata (`f` positioned at it), its checksum verified.
pub(super) fn read_image(path: &Path, f: &mut File, h: &Header) -> Result<Vec<u8>, SpoolError> {
    let mut image = vec![0u8; h.image_len as usize];
    f.read_exact(&mut image)
        .map_err(|e| SpoolError::io(path, e))?;
    if crc32c::crc32c(&image) != h.image_crc {
        return Err(SpoolError::corrupt(path, "image checksum mismatch"));
    }
    Ok(image)
}

/// Writes frame `seq` to `path` (which must not exist) without syncing it; returns the
/// open file for the caller to fsync, and the header written.
pub fn write_unsynced(
    path: &Path,
    seq: u64,
    meta_json: &[u8],
    image: &[u8],
) -> Result<(File, Header), SpoolError> {
    let (head, header) = encode_head(seq, meta_json, image)
        .ok_or_else(|| SpoolError::corrupt(path, "frame larger than 4 GiB"))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| SpoolError::io(path, e))?;
    let res = f.write_all(&head).and_then(|_| f.write_all(image));
    if let Err(e) = res {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(SpoolError::io(path, e));
    }
    Ok((f, header))
}

/// fsyncs a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
