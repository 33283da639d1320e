//! Per-frame cost of the camera processing stage on one 1080p frame: JPEG passthrough
//! (what a camera in MJPEG mode costs with no transform), decode + re-encode (any
//! transform), and decode and encode on their own. Run by `scripts/bench-encode`, which
//! compares the encoder with libjpeg-turbo's `cjpeg` in the same run and writes the
//! figures into BENCHMARKS.md.
//!
//! usage: cargo bench --bench encode -- FRAME.jpg QUALITY

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgecap::capture::Pixels;
use edgecap::capture::process::{Processed, Processor};
use edgecap::encode;

/// Median wall time of `f` over enough runs to fill about `budget`.
fn median(budget: Duration, mut f: impl FnMut()) -> (Duration, usize) {
    f(); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 5 {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort_unstable();
    (times[times.len() / 2], times.len())
}

fn processor(transform: &str) -> Processor {
    let cfg = edgecap::config::parse(&format!(
        "[[camera]]\nname = \"b\"\n[camera.source]\ntype = \"test_pattern\"\n[camera.transform]\n{transform}\n\
         [upload]\nsink = \"directory\"\npath = \"/tmp\"\n"
    ))
    .unwrap_or_else(|p| panic!("{p:?}"));
    Processor::new(&cfg.cameras[0])
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [path, quality] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench encode -- FRAME.jpg QUALITY");
        std::process::exit(2);
    };
    let quality: u8 = quality.parse().expect("quality 1-100");
    let jpeg = std::fs::read(path).expect("read the frame");
    let budget = Duration::from_secs(3);

    let mut pass = processor("");
    let (t_pass, n_pass) = median(budget, || {
        let out = pass.process(Pixels::Jpeg(jpeg.clone()), Instant::now());
        assert!(matches!(out, Ok(Processed::Keep(ref r)) if r.jpeg.len() == jpeg.len()));
        black_box(out).ok();
    });
    // The clone alone, to subtract from passthrough (the daemon moves, never copies).
    let (t_clone, _) = median(budget, || {
        black_box(jpeg.clone());
    });
    let mut reenc = processor(&format!("jpeg_quality = {quality}"));
    let (t_reenc, n_reenc) = median(budget, || {
        black_box(reenc.process(Pixels::Jpeg(jpeg.clone()), Instant::now())).ok();
    });
    let rgb = encode::decode_jpeg(&jpeg).expect("decodes");
    let (w, h) = rgb.dimensions();
    let (t_dec, n_dec) = median(budget, || {
        black_box(encode::decode_jpeg(black_box(&jpeg))).ok();
    });
    let mut out = Vec::new();
    let (t_enc, n_enc) = median(budget, || {
        encode::rgb_to_jpeg(rgb.as_raw(), w, h, quality, &mut out).ok();
        black_box(&out);
    });
    let pass_ns = t_pass.saturating_sub(t_clone).as_nanos();
    // Machine-readable lines for the script.
    println!("frame {w}x{h} {} bytes", jpeg.len());
    println!("passthrough_ns {pass_ns} runs {n_pass}");
    println!("reencode_ns {} runs {n_reenc}", t_reenc.as_nanos());
    println!("decode_ns {} runs {n_dec}", t_dec.as_nanos());
    println!(
        "encode_ns {} runs {n_enc} bytes {}",
        t_enc.as_nanos(),
        out.len()
    );
}
