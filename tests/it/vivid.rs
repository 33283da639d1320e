//! A real V4L2 device: Debian's kernel with the `vivid` virtual camera, booted under qemu
//! (TCG) by `scripts/vivid-vm`, with this build of edgecap inside. In the VM edgecap lists
//! the camera, then captures from `/dev/video0` to the directory sink twice: through nokhwa
//! (after setting a whole-number frame interval: vivid's default of 2/25 s is one nokhwa
//! refuses) and through the direct v4l reader. The frames come back over the serial
//! console in base64 and are checked here.
//!
//! Needs qemu-system-x86_64 and the kernel/busybox packages that `scripts/test` installs
//! and downloads. `EDGECAP_SKIP_VM=1` skips it explicitly (for machines without them);
//! CI never sets it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine;

fn camera_config(tag: &str) -> String {
    format!(
        "[device]\nid = \"vm\"\n[daemon]\nstop_after_frames = 6\ndrain_on_stop_secs = 20\nsummary_interval_secs = 0\n\
         [[camera]]\nname = \"vivid-{tag}\"\nfps = 5.0\ngroups = [\"vm-{tag}\"]\n\
         [camera.source]\ntype = \"v4l2\"\ndevice = \"/dev/video0\"\nwidth = 640\nheight = 360\n\
         [camera.metadata]\nreader = \"{tag}\"\n\
         [queue]\ndir = \"/tmp/q-{tag}\"\ncommit_window_ms = 50\n\
         [upload]\nsink = \"directory\"\npath = \"/tmp/out-{tag}\"\nbatch_max_age_secs = 1\n"
    )
}

