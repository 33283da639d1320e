//! The built-in test-pattern source: a moving pattern with the camera name and frame
//! number drawn in, encoded to JPEG. It needs no hardware, so the demo and the tests run
//! the real pipeline anywhere.

use std::time::SystemTime;

use super::{CaptureError, Pixels, Source, SourceFrame, Stop};
use crate::encode;

/// Test-pattern generator with reusable buffers.
pub struct TestPattern {
    label: String,
    width: u32,
    height: u32,
    quality: u8,
    n: u64,
    rgb: Vec<u8>,
}

impl TestPattern {
    /// A pattern of `width`×`height` at JPEG `quality`, labelled with `label`.
    pub fn new(label: &str, width: u32, height: u32, quality: u8) -> Self {
        Self {
            label: label.to_string(),
            width,
            height,
            quality,
            n: 0,
            rgb: vec![0; width as usize * height as usize * 3],
        }
    }

    fn draw(&mut self) {
        let (w, h) = (self.width as usize, self.height as usize);
        let t = self.n as usize;
        // Diagonal colour bands that slide by a few pixels every frame.
        for y in 0..h {
            let row = &mut self.rgb[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                let d = (x + y + t * 4) % 256;
                let px = &mut row[x * 3..x * 3 + 3];
                px[0] = d as u8;
                px[1] = ((x * 255) / w.max(1)) as u8;
                px[2] = (255 - d) as u8;
            }
        }
        // A white square bouncing horizontally.
        let side = (h / 6).max(4);
        let span = w.saturating_sub(side).max(1);
        let pos = t * 7 % (2 * span);
        let x0 = if pos < span { pos } else { 2 * span - pos };
        let y0 = h / 2 - side / 2;
        for y in y0..(y0 + side).min(h) {
            for x in x0..(x0 + side).min(w) {
                self.rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let text = format!("{} #{}", self.label, self.n);
        let scale = (w / 160).clamp(1, 4);
        self.text(&text, 4, 4, scale);
    }

    fn text(&mut self, s: &str, x0: usize, y0: usize, scale: usize) {
        let (w, h) = (self.width as usize, self.height as usize);
        for (i, ch) in s.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(ch as usize)
                .copied()
                .unwrap_or([0; 8]);
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..8 {
                    let on = bits & (1 << gx) != 0;
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let x = x0 + (i * 8 + gx) * scale + sx;
                            let y = y0 + gy * scale + sy;
                            if x < w && y < h {
                                let v = if on { 255 } else { 0 };
                                self.rgb[(y * w + x) * 3..(y * w + x) * 3 + 3]
                                    .copy_from_slice(&[v, v, 0]);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Source for TestPattern {
    fn next_frame(&mut self, _stop: &Stop) -> Result<Option<SourceFrame>, CaptureError> {
        let captured_at = SystemTime::now();
        self.draw();
        self.n += 1;
        let mut jpeg = Vec::with_capacity(self.rgb.len() / 8);
        encode::rgb_to_jpeg(&self.rgb, self.width, self.height, self.quality, &mut jpeg)?;
        Ok(Some(SourceFrame {
            pixels: Pixels::Jpeg(jpeg),
            captured_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_frames_are_jpegs_of_the_configured_size_and_differ_over_time() {
        let mut p = TestPattern::new("cam0", 64, 48, 80);
        let stop = Stop::default();
        let mut next = || match p.next_frame(&stop).unwrap().unwrap().pixels {
            Pixels::Jpeg(j) => j,
            other => panic!("not a JPEG: {other:?}"),
        };
        let (a, b) = (next(), next());
        assert_eq!(encode::jpeg_dimensions(&a), Some((64, 48)));
        assert_ne!(a, b, "the pattern must move");
    }
}
