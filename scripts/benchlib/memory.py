"""Part 4: the daemon's RSS with a backlog sitting and draining, and the scale figures
(start-up and drain RSS for 1k to 100k frames)."""

import json
import os
import shutil
import signal
import subprocess
import time

from benchlib.common import (
    CHILDREN,
    EDGECAP,
    INDEX_MEMORY,
    ROUNDS,
    SMOKE,
    Server,
    W,
    check,
    free_port,
    log,
    need_space,
    rss,
    run_wait4,
    size,
)
from benchlib.places import ENV, clear_runs, config, fresh, jpegs, run_dir


# ---------------------------------------------------------------- 4. memory


def wait_status(path, pred, timeout, pid, samples):
    """Samples the daemon's RSS every 100 ms until pred(status) or timeout."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        r = rss(pid)
        if r:
            samples.append(r)
        try:
            st = json.load(open(path))
            if pred(st):
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return None


def daemon_rss(cfg, status, sit_secs, server_listen=None, backlog=0):
    """Starts `edgecap run` (its server down), samples RSS for sit_secs; then starts the
    server and samples until the backlog is drained. Returns (sitting, draining, drain s,
    summary)."""
    logf = open(os.path.join(os.path.dirname(cfg), "edgecap.log"), "wb")
    p = subprocess.Popen([EDGECAP, "run", "--config", cfg],
                         env={**os.environ, **ENV, "RUST_LOG": "info"},
                         stdout=logf, stderr=logf)
    CHILDREN.append(p)
    sitting, draining = [], []
    try:
        check(wait_status(status, lambda s: s.get("state") == "running", 60, p.pid, []),
              "daemon did not start")
        t = time.monotonic()
        while time.monotonic() - t < sit_secs:
            r = rss(p.pid)
            if r:
                sitting.append(r)
            time.sleep(0.1)
        summary, drain = None, None
        if server_listen:
            srv = Server(listen=server_listen)
            t = time.monotonic()
            # Drained: every frame of the backlog uploaded (the camera's own frames go on
            # with the next batch, when it is full or old enough).
            st = wait_status(status, lambda s: s.get("counters", {}).get("uploaded", 0) >= backlog, 600, p.pid,
                             draining)
            drain = time.monotonic() - t
            check(st is not None, "the backlog did not drain")
            p.send_signal(signal.SIGTERM)
            p.wait(30)
            summary = srv.stop()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
    return sitting, draining, drain, summary


def bench_memory(rows):
    n = size("memory_frames")
    per = min(n, 1000)
    folder = os.path.join(W, f"upload-{per}")
    jpegs(folder, per, 1280, 720, 5)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    sit = 5 if SMOKE else 20

    # Baseline: the same daemon and camera, the queue empty, the server up.
    d = fresh(os.path.join(W, "memory-empty"))
    srv = Server()
    cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint)
    empty, _, _, _ = daemon_rss(cfg, os.path.join(d, "status.json"), sit)
    srv.stop()

    d = fresh(os.path.join(W, "memory-backlog"))
    cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"),
                 f"http://{listen}", extra_upload="retry_max_secs = 2\n")
    for _ in range(n // per):
        # The same files again and again: duplicates on purpose.
        code, *_rest, err = run_wait4(
            [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", "--allow-duplicates",
             folder], env=ENV)
        check(code == 0, f"enqueue failed: {err[-2000:]}")
    sitting, draining, drain, s = daemon_rss(cfg, os.path.join(d, "status.json"), sit, listen,
                                             backlog=n)
    check(s["assets"] >= n and not s["violations"], f"memory drain incomplete: {s}")
    mib = lambda v: v / 2**20
    log(f"memory: empty {mib(max(empty)):.1f} MiB, backlog {n} sitting {mib(max(sitting)):.1f} "
        f"MiB, draining peak {mib(max(draining)):.1f} MiB ({drain:.1f} s)")
    rows["memory"] = {"frames": n, "empty_max": max(empty), "sitting_max": max(sitting),
                      "sitting_median": sorted(sitting)[len(sitting) // 2],
                      "draining_max": max(draining), "drain_secs": drain,
                      "delivered": s["assets"], "sit_secs": sit}


def scale_run(n, folder, per):
    """One backlog of n frames, enqueued once and drained ROUNDS times, each drain on a
    copy of the queue in a fresh directory against a fresh server: a drain's peak moves by
    a few MiB from run to run on a shared host, so one drain is a draw, not a figure. The
    last drain's (the original's) start-up and time series are kept; every drain's peaks
    are listed."""
    # The backlog and one copy of it at a time, and 1 GiB for everything else.
    frame = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / per
    need_space(f"the scale part's {n}-frame backlog and its copy", int(2 * n * frame) + 2**30)
    d = run_dir(f"scale-{n}")
    # The session limit time-scaled (15 per 10 s instead of per 300 s) so that a 100k
    # backlog drains in a minute instead of half an hour; everything else is the default.
    # And room for the backlog: the default 2 GB budget holds ~18,000 frames of 108 KB.
    # The endpoint is set per drain (each has its own server).
    cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), "http://ENDPOINT",
                 extra_upload="session_rate_window_secs = 10\n",
                 queue_extra="max_bytes = 20000000000\n")
    for _ in range(n // per):
        code, *_rest, err = run_wait4(
            [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", "--allow-duplicates",
             folder], env=ENV)
        check(code == 0, f"enqueue failed: {err[-2000:]}")
    drains = []
    for i in range(ROUNDS):
        # Every drain but the last on a copy; the last on the original.
        at = d
        if i < ROUNDS - 1:
            at = run_dir(f"scale-{n}-copy{i}")
            shutil.copytree(d, at, symlinks=True, dirs_exist_ok=True)
        srv = Server()
        c = os.path.join(at, "edgecap.toml")
        with open(c) as f:
            text = f.read().replace(d, at).replace("http://ENDPOINT", srv.endpoint)
        with open(c, "w") as f:
            f.write(text)
        drains.append(scale_drain(c, n, srv))
        if at != d:
            shutil.rmtree(at, ignore_errors=True)
    # Start-up and the time series from the drain of the original: the copies' files
    # were written in the directory's order, not the queue's, which slows the open's
    # header reads (100k on 2026-11-27: 3.86 s from a copy, 2.10 s from the original).
    original = drains[-1]
    peaks = [r["peak"] for r in drains]
    return {**original, "peaks": peaks, "peak": max(peaks),
            "peak_anon": max(r["peak_anon"] for r in drains),
            "peak_file": max(r["peak_file"] for r in drains)}


def scale_drain(cfg, n, srv):
    """`run --drain` of the queue of `cfg` against `srv`: start-up (process start to "queue
    open and reconciled") and its RSS, then the drain's RSS every 100 ms until it exits."""
    import threading
    t0 = time.monotonic()
    p = subprocess.Popen([EDGECAP, "run", "--drain", "--config", cfg],
                         env={**os.environ, **ENV, "RUST_LOG": "info"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    CHILDREN.append(p)
    opened = []

    def watch():
        for line in p.stderr:
            if not opened and "queue open and reconciled" in line:
                opened.append(time.monotonic() - t0)

    th = threading.Thread(target=watch)
    th.start()
    samples, open_rss, anon, files = [], None, 0, 0
    while p.poll() is None:
        r = rss(p.pid)
        if r:
            samples.append((time.monotonic() - t0, r))
            if opened and open_rss is None:
                open_rss = r
            if opened:
                anon = max(anon, rss(p.pid, "RssAnon") or 0)
                files = max(files, rss(p.pid, "RssFile") or 0)
        time.sleep(0.1)
    th.join()
    s = srv.stop()
    check(p.returncode == 0, f"run --drain of {n} failed ({p.returncode})")
    check(s["puts"] >= n and not s["violations"], f"scale drain incomplete: {s}")
    check(opened, "no 'queue open and reconciled' line")
    start = opened[0]
    drain = [(t, r) for t, r in samples if t >= start] or samples
    end = drain[-1][0]
    # RSS at each tenth of the drain's time.
    tenths = []
    for i in range(1, 11):
        at = start + (end - start) * i / 10
        tenths.append(max((r for t, r in drain if t <= at), default=0))
    return {"frames": n, "startup": start, "open_rss": open_rss or drain[0][1],
            "drain": end - start, "peak": max(r for _, r in drain), "tenths": tenths,
            "peak_anon": anon, "peak_file": files,
            "delivered": s["assets"]}


def bench_scale(rows):
    """Start-up and drain memory against the backlog: 1k, 10k, 20k, 100k frames."""
    out = []
    for n in size("scale_frames"):
        per = min(n, 1000)
        folder = os.path.join(W, f"upload-{per}")
        jpegs(folder, per, 1280, 720, 5)
        r = scale_run(n, folder, per)
        log(f"scale {n}: start-up {r['startup']:.2f} s at {r['open_rss'] / 2**20:.1f} MiB, "
            f"drain {r['drain']:.1f} s, peak RSS of {len(r['peaks'])} drains "
            + ", ".join(f"{p / 2**20:.1f}" for p in r["peaks"]) + " MiB")
        out.append(r)
        clear_runs()
    rows["scale"] = out
    # What sled keeps after a scan of as many entries as the largest backlog, against its
    # page-cache capacity (the reconcile reads every entry once).
    n = max(size("scale_frames"))
    d = run_dir("index-memory")
    p = subprocess.run([INDEX_MEMORY, "--entries", str(n), "--dir", d], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"index_memory failed: {p.stderr[-2000:]}")
    rows["index_memory"] = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    for c in rows["index_memory"]:
        log(f"index memory: {c['entries']} entries of {c['value_bytes']} B, cache "
            f"{c['cache_bytes'] // 1024} KiB, read by {c['read']}: "
            f"+{(c['scanned_kib'] - c['opened_kib']) / 1024:.1f} MiB after a scan of {c['ms']} ms")
    clear_runs()
