//! The Nexus wire format: the JSON bodies edgecap sends and reads (protocol notes in
//! `docs/protocols/nexus.md`), and the `crc32c` encoding. Unknown fields in answers are
//! ignored, so a server may add to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::custom_meta::CustomMeta;

#[derive(Serialize)]
pub(super) struct SessionRequest<'a> {
    pub(super) groups: &'a [String],
    pub(super) assets: Vec<AssetRequest<'a>>,
}

#[derive(Serialize)]
pub(super) struct AssetRequest<'a> {
    pub(super) filename: &'a str,
    pub(super) size: u32,
    pub(super) crc32c: i32,
    pub(super) mime: &'a str,
    /// Sent only with `metadata_api = "session"` or `"both"`.
    #[serde(rename = "customMetadata", skip_serializing_if = "Option::is_none")]
    pub(super) custom_metadata: Option<&'a CustomMeta>,
}

#[derive(Deserialize)]
pub(super) struct SessionResponse {
    pub(super) id: String,
    #[serde(rename = "opId")]
    pub(super) op_id: String,
    pub(super) assets: Vec<AssetResponse>,
}

#[derive(Deserialize)]
pub(super) struct AssetResponse {
    pub(super) metadata: AssetResponseMeta,
    /// Missing or null: the asset cannot be uploaded in this session.
    #[serde(default)]
    pub(super) upload: Option<UploadSpec>,
}

#[derive(Deserialize)]
pub(super) struct AssetResponseMeta {
    pub(super) filename: String,
}

#[derive(Deserialize, Clone)]
pub(super) struct UploadSpec {
    pub(super) method: String,
    pub(super) url: String,
    pub(super) headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(super) struct Operation {
    pub(super) status: OperationStatus,
}

#[derive(Deserialize)]
pub(super) struct OperationStatus {
    pub(super) overview: String,
    #[serde(default)]
    pub(super) progress: Option<OperationProgress>,
}

#[derive(Deserialize)]
pub(super) struct OperationProgress {
    #[serde(rename = "withStatus")]
    pub(super) with_status: WithStatus,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WithStatus {
    pub(super) finished: u64,
    pub(super) cancelled: u64,
    pub(super) errored: u64,
}

#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

/// The `crc32c` value Nexus wants: the big-endian CRC-32C digest read as a signed i32
/// (protocol doc §4.2), i.e. the u32 reinterpreted in two's complement.
pub fn nexus_crc32c(crc: u32) -> i32 {
    i32::from_be_bytes(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The test vectors of protocol doc §4.2: (content, JSON `crc32c`, `x-goog-hash`).
    #[test]
    fn crc32c_matches_the_protocol_test_vectors() {
        let all: Vec<u8> = (0..=255u8).collect();
        let cases: [(&[u8], i32, &str); 5] = [
            (b"", 0, "crc32c=AAAAAA=="),
            (b"123456789", -486108541, "crc32c=4waSgw=="),
            (b"a", -1043315920, "crc32c=wdBDMA=="),
            (&[0u8; 32], -1970194774, "crc32c=ipE2qg=="),
            (&all, -1673258933, "crc32c=nEQYSw=="),
        ];
        for (content, json, hash) in cases {
            let crc = crc32c::crc32c(content);
            assert_eq!(nexus_crc32c(crc), json);
            let b64 = base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes());
            assert_eq!(format!("crc32c={b64}"), hash);
        }
    }
}
