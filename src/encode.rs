//! Pixels: JPEG decoding and encoding with the `image` crate, and the per-camera
//! [`Transform`] (rotate, flip, fit-in-a-box resize, re-encode quality).
//!
//! Sources that already deliver JPEG bytes (cameras in MJPEG mode, command sources) bypass
//! this module when no transform is configured: the camera's bytes go to the queue
//! byte-identical. Decoding happens only when a transform or change detection needs pixels.

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{ExtendedColorType, RgbImage};
use serde::Deserialize;

/// JPEG quality used when pixels must be encoded and no `jpeg_quality` is configured.
pub const DEFAULT_JPEG_QUALITY: u8 = 85;

/// A mirror applied after rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    /// No mirroring.
    #[default]
    None,
    /// Mirror left-right.
    Horizontal,
    /// Mirror top-bottom.
    Vertical,
}

/// A clockwise rotation by a multiple of 90°.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotate {
    /// No rotation.
    #[default]
    None,
    /// 90° clockwise.
    Cw90,
    /// 180°.
    Cw180,
    /// 270° clockwise (90° counter-clockwise).
    Cw270,
}

/// What a camera does to its frames' pixels, in this order: rotate, flip, shrink to fit
/// within `max_width`×`max_height` (keeping the aspect ratio, never enlarging), encode at
/// `jpeg_quality`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transform {
    /// Largest output width, if bounded.
    pub max_width: Option<u32>,
    /// Largest output height, if bounded.
    pub max_height: Option<u32>,
    /// Rotation.
    pub rotate: Rotate,
    /// Mirror.
    pub flip: Flip,
    /// Re-encode quality; set alone it re-encodes the camera's JPEG at this quality.
    pub jpeg_quality: Option<u8>,
}

impl Transform {
    /// True when nothing is asked for: camera JPEG goes through byte-identical.
    pub fn is_passthrough(&self) -> bool {
        *self == Self::default()
    }

    /// The quality to encode at.
    pub fn quality(&self) -> u8 {
        self.jpeg_quality.unwrap_or(DEFAULT_JPEG_QUALITY)
    }

    /// Applies rotation, flip and resize to decoded pixels.
    pub fn apply(&self, img: RgbImage) -> RgbImage {
        let img = match self.rotate {
            Rotate::None => img,
            Rotate::Cw90 => imageops::rotate90(&img),
            Rotate::Cw180 => imageops::rotate180(&img),
            Rotate::Cw270 => imageops::rotate270(&img),
        };
        let img = match self.flip {
            Flip::None => img,
            Flip::Horizontal => imageops::flip_horizontal(&img),
            Flip::Vertical => imageops::flip_vertical(&img),
        };
        let (w, h) = img.dimensions();
        let (bw, bh) = (
            self.max_width.unwrap_or(w).min(w),
            self.max_height.unwrap_or(h).min(h),
        );
        if (bw, bh) == (w, h) {
            return img;
        }
        let (nw, nh) = fit_within(w, h, bw, bh);
        imageops::resize(&img, nw, nh, FilterType::Triangle)
    }
}

/// The largest size with `w`:`h`'s aspect ratio that fits in `bw`×`bh` (at least 1×1).
pub fn fit_within(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
    let (w64, h64, bw64, bh64) = (u64::from(w), u64::from(h), u64::from(bw), u64::from(bh));
    // Scale by the tighter of the two bounds, in integers to avoid rounding drift.
    let (nw, nh) = if bw64 * h64 <= bh64 * w64 {
        (bw64, (h64 * bw64 + w64 / 2) / w64.max(1))
    } else {
        ((w64 * bh64 + h64 / 2) / h64.max(1), bh64)
    };
    (
        u32::try_from(nw.max(1)).unwrap_or(bw),
        u32::try_from(nh.max(1)).unwrap_or(bh),
    )
}

