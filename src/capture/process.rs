//! Per-camera frame processing between the source and the queue: change detection, then
//! the configured [`Transform`], then JPEG encoding, each only when needed.
//!
//! - JPEG in, no transform, no change detection: the bytes go through untouched (their
//!   size is read from the SOF marker; nothing is decoded).
//! - Change detection alone decodes to compare, but still stores the camera's own bytes.
//! - A transform, or uncompressed pixels from the camera, decode/convert and encode.

use std::time::{Duration, Instant};

use image::RgbImage;
use image::imageops::{self, FilterType};

use super::{Pixels, RawFormat};
use crate::config::{CameraConfig, ChangeDetection};
use crate::encode::{self, Transform};

/// Width and height of the grayscale thumbnails change detection compares.
pub const THUMB: (u32, u32) = (64, 48);

/// A frame could not be processed (that frame is dropped and counted).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The camera's JPEG does not decode.
    #[error(transparent)]
    Decode(#[from] encode::DecodeError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] encode::EncodeError),
    /// The bytes are not a JPEG with a size.
    #[error("the source delivered {0} bytes that are not a JPEG with a frame header")]
    NotJpeg(usize),
    /// Uncompressed pixels of the wrong size or layout.
    #[error("cannot convert a {width}x{height} {format:?} frame: {message}")]
    Convert {
        /// Layout.
        format: RawFormat,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Why.
        message: String,
    },
}

/// A processed frame ready for the queue.
#[derive(Debug)]
pub struct Ready {
    /// JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// What processing made of a frame.
#[derive(Debug)]
pub enum Processed {
    /// Keep it.
    Keep(Ready),
    /// Change detection found it the same as the last kept frame.
    Unchanged,
}

/// Keeps a frame when its thumbnail differs from the last kept one, or when `max_gap`
/// has passed.
#[derive(Debug)]
pub struct ChangeDetector {
    threshold_percent: f64,
    max_gap: Duration,
    last: Option<(Vec<u8>, Instant)>,
}

impl ChangeDetector {
    /// A detector with the camera's settings.
    pub fn new(cfg: &ChangeDetection) -> Self {
        Self {
            threshold_percent: cfg.threshold_percent,
            max_gap: cfg.max_gap,
            last: None,
        }
    }

    /// Mean absolute difference of two thumbnails, in percent of full scale.
    pub fn difference_percent(a: &[u8], b: &[u8]) -> f64 {
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 * 100.0 / (255.0 * a.len().max(1) as f64)
    }

    /// A 64x48 grayscale thumbnail.
    pub fn thumbnail(img: &RgbImage) -> Vec<u8> {
        let t = imageops::resize(img, THUMB.0, THUMB.1, FilterType::Triangle);
        t.pixels()
            .map(|p| {
                let [r, g, b] = p.0;
                ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000) as u8
            })
            .collect()
    }

    /// Whether to keep `img`, seen at `now`; remembers it if kept.
    pub fn keep(&mut self, img: &RgbImage, now: Instant) -> bool {
        let thumb = Self::thumbnail(img);
        let keep = match &self.last {
            None => true,
            Some((last, at)) => {
                now.duration_since(*at) >= self.max_gap
                    || Self::difference_percent(last, &thumb) > self.threshold_percent
            }
        };
        if keep {
            self.last = Some((thumb, now));
        }
        keep
    }
}

