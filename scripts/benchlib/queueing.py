"""Parts 2 and 3: capture to the durable queue (benches/queue.rs) against plain files with
the same fsync pattern."""

import json
import os
import subprocess

from benchlib.common import ROUNDS, W, alternating, check, log, sh, size
from benchlib.places import clear_runs, filesystem, run_dir


# ---------------------------------------------------------------- 2+3. capture -> queue


def bench_queue(rows):
    n = size("queue_frames")
    frame = os.path.join(W, "frame-1080p.jpg")
    sh("ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
       "testsrc2=size=1920x1080:rate=1", "-vf", "noise=alls=9:allf=t", "-frames:v", "1",
       "-q:v", "5", frame)
    sh("cargo", "build", "--release", "--locked", "--bench", "queue", stdout=subprocess.DEVNULL,
       stderr=subprocess.DEVNULL)
    out = []
    for mode in ("grouped", "per_frame"):
        for order in alternating(["edgecap", "baseline"], ROUNDS):
            for what in order:
                r = subprocess.run(
                    ["cargo", "bench", "--locked", "--bench", "queue", "--", frame,
                     run_dir(f"queue-{mode}-{what}"), str(n), mode, what],
                    check=True, capture_output=True, text=True)
                line = json.loads(r.stdout.strip().splitlines()[-1])
                check(line["frames"] == n, f"queue bench committed {line['frames']} of {n}")
                log(f"queue {mode} {what}: {line['frames_per_sec']:.0f} frames/s, "
                    f"{line['cpu_us_per_frame']:.0f} us CPU/frame, "
                    f"write amplification {line['write_amplification']:.3f}")
                out.append(line)
        clear_runs()
    rows["queue"] = out
    rows["queue_fs"] = filesystem(W)
