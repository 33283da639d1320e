//! Splits a byte stream of concatenated JPEGs (MJPEG as `rpicam-vid --codec mjpeg -o -`,
//! `ffmpeg -f mjpeg -` and gstreamer's `jpegenc ! fdsink` write it) into frames.
//!
//! The splitter follows the JPEG marker structure instead of searching for the bytes
//! `FF D9`: segment lengths are honoured, so an EXIF thumbnail (a whole JPEG inside APP1)
//! does not end the frame early, and inside entropy-coded data only a real marker
//! (`FF` followed by neither `00` nor `D0`–`D7`) is one. It copes with anything a pipe can
//! deliver:
//! - bytes outside a frame (a program's banner, partial output after a restart) are
//!   skipped and counted in `garbage_bytes`;
//! - a frame cut short by the next `SOI`, by a byte that cannot be there, or by the end of
//!   the stream is discarded and counted in `truncated`; the bytes it had swallowed are
//!   searched again for the next frame. (One case stays ambiguous: a frame cut inside its
//!   EXIF block, which may hold a thumbnail's `SOI`, can cost the frame after it too.)
//! - a frame growing past `max_frame_bytes` stops being buffered at once (memory stays
//!   bounded), is parsed to its end without being kept, and is counted in `oversize`.
//!
//! Chunk boundaries do not matter: the state machine resumes mid-marker.