/// The four Huffman tables of ITU-T T.81 Annex K.3 (DC/AC, luminance/chrominance) as the
/// payload of one DHT segment: class/id, 16 code counts, symbols, for each table.
const STANDARD_DHT: [u8; 416] = [
    0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x00, 0x02,
    0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01, 0x02,
    0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
    0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33,
    0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
    0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53,
    0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73,
    0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92,
    0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
    0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4,
    0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x11, 0x00, 0x02,
    0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00, 0x01,
    0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
    0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62,
    0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3,
    0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

/// A copy of `jpeg` with the standard Huffman tables inserted before its first SOS, if it
/// has none of its own. USB webcams may send Motion-JPEG frames without DHT, relying on
/// the decoder's defaults (UVC allows it); libjpeg-turbo and ffmpeg supply them, the
/// `image` decoder does not. `None` when the JPEG has tables or cannot be walked.
pub fn with_standard_huffman_tables(jpeg: &[u8]) -> Option<Vec<u8>> {
    for (at, marker) in header_segments(jpeg) {
        match marker {
            0xC4 => return None,
            0xDA => {
                let mut out = Vec::with_capacity(jpeg.len() + STANDARD_DHT.len() + 4);
                out.extend_from_slice(&jpeg[..at]);
                out.extend_from_slice(&[0xFF, 0xC4]);
                out.extend_from_slice(&((STANDARD_DHT.len() + 2) as u16).to_be_bytes());
                out.extend_from_slice(&STANDARD_DHT);
                out.extend_from_slice(&jpeg[at..]);
                return Some(out);
            }
            _ => {}
        }
    }
    None
}

/// The header segments of a JPEG, up to and including its first SOS: the offset of each
/// segment's `FF` and its marker code. Ends early where the structure breaks.
fn header_segments(jpeg: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let valid = jpeg.len() >= 4 && jpeg[0] == 0xFF && jpeg[1] == 0xD8;
    let mut i = if valid { 2 } else { jpeg.len() };
    std::iter::from_fn(move || {
        while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
            let (at, marker) = (i, jpeg[i + 1]);
            if marker == 0xFF {
                i += 1; // fill byte
                continue;
            }
            i = if marker == 0xDA {
                jpeg.len() // nothing after the scan header is a header segment
            } else {
                i + 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]))
            };
            return Some((at, marker));
        }
        None
    })
}

/// Decoding a JPEG failed.
#[derive(Debug, thiserror::Error)]
#[error("JPEG decoding of a {len}-byte frame failed: {message}")]
pub struct DecodeError {
    len: usize,
    message: String,
}

/// Decodes a JPEG to RGB8 pixels (supplying the standard Huffman tables to Motion-JPEG
/// frames that carry none).
pub fn decode_jpeg(jpeg: &[u8]) -> Result<RgbImage, DecodeError> {
    let fixed = with_standard_huffman_tables(jpeg);
    image::load_from_memory_with_format(fixed.as_deref().unwrap_or(jpeg), image::ImageFormat::Jpeg)
        .map(|i| i.into_rgb8())
        .map_err(|e| DecodeError {
            len: jpeg.len(),
            message: e.to_string(),
        })
}

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
    header_segments(jpeg).find_map(|(i, marker)| {
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        (is_sof && i + 9 <= jpeg.len()).then(|| {
            let h = u32::from(u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]));
            let w = u32::from(u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]));
            (w, h)
        })
    })
}

