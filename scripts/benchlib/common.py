"""What every part of scripts/bench uses: the command line and the settings (sizes,
rounds, the SDKs compared), failing a run, measuring a process (peak RSS through GNU
time, wait4), the fake servers as child processes, and the statistics every comparison
prints (min / median / max, alternating order)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
PROJECT = "proj_cd067221d5a6e4007ccbb4afb5966535"
SDKS = ["datature==1.12.2", "datature==1.10.0"]  # the current SDK and the one before
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # every comparison: this many rounds, sides in alternating order
# The end-to-end comparison, whose goals are judged on medians, runs two rounds more: in
# the full run of 2026-11-28 14:06 two journaled rounds in a row were disturbed (every
# side slower, edgecap's enqueue at 3x its CPU), and with 3 rounds two such decide the
# median.
UPLOAD_ROUNDS = ROUNDS + 2
W = os.path.join(ROOT, "target", "bench")
EDGECAP = os.path.join(ROOT, "target", "release", "edgecap")
SERVER = os.path.join(ROOT, "target", "release", "examples", "fake_nexus")
PICSELLIA = os.path.join(ROOT, "target", "release", "examples", "fake_picsellia")
INDEX_MEMORY = os.path.join(ROOT, "target", "release", "examples", "index_memory")
PARTS = ("upload", "sinks", "verify", "queue", "memory", "scale", "link", "cap")


def parse_args(argv):
    """(smoke, only) from the command line; exits with the usage on anything else (an
    unknown word must not start an hour-long full run)."""
    usage = ("usage: scripts/bench [--smoke] [--only " + ",".join(PARTS) + "]\n"
             "  (the parts and what each measures: the docstring of scripts/bench)")
    smoke, only, rest = False, None, list(argv)
    while rest:
        a = rest.pop(0)
        if a == "--smoke":
            smoke = True
        elif a == "--only" and rest:
            only = set(rest.pop(0).split(","))
            unknown = sorted(only - set(PARTS))
            if unknown or not only:
                sys.exit(f"scripts/bench: no part named {', '.join(unknown) or '(none)'}\n{usage}")
        elif a in ("-h", "--help"):
            print(usage)
            sys.exit(0)
        else:
            sys.exit(f"scripts/bench: unknown argument {a!r}\n{usage}")
    return smoke, only


SMOKE, ONLY = parse_args(sys.argv[1:])

SIZES = {
    # part: (smoke, full)
    "upload_files": (20, 1000),
    "scale_frames": ((200, 500), (1000, 10000, 20000, 100000)),
    "queue_frames": (200, 5000),  # ~200 KB each: 1 GB per run, 6 runs per fsync mode
    "memory_frames": (500, 10000),
    "link_frames": (12, 150),  # ~100 KB each: 15 MB, 12 s at 10 Mbit/s
    "verify_frames": (200, 10000),
    "cap_secs": (3, 15),  # the transfer time each cap is measured over
}


def size(name):
    return SIZES[name][0 if SMOKE else 1]


# The scale part's frames: 1280x720 test JPEGs of ~108 KB; the estimate the preflight uses
# before any is made.
SCALE_FRAME_BYTES = 110_000


def need_space(what, need):
    """Fails when the filesystem under W has less than `need` bytes free. A 100k backlog
    and the copy a drain runs on take ~22 GB: a disk that fills mid-run ends the run an
    hour in, and the part would measure edgecap's disk-full handling, not a drain."""
    st = os.statvfs(W)
    free = st.f_bavail * st.f_frsize
    check(free >= need, f"{what} needs {need / 1e9:.1f} GB free under {W}, and only "
                        f"{free / 1e9:.1f} GB are free: free some, or leave the part out "
                        f"with --only")


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


# ---------------------------------------------------------------- measuring processes


def measured(cmd, rss_path):
    """`cmd` run under GNU time, which writes the command's peak RSS (KiB) to `rss_path`.

    Why not the `ru_maxrss` that wait4 gives this script: Linux keeps, across exec, the
    peak RSS of the process before it (here the fork of this Python process), so every
    child's `ru_maxrss` is at least this script's own RSS (`/bin/true` reported 113 MiB
    from a parent holding 100 MiB; edgecap's figures read ~25 MiB, the script's size, in
    the runs until 2026-11-27). `time` forks the command from its own small process."""
    return ["/usr/bin/time", "-f", "%M", "-o", rss_path] + cmd


def peak_rss(rss_path):
    """The peak RSS in bytes that `measured` wrote (the last line: `time` puts a note
    about a signal or an exit status before it)."""
    lines = [l for l in open(rss_path).read().split("\n") if l.strip()]
    return int(lines[-1]) * 1024


def run_wait4(cmd, env=None, ns=None, stdin=None):
    """Runs cmd, returns (exit code, wall s, cpu s, peak RSS bytes, stdout, stderr).
    CPU is the command's (wait4 counts the children `time` waited for); the peak RSS is
    the command's own (`measured`)."""
    rss_path = os.path.join(W, "cmd.rss")
    cmd = measured(cmd, rss_path)
    if ns:
        # `ip netns exec` execs the command, so the rusage is the command's own.
        cmd = ["ip", "netns", "exec", ns] + cmd
    full_env = dict(os.environ, **(env or {}))
    out_path = os.path.join(W, "cmd.out")
    err_path = os.path.join(W, "cmd.err")
    with open(out_path, "wb") as o, open(err_path, "wb") as e:
        t = time.monotonic()
        p = subprocess.Popen(cmd, env=full_env, stdout=o, stderr=e, stdin=stdin)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t
        p.returncode = os.waitstatus_to_exitcode(status)
    return (
        p.returncode,
        wall,
        ru.ru_utime + ru.ru_stime,
        peak_rss(rss_path),
        open(out_path, errors="replace").read(),
        open(err_path, errors="replace").read(),
    )


def rss(pid, field="VmRSS"):
    """A /proc/PID/status memory field in bytes: VmRSS (all resident memory), RssAnon
    (the process's own memory) or RssFile (the program and libraries mapped from disk)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- fake server


CHILDREN = []


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()


class Server:
    """examples/fake_nexus as a child process (optionally inside a network namespace).
    With `announce=n` it says when it has stored n assets (`announced` is set then)."""

    def __init__(self, listen="127.0.0.1:0", ns=None, cmd=None, announce=None):
        cmd = cmd or [SERVER, "--listen", listen, "--discard-bytes"]
        if announce is not None:
            cmd = cmd + ["--announce", str(announce)]
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        CHILDREN.append(self.p)
        line = self.p.stdout.readline()
        check(line.startswith("listening "), f"fake server did not start: {line!r}")
        self.endpoint = line.split()[1]
        self.announced = threading.Event()
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            if line.startswith("assets "):
                self.announced.set()
            else:
                self.lines.append(line)

    def stop(self):
        """Stops the server; returns its summary (assets, bytes, violations...)."""
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=10)
        self.reader.join(timeout=10)
        return json.loads(self.lines[-1].strip())


def spread(vals):
    """(min, median, max)."""
    v = sorted(vals)
    return (v[0], v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2,
            v[-1])


def alternating(sides, rounds):
    """The order of every round: the sides rotated by one each round."""
    return [sides[i % len(sides):] + sides[:i % len(sides)] for i in range(rounds)]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
