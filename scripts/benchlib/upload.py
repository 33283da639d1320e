"""Parts 1, 1b and 1c: end to end against the official SDKs, the Nexus sink against the
Picsellia sink, and `edgecap verify` over delivered frames' receipts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from benchlib.common import (
    CHILDREN,
    EDGECAP,
    PICSELLIA,
    PROJECT,
    ROOT,
    ROUNDS,
    SDKS,
    SECRET,
    SMOKE,
    Server,
    UPLOAD_ROUNDS,
    W,
    alternating,
    check,
    free_port,
    log,
    measured,
    peak_rss,
    run_wait4,
    sh,
    size,
)
from benchlib.places import (
    ENV,
    RUNS_ON,
    clear_runs,
    config,
    filesystem,
    folder_bytes,
    fresh,
    journaled_fs,
    jpegs,
    run_dir,
    unmount_journaled,
)


# ---------------------------------------------------------------- 1. upload vs the SDK


def sdk_python(sdk):
    venv = os.path.join(W, "sdk-venv-" + sdk.split("==")[1])
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "installed")
    if not os.path.exists(stamp) or open(stamp).read() != sdk:
        shutil.rmtree(venv, ignore_errors=True)
        sh(sys.executable, "-m", "venv", venv)
        sh(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", sdk)
        with open(stamp, "w") as f:
            f.write(sdk)
    return py


def proc_cpu(pid):
    """user+sys seconds of a running process."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def http_json(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def sdk_round(py, folder, n):
    tmp = run_dir("sdk-tmp")
    # Announcing, as in edgecap's rounds: the same server work on both sides.
    srv = Server(announce=n)
    code, wall, cpu, peak, out, err = run_wait4(
        [py, os.path.join(ROOT, "bench", "sdk_upload.py"), folder, SECRET, PROJECT],
        env={"DATATURE_API_BASE_URL": srv.endpoint, "TMPDIR": tmp})
    s = srv.stop()
    check(code == 0, f"the SDK failed ({code}): {err[-2000:]}")
    check(s["assets"] == n and not s["violations"], f"SDK upload incomplete: {s}")
    return {"wall": wall, "cpu": cpu, "rss": peak}