/// What the splitter saw so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SplitStats {
    /// Complete frames delivered.
    pub frames: u64,
    /// Bytes skipped outside any frame.
    pub garbage_bytes: u64,
    /// Frames discarded because they were cut short.
    pub truncated: u64,
    /// Frames discarded for exceeding the size limit.
    pub oversize: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8`; `ff` when the previous byte was `FF`.
    Hunt { ff: bool },
    /// Expecting the `FF` that starts a marker.
    MarkerFf,
    /// Expecting the marker code (fill `FF`s allowed).
    MarkerCode,
    /// Length high byte of the segment of `marker`.
    LenHi { marker: u8 },
    /// Length low byte.
    LenLo { marker: u8, hi: u8 },
    /// Inside the payload of segment `marker`; `ff` when its previous byte was `FF`.
    Payload { left: usize, marker: u8, ff: bool },
    /// Inside entropy-coded data; `ff` when the previous byte was `FF`.
    Scan { ff: bool },
}

/// Incremental MJPEG splitter. Feed it with [`push`](Self::push), take frames with
/// [`pop`](Self::pop).
#[derive(Debug)]
pub struct JpegSplitter {
    max: usize,
    state: State,
    buf: Vec<u8>,
    /// The current frame is too large and is being skipped.
    discarding: bool,
    done: std::collections::VecDeque<Vec<u8>>,
    stats: SplitStats,
}

impl JpegSplitter {
    /// A splitter that refuses frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max: max_frame_bytes.max(4),
            state: State::Hunt { ff: false },
            buf: Vec::new(),
            discarding: false,
            done: Default::default(),
            stats: SplitStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SplitStats {
        self.stats
    }

    /// The next complete frame, oldest first.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.done.pop_front()
    }

    /// Ends the stream: a frame in progress is counted as truncated, and the bytes it had
    /// swallowed are searched for whole frames.
    pub fn finish(&mut self) {
        while !matches!(self.state, State::Hunt { .. }) {
            self.broken();
        }
        self.reset_hunt();
    }

    fn reset_hunt(&mut self) {
        self.buf.clear();
        self.discarding = false;
        self.state = State::Hunt { ff: false };
    }

    fn start_frame(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0xFF, 0xD8]);
        self.discarding = false;
        self.state = State::MarkerFf;
    }

    /// The frame in progress cannot continue: drop it and hunt for the next SOI in the
    /// bytes it had swallowed (a cut frame's last segment may have eaten the start of the
    /// next one), then in what follows.
    fn broken(&mut self) {
        self.stats.truncated += 1;
        let tail = if self.discarding || self.buf.len() <= 2 {
            Vec::new()
        } else {
            self.buf.split_off(2)
        };
        self.reset_hunt();
        if !tail.is_empty() {
            self.push(&tail);
        }
    }

    fn emit(&mut self) {
        if self.discarding {
            self.reset_hunt();
            return;
        }
        let cap = self.buf.len() + self.buf.len() / 8;
        let frame = std::mem::replace(&mut self.buf, Vec::with_capacity(cap));
        self.stats.frames += 1;
        self.done.push_back(frame);
        self.reset_hunt();
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        if self.buf.len() + bytes.len() > self.max {
            self.stats.oversize += 1;
            self.discarding = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Hunt { ff } => {
                    if ff {
                        if data[0] == 0xD8 {
                            self.stats.garbage_bytes = self.stats.garbage_bytes.saturating_sub(1);
                            self.start_frame();
                            data = &data[1..];
                        } else {
                            self.state = State::Hunt { ff: false };
                        }
                        continue;
                    }
                    match memchr::memchr(0xFF, data) {
                        None => {
                            self.stats.garbage_bytes += data.len() as u64;
                            data = &[];
                        }
                        Some(i) => {
                            // The FF is counted as garbage until a D8 follows it.
                            self.stats.garbage_bytes += i as u64 + 1;
                            self.state = State::Hunt { ff: true };
                            data = &data[i + 1..];
                        }
                    }
                }
                State::MarkerFf => {
                    if data[0] == 0xFF {
                        self.state = State::MarkerCode;
                        data = &data[1..];
                    } else {
                        // Not a marker where one must be: corrupt or cut. Re-hunt from
                        // this byte.
                        self.broken();
                    }
                }
                State::MarkerCode => {
                    let code = data[0];
                    data = &data[1..];
                    match code {
                        0xFF => {} // fill byte
                        0xD8 => {
                            self.stats.truncated += 1;
                            self.start_frame();
                        }
                        0xD9 => {
                            self.keep(&[0xFF, 0xD9]);
                            self.emit();
                        }
                        0x01 | 0xD0..=0xD7 => {
                            self.keep(&[0xFF, code]);
                            self.state = State::MarkerFf;
                        }
                        0x00 => self.broken(),
                        m => self.state = State::LenHi { marker: m },
                    }
                }
                State::LenHi { marker } => {
                    self.state = State::LenLo {
                        marker,
                        hi: data[0],
                    };
                    data = &data[1..];
                }
                State::LenLo { marker, hi } => {
                    let lo = data[0];
                    data = &data[1..];
                    if (hi, lo) == (0xFF, 0xD8) {
                        // Cut right after a marker code; a new frame starts here.
                        self.stats.truncated += 1;
                        self.start_frame();
                        continue;
                    }
                    let len = usize::from(u16::from_be_bytes([hi, lo]));
                    if len < 2 {
                        self.broken();
                        continue;
                    }
                    self.keep(&[0xFF, marker, hi, lo]);
                    self.state = State::Payload {
                        left: len - 2,
                        marker,
                        // A length byte of FF may be the start of a cut-in SOI.
                        ff: lo == 0xFF,
                    };
                }
                State::Payload { left, marker, ff } => {
                    let n = left.min(data.len());
                    let (head, rest) = data.split_at(n);
                    // Only APP1 (EXIF) and APP2 (MPF) carry whole JPEGs (thumbnails,
                    // previews). Anywhere else `FF D8` means this frame was cut and a new
                    // one starts here.
                    let may_embed = matches!(marker, 0xE1 | 0xE2);
                    if !may_embed && let Some(i) = soi_in(ff, head) {
                        // `i` is the index of the D8 within `head`.
                        self.stats.truncated += 1;
                        self.start_frame();
                        data = &data[i + 1..];
                        continue;
                    }
                    self.keep(head);
                    data = rest;
                    self.state = if n < left {
                        State::Payload {
                            left: left - n,
                            marker,
                            ff: head.last() == Some(&0xFF),
                        }
                    } else if marker == 0xDA {
                        // A scan header never ends in FF; if this one does, it is the
                        // first byte of a cut-in SOI.
                        State::Scan {
                            ff: head.last() == Some(&0xFF),
                        }
                    } else {
                        State::MarkerFf
                    };
                }
                State::Scan { ff: true } => {
                    let code = data[0];
                    data = &data[1..];
                    match code {
                        // Stuffed FF, restart marker: still entropy data.
                        0x00 | 0xD0..=0xD7 => {
                            self.keep(&[0xFF, code]);
                            self.state = State::Scan { ff: false };
                        }
                        0xFF => self.keep(&[0xFF]),
                        0xD9 => {
                            self.keep(&[0xFF, 0xD9]);
                            self.emit();
                        }
                        0xD8 => {
                            self.stats.truncated += 1;
                            self.start_frame();
                        }
                        // Another segment (DHT/SOS of a progressive JPEG, DNL, …).
                        m => self.state = State::LenHi { marker: m },
                    }
                }
                State::Scan { ff: false } => match memchr::memchr(0xFF, data) {
                    None => {
                        self.keep(data);
                        data = &[];
                    }
                    Some(i) => {
                        self.keep(&data[..i]);
                        self.state = State::Scan { ff: true };
                        data = &data[i + 1..];
                    }
                },
            }
        }
    }
}

/// Index of the `D8` of the first `FF D8` in `b`, given whether the byte before `b` was
/// `FF`.
fn soi_in(prev_ff: bool, b: &[u8]) -> Option<usize> {
    if prev_ff && b.first() == Some(&0xD8) {
        return Some(0);
    }
    b.windows(2).position(|w| w == [0xFF, 0xD8]).map(|i| i + 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small real JPEG, encoded by `image`.
    pub(crate) fn jpeg(seed: u8, w: u32, h: u32) -> Vec<u8> {
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        let mut out = Vec::new();
        crate::encode::rgb_to_jpeg(&rgb, w, h, 90, &mut out).unwrap();
        out
    }

    fn split(stream: &[u8], chunk: usize, max: usize) -> (Vec<Vec<u8>>, SplitStats) {
        let mut s = JpegSplitter::new(max);
        let mut out = Vec::new();
        for c in stream.chunks(chunk.max(1)) {
            s.push(c);
            while let Some(f) = s.pop() {
                out.push(f);
            }
        }
        s.finish();
        (out, s.stats())
    }

    #[test]
    fn an_exif_thumbnail_inside_app1_does_not_end_the_frame() {
        let thumb = jpeg(3, 8, 8);
        let main = jpeg(5, 32, 16);
        // SOI, APP1 holding a whole JPEG, then the rest of the main image.
        let mut framed = vec![0xFF, 0xD8, 0xFF, 0xE1];
        framed.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        framed.extend_from_slice(&thumb);
        framed.extend_from_slice(&main[2..]);
        let (frames, st) = split(&framed, 7, 1 << 20);
        assert_eq!(frames, vec![framed.clone()]);
        assert_eq!(st.truncated, 0);
        image::load_from_memory(&frames[0]).unwrap();
    }

    #[test]
    fn restart_markers_and_stuffed_bytes_stay_inside_the_frame() {
        // Entropy data with FF00 and RST markers, built by hand.
        let f = [
            0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02, 0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD3,
            0x33, 0xFF, 0xFF, 0x00, 0xFF, 0xD9,
        ];
        let mut stream = f.to_vec();
        stream.extend_from_slice(&f);
        let (frames, st) = split(&stream, 1, 1024);
        assert_eq!(frames, vec![f.to_vec(), f.to_vec()]);
        assert_eq!(st.garbage_bytes, 0);
    }

    use proptest::prelude::*;

    fn frames_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec((1u8..255, 8u32..48, 8u32..40), 1..6)
            .prop_map(|v| v.into_iter().map(|(s, w, h)| jpeg(s, w, h)).collect())
    }

    /// Garbage as a pipe really carries it: text and binary, but no `FF` (which could
    /// form a false SOI; that case has its own test).
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..0xFF, 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_chunking_yields_the_same_frames(
            frames in frames_strategy(),
            gaps in prop::collection::vec(garbage(), 6),
            chunk in 1usize..600,
        ) {
            let mut stream = Vec::new();
            for (f, g) in frames.iter().zip(&gaps) {
                stream.extend_from_slice(g);
                stream.extend_from_slice(f);
            }
            stream.extend_from_slice(&gaps[5]);
            let (out, st) = split(&stream, chunk, 1 << 20);
            prop_assert_eq!(&out, &frames);
            prop_assert_eq!(st.truncated, 0);
            let g: usize = gaps[..frames.len()].iter().map(Vec::len).sum::<usize>() + gaps[5].len();
            prop_assert_eq!(st.garbage_bytes, g as u64);
        }

        #[test]
        fn a_truncated_frame_is_dropped_and_the_next_ones_survive(
            frames in frames_strategy(),
            cut_at in 0.0f64..1.0,
            victim in 0usize..6,
            chunk in 1usize..600,
        ) {
            let victim = victim % frames.len();
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                if i == victim {
                    let cut = 2 + ((f.len() - 3) as f64 * cut_at) as usize;
                    stream.extend_from_slice(&f[..cut]);
                }
                stream.extend_from_slice(f);
                expected.push(f.clone());
            }
            let (out, st) = split(&stream, chunk, 1 << 20);
            prop_assert_eq!(&out, &expected);
            prop_assert_eq!(st.truncated, 1);
        }

        #[test]
        fn oversize_frames_are_skipped_without_losing_the_rest(
            frames in frames_strategy(),
            chunk in 1usize..600,
        ) {
            let max = frames.iter().map(Vec::len).sum::<usize>() / frames.len();
            let stream: Vec<u8> = frames.concat();
            let (out, st) = split(&stream, chunk, max);
            let expected: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() <= max).cloned().collect();
            prop_assert_eq!(&out, &expected);
            prop_assert_eq!(st.oversize as usize, frames.len() - expected.len());
        }
    }

    #[test]
    fn a_false_soi_in_garbage_does_not_cost_the_next_frame() {
        let f = jpeg(9, 16, 16);
        let mut stream = b"banner \xFF\xD8 then text".to_vec();
        stream.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00]);
        stream.extend_from_slice(&f);
        stream.extend_from_slice(&f);
        let (out, _) = split(&stream, 5, 1 << 20);
        assert_eq!(out, vec![f.clone(), f]);
    }

    #[test]
    fn the_end_of_the_stream_inside_a_frame_counts_as_truncated() {
        let f = jpeg(9, 16, 16);
        let mut stream = f.clone();
        stream.extend_from_slice(&f[..f.len() / 2]);
        let (out, st) = split(&stream, 64, 1 << 20);
        assert_eq!(out, vec![f]);
        assert_eq!(st.truncated, 1);
    }
}
#[cfg(test)]
mod every_cut {
    /// Deterministic companion of the property test: a frame cut at *every* byte offset,
    /// then a whole frame, yields exactly the whole frame.
    #[test]
    fn a_frame_cut_at_any_offset_never_costs_the_next_one() {
        for (s, w, h) in [(1u8, 9u32, 29u32), (7, 20, 20), (3, 40, 30)] {
            let f = super::tests::jpeg(s, w, h);
            for cut in 1..f.len() - 1 {
                let mut stream = f[..cut].to_vec();
                stream.extend_from_slice(&f);
                let mut sp = super::JpegSplitter::new(1 << 20);
                sp.push(&stream);
                sp.finish();
                let mut out = vec![];
                while let Some(x) = sp.pop() {
                    out.push(x);
                }
                assert_eq!(out, vec![f.clone()], "{w}x{h} cut at {cut}");
            }
        }
    }
}
