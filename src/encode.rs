//! JPEG encoding with the `image` crate. Sources that already deliver JPEG bytes (cameras
//! in MJPEG mode) bypass this module entirely: bytes go to the queue untouched.

use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;

/// Encoding failed.
#[derive(Debug, thiserror::Error)]
#[error("JPEG encoding of a {width}x{height} frame failed: {message}")]
pub struct EncodeError {
    width: u32,
    height: u32,
    message: String,
}

/// Encodes packed RGB8 pixels as a baseline JPEG at `quality` (1–100), into `out`
/// (cleared first, so its capacity is reused from frame to frame).
pub fn rgb_to_jpeg(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.clear();
    let mut enc = JpegEncoder::new_with_quality(&mut *out, quality.clamp(1, 100));
    enc.encode(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| EncodeError {
            width,
            height,
            message: e.to_string(),
        })
}

/// Reads the size of a JPEG from its SOFn marker without decoding it.
pub fn jpeg_dimensions(jpeg: &[u8]) -> Option<(u32, u32)> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof && i + 9 <= jpeg.len() {
            let h = u32::from(u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]));
            let w = u32::from(u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]));
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_jpeg_reports_the_size_it_was_encoded_at() {
        let (w, h) = (48u32, 32u32);
        let rgb = vec![128u8; (w * h * 3) as usize];
        let mut out = Vec::new();
        rgb_to_jpeg(&rgb, w, h, 80, &mut out).unwrap();
        assert_eq!(&out[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(jpeg_dimensions(&out), Some((w, h)));
        let decoded = image::load_from_memory(&out).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (w, h));
    }

    #[test]
    fn non_jpeg_bytes_have_no_dimensions() {
        assert_eq!(jpeg_dimensions(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(jpeg_dimensions(&[0xFF, 0xD8]), None);
    }
}