def edgecap_round(folder, n):
    """The daemon already running (started and idle beforehand, its camera silent), then
    `edgecap enqueue` hands the folder over through the inbox while the daemon queues and
    uploads: wall from the enqueue's start until the last frame is delivered; CPU of both
    processes over that time; the larger peak RSS of the two.

    The daemon's /status is polled (every 10 ms) only once the server has stored all n
    assets, for the last steps (the operation, the metadata, the acknowledgement): each
    call costs the daemon ~0.17 ms of CPU, and polling it from the start added ~2% to
    edgecap's CPU, a cost of the benchmark's own asking that the SDK's side never paid.
    The daemon's CPU is read once the delivered frames' files are deleted too."""
    d = run_dir("edgecap")
    srv = Server(announce=n)
    port = free_port()
    # The smoke's 20 files are less than a batch: without a short batch age every smoke
    # round would wait the default 30 s for it (the full run's 1000 fill whole batches).
    cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint,
                 camera="[camera.source]\ntype = \"command\"\nargv = [\"sleep\", \"3600\"]\n",
                 daemon_extra=f'http_listen = "127.0.0.1:{port}"\n',
                 extra_upload="batch_max_age_secs = 1" if SMOKE else "")
    logf = open(os.path.join(d, "edgecap.log"), "wb")
    p = subprocess.Popen([EDGECAP, "run", "--config", cfg], env={**os.environ, **ENV},
                         stdout=logf, stderr=logf)
    CHILDREN.append(p)
    url = f"http://127.0.0.1:{port}/status"
    try:
        t = time.monotonic()
        while True:
            try:
                st = http_json(url)
                if os.path.isdir(os.path.join(d, "queue", "inbox")):
                    break
            except OSError:
                pass
            check(time.monotonic() - t < 60, "daemon did not start")
            time.sleep(0.05)
        base = st["counters"].get("uploaded", 0)
        cpu0 = proc_cpu(p.pid)
        t0 = time.monotonic()
        enq_rss = os.path.join(d, "enqueue.rss")
        e = subprocess.Popen(measured([EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0",
                                       folder], enq_rss),
                             env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        enq = None
        while True:
            if enq is None:
                pid, status, ru = os.wait4(e.pid, os.WNOHANG)
                if pid:
                    enq = (os.waitstatus_to_exitcode(status), ru)
                    e.returncode = enq[0]
                    enq_wall = time.monotonic() - t0
            if enq is not None and srv.announced.is_set():
                st = http_json(url)
                if st["counters"].get("uploaded", 0) - base >= n:
                    break
            check(time.monotonic() - t0 < 300,
                  f"the hand-over did not deliver: {http_json(url)['counters']}")
            time.sleep(0.01)
        wall = time.monotonic() - t0
        # Delivered is reported once the index holds it; the delivered frames' files are
        # deleted after that. The CPU is read once they are gone, so that it counts all
        # of the daemon's work, as the SDK's counts all of its own.
        spool = os.path.join(d, "queue", "spool")
        while os.listdir(spool):
            check(time.monotonic() - t0 < 300, "the delivered frames' files were not deleted")
            time.sleep(0.01)
        cpu = proc_cpu(p.pid) - cpu0 + enq[1].ru_utime + enq[1].ru_stime
        # The daemon's VmHWM is its own (the mm made by exec); the enqueue's via `time`.
        rss = max(proc_hwm(p.pid), peak_rss(enq_rss))
        check(enq[0] == 0, f"enqueue failed ({enq[0]}): {e.stderr.read()[-2000:]}")
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    s = srv.stop()
    check(s["assets"] >= n and not s["violations"], f"edgecap upload incomplete: {s}")
    return {"wall": wall, "cpu": cpu, "rss": rss, "enqueue_wall": enq_wall,
            "enqueue_cpu": enq[1].ru_utime + enq[1].ru_stime}


def bench_upload(rows):
    """End to end: the official SDKs against edgecap with a running daemon, one warm-up
    round of every side (not counted), then UPLOAD_ROUNDS rounds, the sides in alternating order,
    every run in a fresh directory; on this machine's disk
    (W) and, when one can be made, on a journaled ext4 like the device's (journaled_fs)."""
    n = size("upload_files")
    folder = os.path.join(W, f"upload-{n}")
    jpegs(folder, n, 1280, 720, 5)
    total = folder_bytes(folder)
    pys = {sdk: sdk_python(sdk) for sdk in SDKS}
    rows["upload"] = []
    places = [W]
    journaled = journaled_fs()
    if journaled and filesystem(W) != filesystem(journaled):
        places.append(journaled)
    try:
        for place in places:
            RUNS_ON[0] = place
            fs = filesystem(place)
            log(f"end to end on {fs}")
            runs = {k: [] for k in ["edgecap"] + SDKS}
            # One round of every side first, not counted: the first run after the build,
            # the venvs' set-up and the files' generation paid for their writes and
            # deletions (a first edgecap round at 0.53 s against 0.41-0.42 at 16:59).
            warm = [["edgecap"] + SDKS]
            for i, order in enumerate(warm + alternating(["edgecap"] + SDKS, UPLOAD_ROUNDS)):
                counted = i >= len(warm)
                for side in order:
                    # Each side starts with nothing dirty in the page cache: the SDKs
                    # leave their temporary copy of every file (~110 MB) unwritten, and
                    # edgecap's `syncfs` would otherwise write it out for them. Twice: on
                    # the journaled image the first sync may only move that data into the
                    # loop device's backing file, dirty on this machine's disk again.
                    os.sync()
                    os.sync()
                    r = (edgecap_round(folder, n) if side == "edgecap"
                         else sdk_round(pys[side], folder, n))
                    if counted:
                        runs[side].append(r)
                    log(f"{side}{'' if counted else ' (warm-up, not counted)'}: "
                        f"{n} files in {r['wall']:.2f} s, CPU {r['cpu']:.2f} s, "
                        f"peak RSS {r['rss'] / 2**20:.1f} MiB"
                        + (f" (enqueue returned after {r['enqueue_wall']:.2f} s, CPU "
                           f"{r['enqueue_cpu']:.2f} s)" if "enqueue_wall" in r else ""))
            clear_runs()
            rows["upload"].append({"files": n, "bytes": total, "runs": runs, "rounds": UPLOAD_ROUNDS,
                                   "fs": fs, "image": place != W})
    finally:
        RUNS_ON[0] = W
        unmount_journaled()


# ---------------------------------------------------------------- 1b. Nexus vs Picsellia


def drain_to(sink, folder, n):
    """Enqueues `folder` and drains it to a fresh fake server of `sink`; the drain's
    (wall, CPU, peak RSS)."""
    d = run_dir(f"sink-{sink}")
    if sink == "nexus":
        srv = Server()
        cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint)
    else:
        # A platform that has processed each data by the time it answers the registration.
        srv = Server(cmd=[PICSELLIA, "--discard-bytes", "--done-at-once"])
        table = (f'sink = "picsellia"\n\n[upload.picsellia]\nhost = "{srv.endpoint}"\n'
                 'api_token_env = "EDGECAP_BENCH_SECRET"\n')
        cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint,
                     sink=table)
    code, _, _, _, out, err = run_wait4(
        [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", folder], env=ENV)
    check(code == 0, f"enqueue failed ({code}): {err[-2000:]}")
    code, wall, cpu, peak, out, err = run_wait4([EDGECAP, "run", "--drain", "--config", cfg],
                                                env=ENV)
    s = srv.stop()
    check(code == 0, f"run --drain to {sink} failed ({code}): {err[-2000:]}")
    got = s.get("assets", s.get("data"))
    check(got == n and not s["violations"] and not s["duplicates"],
          f"{sink} upload incomplete: {s}")
    r = {"wall": wall, "cpu": cpu, "rss": peak}
    if sink == "nexus":
        # As the server counted them: how the drain batched the backlog.
        r["sessions"] = s["sessions"]
    return r


def bench_sinks(rows):
    """The same files drained to the Nexus and to the Picsellia fake, ROUNDS rounds in
    alternating order, fresh directories."""
    n = size("upload_files")
    folder = os.path.join(W, f"upload-{n}")
    jpegs(folder, n, 1280, 720, 5)
    runs = {"nexus": [], "picsellia": []}
    for order in alternating(["nexus", "picsellia"], ROUNDS):
        for sink in order:
            r = drain_to(sink, folder, n)
            runs[sink].append(r)
            log(f"{sink}: drain of {n} in {r['wall']:.2f} s ({n / r['wall']:.0f} frames/s), "
                f"CPU {r['cpu']:.2f} s, peak RSS {r['rss'] / 2**20:.1f} MiB")
    clear_runs()
    rows["sinks"] = {"files": n, "bytes": folder_bytes(folder), "runs": runs}


# ---------------------------------------------------------------- 1c. verify


def bench_verify(rows):
    """Receipts of N delivered frames checked against the fake Nexus server: the receipt
    log's bytes per frame and `edgecap verify`'s wall time (no rate limit, so the figure
    is edgecap's and the server's cost, not the throttle's)."""
    n = size("verify_frames")
    folder = os.path.join(W, f"verify-{n}")
    jpegs(folder, n, 320, 240, 8)
    d = fresh(os.path.join(W, "verify"))
    srv = Server()
    cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint)
    code, _, _, _, out, err = run_wait4(
        [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", folder], env=ENV)
    check(code == 0, f"enqueue failed ({code}): {err[-2000:]}")
    code, _, _, _, out, err = run_wait4([EDGECAP, "run", "--drain", "--config", cfg], env=ENV)
    check(code == 0, f"run --drain failed ({code}): {err[-2000:]}")
    rdir = os.path.join(d, "queue", "receipts")
    rbytes = sum(os.path.getsize(os.path.join(rdir, f)) for f in os.listdir(rdir))
    code, wall, cpu, peak, out, err = run_wait4(
        [EDGECAP, "verify", "--json", "--rate", "1000000", "--config", cfg], env=ENV)
    s = srv.stop()
    check(code == 0, f"verify found gaps or failed ({code}): {out[-1000:]} {err[-1000:]}")
    rep = json.loads(out)
    check(rep["checked"] == n and s["assets"] == n, f"verify checked {rep['checked']} of {n}")
    log(f"verify: {n} receipts ({rbytes / n:.0f} bytes each) checked in {wall:.2f} s "
        f"({n / wall:.0f}/s), CPU {cpu:.2f} s, peak RSS {peak / 2**20:.1f} MiB")
    rows["verify"] = {"frames": n, "receipt_bytes": rbytes, "wall": wall, "cpu": cpu,
                      "rss": peak}