/// The size a viewer shows: [`jpeg_dimensions`], with width and height swapped when the
/// EXIF orientation turns the picture by a quarter (orientations 5 to 8), as the Picsellia
/// SDK reports it. The EXIF segment is parsed only when there is one.
pub fn jpeg_display_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    use image::ImageDecoder;
    use image::metadata::Orientation;
    let (w, h) = jpeg_dimensions(jpeg)?;
    if !header_segments(jpeg).any(|(_, marker)| marker == 0xE1) {
        return Some((w, h));
    }
    let turned = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg))
        .and_then(|mut d| d.orientation())
        .is_ok_and(|o| {
            matches!(
                o,
                Orientation::Rotate90
                    | Orientation::Rotate270
                    | Orientation::Rotate90FlipH
                    | Orientation::Rotate270FlipH
            )
        });
    Some(if turned { (h, w) } else { (w, h) })
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

    /// A JPEG with its DHT segments removed, as some UVC webcams send them.
    fn without_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        let mut i = 2;
        loop {
            let m = jpeg[i + 1];
            if m == 0xDA {
                out.extend_from_slice(&jpeg[i..]);
                return out;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if m != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
    }

    #[test]
    fn motion_jpeg_without_huffman_tables_decodes_with_the_standard_ones() {
        let (w, h) = (40u32, 24u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut full = Vec::new();
        rgb_to_jpeg(&rgb, w, h, 85, &mut full).unwrap();
        let bare = without_dht(&full);
        assert!(bare.len() < full.len());
        assert!(
            image::load_from_memory_with_format(&bare, image::ImageFormat::Jpeg).is_err(),
            "the image decoder needs the tables (else this fix is moot)"
        );
        // `image` encodes with the Annex K.3 tables, so putting them back gives the same
        // pixels as the original.
        let a = decode_jpeg(&bare).unwrap();
        let b = decode_jpeg(&full).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            with_standard_huffman_tables(&full),
            None,
            "tables present: untouched"
        );
    }

    /// A 4x2 image whose top-left pixel is red and the rest black.
    fn marked() -> RgbImage {
        let mut img = RgbImage::new(4, 2);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img
    }

    fn red_at(img: &RgbImage) -> (u32, u32) {
        let (x, y, _) = img
            .enumerate_pixels()
            .find(|(_, _, p)| p.0 == [255, 0, 0])
            .unwrap();
        (x, y)
    }

    #[test]
    fn rotations_and_flips_move_the_corner_where_expected() {
        let t = |rotate, flip| Transform {
            rotate,
            flip,
            ..Transform::default()
        };
        let cases = [
            (Rotate::None, Flip::None, (4, 2), (0, 0)),
            (Rotate::Cw90, Flip::None, (2, 4), (1, 0)),
            (Rotate::Cw180, Flip::None, (4, 2), (3, 1)),
            (Rotate::Cw270, Flip::None, (2, 4), (0, 3)),
            (Rotate::None, Flip::Horizontal, (4, 2), (3, 0)),
            (Rotate::None, Flip::Vertical, (4, 2), (0, 1)),
            // Flip applies after rotation.
            (Rotate::Cw90, Flip::Horizontal, (2, 4), (0, 0)),
        ];
        for (rotate, flip, dims, corner) in cases {
            let out = t(rotate, flip).apply(marked());
            assert_eq!(out.dimensions(), dims, "{rotate:?} {flip:?}");
            assert_eq!(red_at(&out), corner, "{rotate:?} {flip:?}");
        }
    }

    #[test]
    fn resize_fits_within_the_box_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit_within(1920, 1080, 1280, 1280), (1280, 720));
        assert_eq!(fit_within(1920, 1080, 4000, 540), (960, 540));
        assert_eq!(fit_within(1080, 1920, 1280, 720), (405, 720));
        let t = Transform {
            max_width: Some(320),
            max_height: Some(320),
            ..Transform::default()
        };
        assert_eq!(t.apply(RgbImage::new(640, 480)).dimensions(), (320, 240));
        // Already inside the box: untouched.
        assert_eq!(t.apply(RgbImage::new(200, 100)).dimensions(), (200, 100));
        // Rotation first, then the box applies to the rotated frame.
        let t = Transform {
            max_width: Some(240),
            rotate: Rotate::Cw90,
            ..Transform::default()
        };
        assert_eq!(t.apply(RgbImage::new(640, 480)).dimensions(), (240, 320));
        assert!(Transform::default().is_passthrough());
        assert!(
            !Transform {
                jpeg_quality: Some(70),
                ..Transform::default()
            }
            .is_passthrough()
        );
    }

    #[test]
    fn non_jpeg_bytes_have_no_dimensions() {
        assert_eq!(jpeg_dimensions(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(jpeg_dimensions(&[0xFF, 0xD8]), None);
    }
}