const RUN_SH: &str = r#"export NO_COLOR=1
edgecap cameras
echo "=== cameras exit $?"
edgecap run --config /payload/nokhwa.toml
echo "=== run nokhwa exit $?"
EDGECAP_V4L2_DIRECT=1 edgecap run --config /payload/direct.toml
echo "=== run direct exit $?"
# A camera that disappears: vivid's Disconnect control acts like an unplugged USB cable
# until every handle is closed. A test-pattern camera runs beside it.
edgecap run --config /payload/disconnect.toml > /tmp/dc.log 2>&1 &
pid=$!
sleep 5
/payload/vivid_disconnect /dev/video0
echo "=== disconnect exit $?"
sleep 8
kill -TERM $pid
wait $pid
echo "=== run disconnect exit $?"
sed 's/^/=== dclog /' /tmp/dc.log
for f in /tmp/out-dc/*.json; do echo "=== dcjson $(tr -d '\n' < "$f")"; done
for f in /tmp/out-nokhwa/*.jpg /tmp/out-direct/*.jpg; do
  echo "=== file $f"; base64 "$f"; echo "=== end"
  echo "=== json $(tr -d '\n' < "$f.json")"
done
"#;

const DISCONNECT_CONFIG: &str = "[device]\nid = \"vm\"\n[daemon]\nsummary_interval_secs = 0\n\
[[camera]]\nname = \"vivid-dc\"\nfps = 5.0\n[camera.source]\ntype = \"v4l2\"\ndevice = \"vivid\"\nwidth = 320\nheight = 180\nframe_timeout_secs = 3\n\
[[camera]]\nname = \"pat\"\nfps = 5.0\n[camera.source]\ntype = \"test_pattern\"\nwidth = 64\nheight = 48\n\
[queue]\ndir = \"/tmp/q-dc\"\ncommit_window_ms = 50\n[upload]\nsink = \"directory\"\npath = \"/tmp/out-dc\"\nbatch_max_age_secs = 1\n";

#[test]
fn captures_from_a_real_v4l2_device_in_a_vm() {
    if std::env::var_os("EDGECAP_SKIP_VM").is_some_and(|v| v == "1") {
        eprintln!("EDGECAP_SKIP_VM=1: the vivid VM test is skipped");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/scripts/vivid-vm");
    let prep = Command::new(&script).arg("prepare").status().unwrap();
    assert!(
        prep.success(),
        "scripts/vivid-vm prepare failed (needs apt lists; scripts/test sets the machine up)"
    );
    let payload = tempfile::tempdir().unwrap();
    std::fs::write(payload.path().join("run.sh"), RUN_SH).unwrap();
    for tag in ["nokhwa", "direct"] {
        std::fs::write(
            payload.path().join(format!("{tag}.toml")),
            camera_config(tag),
        )
        .unwrap();
    }
    std::fs::write(payload.path().join("disconnect.toml"), DISCONNECT_CONFIG).unwrap();
    // The helper example is built by `cargo test` next to the binary under test.
    let helper = crate::support::bin()
        .parent()
        .unwrap()
        .join("examples/vivid_disconnect");
    assert!(
        helper.exists(),
        "{} is missing (cargo test builds examples)",
        helper.display()
    );
    std::fs::copy(&helper, payload.path().join("vivid_disconnect")).unwrap();
    let out = Command::new(&script)
        .arg("run")
        .arg(crate::support::bin())
        .arg(payload.path())
        .output()
        .expect("scripts/vivid-vm run (is qemu-system-x86 installed?)");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let shown = || {
        console
            .lines()
            .filter(|l| {
                !l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        console.contains("=== VM done"),
        "the VM did not finish (exit {:?}):\n{}\n{}",
        out.status,
        shown(),
        String::from_utf8_lossy(&out.stderr)
    );
    // `edgecap cameras` saw the device and its formats.
    assert!(console.contains("/dev/video0  \"vivid\""), "{}", shown());
    assert!(
        console.contains("YUYV") && console.contains("640x360"),
        "{}",
        shown()
    );
    assert!(console.contains("=== cameras exit 0"), "{}", shown());
    for tag in ["nokhwa", "direct"] {
        assert!(
            console.contains(&format!("=== run {tag} exit 0")),
            "{}",
            shown()
        );
    }
    assert!(console.contains("reader=\"nokhwa\""), "{}", shown());
    assert!(console.contains("reader=\"v4l direct\""), "{}", shown());

    // Frames and their metadata, from the console.
    let mut frames: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut metas: Vec<serde_json::Value> = Vec::new();
    let mut lines = console.lines();
    while let Some(l) = lines.next() {
        if let Some(path) = l.strip_prefix("=== file ") {
            let b64: String = lines
                .by_ref()
                .take_while(|l| *l != "=== end")
                .collect::<Vec<_>>()
                .concat();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap_or_else(|e| panic!("{path}: bad base64 on the console: {e}"));
            frames.insert(path.to_string(), bytes);
        } else if let Some(json) = l.strip_prefix("=== json ") {
            metas.push(serde_json::from_str(json).unwrap());
        }
    }
    for tag in ["nokhwa", "direct"] {
        let mine: Vec<_> = frames
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("/tmp/out-{tag}/")))
            .collect();
        assert!(mine.len() >= 5, "{tag}: {} frames came back", mine.len());
        for (path, bytes) in mine {
            let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
                .unwrap_or_else(|e| panic!("{path} is not a valid JPEG: {e}"));
            assert_eq!((img.width(), img.height()), (640, 360), "{path}");
            // vivid draws a colour-bar test pattern: the frame is not blank.
            let rgb = img.to_rgb8();
            let distinct: std::collections::HashSet<[u8; 3]> =
                rgb.pixels().step_by(97).map(|p| p.0).collect();
            assert!(distinct.len() > 8, "{path} looks blank");
        }
        let m: Vec<_> = metas
            .iter()
            .filter(|m| m["customMetadata"]["reader"] == tag)
            .collect();
        assert!(m.len() >= 5, "{tag}: {} metadata files", m.len());
        for m in m {
            assert_eq!(m["camera"], format!("vivid-{tag}"));
            assert_eq!(m["groups"], serde_json::json!([format!("vm-{tag}")]));
            assert_eq!(m["customMetadata"]["width"], 640);
            assert_eq!(m["customMetadata"]["height"], 360);
        }
    }

    check_disconnect(&console, &shown());
}

/// The unplugged camera was re-opened with backoff, logged once per state change, and
/// the other camera kept capturing meanwhile.
fn check_disconnect(console: &str, shown: &str) {
    assert!(console.contains("=== disconnect exit 0"), "{shown}");
    assert!(console.contains("=== run disconnect exit 0"), "{shown}");
    let log: Vec<&str> = console
        .lines()
        .filter_map(|l| l.strip_prefix("=== dclog "))
        .collect();
    let count = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("camera source failed"), 1, "{}", log.join("\n"));
    assert!(
        count("cannot open camera source") <= 1,
        "{}",
        log.join("\n")
    );
    assert_eq!(count("camera source is back"), 1, "{}", log.join("\n"));
    assert_eq!(
        count("v4l2 camera opened"),
        2,
        "opened, then re-opened: {}",
        log.join("\n")
    );
    // tracing's timestamp: 2026-11-23T07:15:17.658355Z; compare to the millisecond.
    let back_at = log
        .iter()
        .find(|l| l.contains("camera source is back"))
        .map(|l| l[..23].to_string())
        .unwrap();
    let metas: Vec<serde_json::Value> = console
        .lines()
        .filter_map(|l| l.strip_prefix("=== dcjson "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let times = |cam: &str| -> Vec<String> {
        let mut t: Vec<String> = metas
            .iter()
            .filter(|m| m["camera"] == cam)
            .map(|m| m["customMetadata"]["capture_time"].as_str().unwrap()[..23].to_string())
            .collect();
        t.sort();
        t
    };
    let vivid = times("vivid-dc");
    let before = vivid.iter().filter(|t| **t < back_at).count();
    let after = vivid.len() - before;
    assert!(
        before >= 5 && after >= 5,
        "vivid frames before the reconnect {before}, after {after}"
    );
    // The test pattern never paused: no gap over 2 s between its frames.
    let pat: Vec<i64> = {
        let mut v: Vec<i64> = metas
            .iter()
            .filter(|m| m["camera"] == "pat")
            .map(|m| m["customMetadata"]["capture_time_ms"].as_i64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert!(pat.len() >= 30, "{} test-pattern frames", pat.len());
    let gap = pat.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < 2000, "the other camera stalled for {gap} ms");
}