/// Converts uncompressed camera pixels to RGB.
pub fn raw_to_rgb(
    format: RawFormat,
    width: u32,
    height: u32,
    data: &[u8],
) -> Result<RgbImage, ProcessError> {
    let err = |message: String| ProcessError::Convert {
        format,
        width,
        height,
        message,
    };
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    match format {
        RawFormat::Yuyv => {
            let need = width as usize * height as usize * 2;
            if data.len() < need {
                return Err(err(format!("{} bytes, expected {need}", data.len())));
            }
            nokhwa::utils::buf_yuyv422_to_rgb(&data[..need], &mut rgb, false)
                .map_err(|e| err(e.to_string()))?;
        }
        RawFormat::Nv12 => {
            let res = nokhwa::utils::Resolution::new(width, height);
            nokhwa::utils::buf_nv12_to_rgb(res, data, &mut rgb, false)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| err("buffer size".into()))
}

/// A camera's processing stage.
#[derive(Debug)]
pub struct Processor {
    transform: Transform,
    change: Option<ChangeDetector>,
}

impl Processor {
    /// The stage for `cam`.
    pub fn new(cam: &CameraConfig) -> Self {
        Self {
            transform: cam.transform.clone(),
            change: cam.change_detection.as_ref().map(ChangeDetector::new),
        }
    }

    /// Processes one frame seen at `now`.
    pub fn process(&mut self, pixels: Pixels, now: Instant) -> Result<Processed, ProcessError> {
        let passthrough = self.transform.is_passthrough();
        let (img, original) = match pixels {
            Pixels::Jpeg(jpeg) => {
                let Some((width, height)) = encode::jpeg_dimensions(&jpeg) else {
                    return Err(ProcessError::NotJpeg(jpeg.len()));
                };
                if passthrough && self.change.is_none() {
                    return Ok(Processed::Keep(Ready {
                        jpeg,
                        width,
                        height,
                    }));
                }
                (encode::decode_jpeg(&jpeg)?, Some((jpeg, width, height)))
            }
            Pixels::Rgb(img) => (img, None),
            Pixels::Raw {
                format,
                width,
                height,
                data,
            } => (raw_to_rgb(format, width, height, &data)?, None),
        };
        if let Some(cd) = &mut self.change
            && !cd.keep(&img, now)
        {
            return Ok(Processed::Unchanged);
        }
        if passthrough && let Some((jpeg, width, height)) = original {
            return Ok(Processed::Keep(Ready {
                jpeg,
                width,
                height,
            }));
        }
        let img = self.transform.apply(img);
        let (width, height) = img.dimensions();
        let mut jpeg = Vec::with_capacity(img.len() / 8);
        encode::rgb_to_jpeg(
            img.as_raw(),
            width,
            height,
            self.transform.quality(),
            &mut jpeg,
        )?;
        Ok(Processed::Keep(Ready {
            jpeg,
            width,
            height,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Rotate;
    use image::Rgb;

    fn scene(square_x: u32) -> RgbImage {
        // A grey room with a dark square somewhere, plus a little sensor noise.
        let mut img = RgbImage::from_fn(320, 240, |x, y| {
            let n = ((x * 7 + y * 13) % 5) as u8;
            Rgb([120 + n, 120 + n, 120 + n])
        });
        for y in 80..160 {
            for x in square_x..square_x + 80 {
                img.put_pixel(x, y, Rgb([10, 10, 10]));
            }
        }
        img
    }

    fn detector(gap: u64) -> ChangeDetector {
        ChangeDetector::new(&ChangeDetection {
            threshold_percent: 2.0,
            max_gap: Duration::from_secs(gap),
        })
    }

    #[test]
    fn a_still_scene_keeps_one_frame_per_max_gap() {
        let mut d = detector(10);
        let t0 = Instant::now();
        let still = scene(40);
        // 60 s of frames at 1 per second: kept at 0, 10, 20, 30, 40, 50.
        let kept: Vec<u64> = (0..60)
            .filter(|s| d.keep(&still, t0 + Duration::from_secs(*s)))
            .collect();
        assert_eq!(kept, vec![0, 10, 20, 30, 40, 50]);
    }

    #[test]
    fn a_moving_scene_keeps_every_frame() {
        let mut d = detector(3600);
        let t0 = Instant::now();
        let kept = (0..20)
            // A person-sized object crossing the view, 40 px per frame.
            .filter(|i| d.keep(&scene((i * 40) % 240), t0 + Duration::from_secs(*i as u64)))
            .count();
        assert_eq!(kept, 20);
    }

    #[test]
    fn noise_alone_stays_under_the_default_threshold() {
        let a = ChangeDetector::thumbnail(&scene(40));
        let mut noisy = scene(40);
        for (i, p) in noisy.pixels_mut().enumerate() {
            let d = (i % 3) as u8;
            p.0 = [p.0[0] + d, p.0[1] + d, p.0[2] + d];
        }
        let b = ChangeDetector::thumbnail(&noisy);
        assert!(ChangeDetector::difference_percent(&a, &b) < 2.0);
        let moved = ChangeDetector::thumbnail(&scene(200));
        assert!(ChangeDetector::difference_percent(&a, &moved) > 2.0);
    }

    fn cam(transform: Transform, change: Option<ChangeDetection>) -> CameraConfig {
        let cfg = crate::config::parse(
            "[[camera]]\nname = \"c\"\n[camera.source]\ntype = \"test_pattern\"\n[upload]\nsink = \"directory\"\npath = \"/tmp\"\n",
        )
        .unwrap();
        let mut c = cfg.cameras[0].clone();
        c.transform = transform;
        c.change_detection = change;
        c
    }

    fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        encode::rgb_to_jpeg(img.as_raw(), img.width(), img.height(), 90, &mut out).unwrap();
        out
    }

    #[test]
    fn without_transforms_camera_jpeg_goes_through_byte_identical() {
        let jpeg = jpeg_of(&scene(40));
        let mut p = Processor::new(&cam(Transform::default(), None));
        match p
            .process(Pixels::Jpeg(jpeg.clone()), Instant::now())
            .unwrap()
        {
            Processed::Keep(r) => {
                assert_eq!(r.jpeg, jpeg);
                assert_eq!((r.width, r.height), (320, 240));
            }
            Processed::Unchanged => panic!("kept"),
        }
        // Change detection alone decodes to compare but still stores the original bytes.
        let cd = ChangeDetection {
            threshold_percent: 2.0,
            max_gap: Duration::from_secs(60),
        };
        let mut p = Processor::new(&cam(Transform::default(), Some(cd)));
        let t = Instant::now();
        assert!(
            matches!(p.process(Pixels::Jpeg(jpeg.clone()), t).unwrap(), Processed::Keep(r) if r.jpeg == jpeg)
        );
        assert!(matches!(
            p.process(Pixels::Jpeg(jpeg.clone()), t).unwrap(),
            Processed::Unchanged
        ));
    }

    #[test]
    fn a_transform_reencodes_to_the_rotated_and_bounded_size() {
        let t = Transform {
            max_width: Some(120),
            rotate: Rotate::Cw90,
            jpeg_quality: Some(60),
            ..Transform::default()
        };
        let mut p = Processor::new(&cam(t, None));
        let Processed::Keep(r) = p
            .process(Pixels::Jpeg(jpeg_of(&scene(40))), Instant::now())
            .unwrap()
        else {
            panic!("kept")
        };
        assert_eq!((r.width, r.height), (120, 160));
        let img = image::load_from_memory(&r.jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (120, 160));
    }

    #[test]
    fn yuyv_frames_are_converted_and_encoded() {
        // Mid-grey YUYV: Y=128, U=V=128.
        let (w, h) = (32u32, 16u32);
        let data = vec![128u8; (w * h * 2) as usize];
        let mut p = Processor::new(&cam(Transform::default(), None));
        let px = Pixels::Raw {
            format: RawFormat::Yuyv,
            width: w,
            height: h,
            data,
        };
        let Processed::Keep(r) = p.process(px, Instant::now()).unwrap() else {
            panic!("kept")
        };
        let img = image::load_from_memory(&r.jpeg).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (w, h));
        let p0 = img.get_pixel(5, 5).0;
        assert!(p0.iter().all(|c| c.abs_diff(128) < 12), "{p0:?}");
        // A short buffer is a clear error, not a panic.
        let px = Pixels::Raw {
            format: RawFormat::Yuyv,
            width: w,
            height: h,
            data: vec![0; 10],
        };
        assert!(p.process(px, Instant::now()).is_err());
    }

    #[test]
    fn bytes_that_are_not_a_jpeg_are_refused() {
        let mut p = Processor::new(&cam(Transform::default(), None));
        assert!(matches!(
            p.process(Pixels::Jpeg(b"hello".to_vec()), Instant::now()),
            Err(ProcessError::NotJpeg(5))
        ));
    }
}
