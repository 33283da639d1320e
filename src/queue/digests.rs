//! The content digests (SHA-256) of the files `edgecap enqueue` committed, so that the same
//! file enqueued again — queued or long delivered — is recognised and skipped:
//!
//! ```text
//! <dir>/enqueued   one lowercase hex SHA-256 per line, appended and fdatasync'd after
//!                  the frames' group was committed
//! ```
//!
//! Appended after the commit, never before: a crash in between costs a duplicate on the
//! next enqueue of that file, never a file skipped that was not queued. A torn last line is
//! ignored. The log grows by 65 bytes per enqueued file (6.5 MB for 100,000) and is read
//! whole by `enqueue` only; the daemon never reads it. SHA-256 (through `ring`, already in
//! the build for TLS) rather than the frames' CRC-32C: with tens of thousands of files a
//! 32-bit checksum would collide, and a collision here would skip a file.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use super::Queue;

/// A file's content digest.
pub type Digest = [u8; 32];

/// The SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A digest as 64 lowercase hex digits (as the log and inbox item names write it).
pub fn digest_hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest written as 64 hex digits; `None` for anything else.
pub fn digest_from_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The digests in the log of the queue in `dir` (read-only: what `enqueue` checks before
/// handing files to a running daemon).
pub fn read_digest_log(dir: &std::path::Path) -> HashSet<Digest> {
    std::fs::read_to_string(dir.join("enqueued"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| digest_from_hex(l.trim()))
        .collect()
}

impl Queue {
    fn digest_log(&self) -> PathBuf {
        self.dir.join("enqueued")
    }

    /// The digests of every file enqueued into this queue so far.
    pub fn enqueued_digests(&self) -> HashSet<Digest> {
        read_digest_log(&self.dir)
    }

    /// Notes `digests` as enqueued (their frames are committed), durably.
    pub fn note_enqueued(&self, digests: &[Digest]) -> std::io::Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(digests.len() * 65);
        for d in digests {
            text += &digest_hex(d);
            text.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.digest_log())?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest(b"frame");
        assert_eq!(digest_from_hex(&digest_hex(&d)), Some(d));
        assert_eq!(digest_from_hex("zz"), None);
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
