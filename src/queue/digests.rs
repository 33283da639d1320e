//! The content digests of the files `edgecap enqueue` (and the inbox) committed, so that
//! the same file enqueued again — queued or long delivered — is recognised and skipped:
//!
//! ```text
//! <dir>/enqueued   one line per enqueued file, appended and fdatasync'd after the
//!                  frames' group was committed:
//!                    b3:<64 hex>   the BLAKE3 of its bytes (this version)
//!                    <64 hex>      the SHA-256 of its bytes (versions before it)
//! ```
//!
//! Appended after the commit, never before: a crash in between costs a duplicate on the
//! next enqueue of that file, never a file skipped that was not queued. A torn last line is
//! ignored. The log grows by 68 bytes per enqueued file (6.8 MB for 100,000) and is read
//! whole by `enqueue` and by the daemon's inbox while it has items.
//!
//! Why BLAKE3 and not the CRC-32C the frames carry: with tens of thousands of files a
//! 32-bit checksum would collide, and a collision here would skip a file. Why BLAKE3 and
//! not SHA-256 (the digest of earlier versions): every enqueued byte goes through it, and
//! a Raspberry Pi 4 has no SHA instructions. Measured on 1000 files of 108 KB on an x86
//! machine *with* SHA instructions: 55 ms for SHA-256 (`ring`), 15 ms for BLAKE3; on a
//! Cortex-A72 without them SHA-256 is several times slower again, BLAKE3 uses NEON.
//!
//! A log written by an earlier version holds SHA-256 lines. While it does, a file is also
//! looked up by its SHA-256 ([`Seen::known`] is given its bytes), so an upgrade does not
//! queue again what was enqueued before it; a log without such lines costs nothing more.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use super::Queue;

/// A file's content digest (BLAKE3).
pub type Digest = [u8; 32];

/// The BLAKE3 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    *blake3::hash(bytes).as_bytes()
}

/// The SHA-256 of `bytes`: how versions before BLAKE3 wrote the log.
fn legacy_digest(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A log line's prefix for a BLAKE3 digest.
const B3: &str = "b3:";

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

/// The digests of the files enqueued so far, as the log holds them.
#[derive(Debug, Default)]
pub struct Seen {
    /// BLAKE3 digests.
    digests: HashSet<Digest>,
    /// SHA-256 digests from a log an earlier version wrote (empty for a log of this one).
    legacy: HashSet<Digest>,
}

impl Seen {
    /// Whether content with digest `d` was enqueued before. With its `bytes` it is also
    /// looked up among an earlier version's SHA-256 digests (without them, only `d`).
    pub fn known(&self, d: &Digest, bytes: Option<&[u8]>) -> bool {
        if self.digests.contains(d) {
            return true;
        }
        match bytes {
            Some(b) if !self.legacy.is_empty() => self.legacy.contains(&legacy_digest(b)),
            _ => false,
        }
    }

    /// Notes `d` as enqueued; whether it was new ([`Seen::known`] before).
    pub fn insert(&mut self, d: Digest, bytes: Option<&[u8]>) -> bool {
        let known = self.known(&d, bytes);
        self.digests.insert(d);
        !known
    }

    /// Notes `ds` as enqueued.
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Digest>) {
        self.digests.extend(ds);
    }
}

/// The digests in the log of the queue in `dir` (read-only: what `enqueue` checks before
/// handing files to a running daemon).
pub fn read_digest_log(dir: &std::path::Path) -> Seen {
    let text = std::fs::read_to_string(dir.join("enqueued")).unwrap_or_default();
    let mut seen = Seen::default();
    for line in text.lines().map(str::trim) {
        match line.strip_prefix(B3) {
            Some(hex) => seen.digests.extend(digest_from_hex(hex)),
            None => seen.legacy.extend(digest_from_hex(line)),
        }
    }
    seen
}

impl Queue {
    fn digest_log(&self) -> PathBuf {
        self.dir.join("enqueued")
    }

    /// The digests of every file enqueued into this queue so far.
    pub fn enqueued_digests(&self) -> Seen {
        read_digest_log(&self.dir)
    }

    /// Notes `digests` as enqueued (their frames are committed), durably.
    pub fn note_enqueued(&self, digests: &[Digest]) -> std::io::Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(digests.len() * (B3.len() + 65));
        for d in digests {
            text += B3;
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
        // BLAKE3's published test value for empty input.
        assert_eq!(
            digest_hex(&digest(b"")),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn a_log_of_an_earlier_version_is_still_recognised() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier version's line (SHA-256), then this version's, then a torn line.
        let old = digest_hex(&legacy_digest(b"old file"));
        let new = digest(b"new file");
        std::fs::write(
            dir.path().join("enqueued"),
            format!("{old}\nb3:{}\nb3:12ab", digest_hex(&new)),
        )
        .unwrap();
        let mut seen = read_digest_log(dir.path());
        assert!(seen.known(&digest(b"old file"), Some(b"old file")));
        // Without the bytes only BLAKE3 digests can be looked up.
        assert!(!seen.known(&digest(b"old file"), None));
        assert!(seen.known(&new, None));
        assert!(!seen.known(&digest(b"other"), Some(b"other")));
        assert!(seen.insert(digest(b"other"), Some(b"other")));
        assert!(!seen.insert(digest(b"other"), None));
    }
}
