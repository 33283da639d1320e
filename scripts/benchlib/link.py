"""Parts 5 and 6: goodput through a tbf-shaped link between two network namespaces this
script creates, and the upload cap's accuracy."""

import os
import subprocess
import sys

from benchlib.common import EDGECAP, SMOKE, Server, W, check, log, run_wait4, sh, size
from benchlib.places import ENV, config, folder_bytes, fresh, jpegs


# ---------------------------------------------------------------- 5. link


NS_C, NS_S = "ecbench-c", "ecbench-s"
IP_C, IP_S = "10.213.7.1", "10.213.7.2"
RATE_MBIT = 10


def netns_up(rate_mbit=RATE_MBIT):
    netns_down()
    sh("ip", "netns", "add", NS_C)
    sh("ip", "netns", "add", NS_S)
    sh("ip", "link", "add", "ecb-c", "netns", NS_C, "type", "veth", "peer", "ecb-s", "netns",
       NS_S)
    for ns, dev, ip in ((NS_C, "ecb-c", IP_C), (NS_S, "ecb-s", IP_S)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # The uplink: edgecap's side sends through a 10 Mbit/s token bucket.
    sh("ip", "netns", "exec", NS_C, "tc", "qdisc", "add", "dev", "ecb-c", "root", "tbf", "rate",
       f"{rate_mbit}mbit", "burst", "32kb", "latency", "100ms")


def netns_down():
    for ns in (NS_C, NS_S):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


TCP_SINK = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); t = time.monotonic(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    n += len(b)
print(n, time.monotonic() - t, flush=True)
"""

TCP_SEND = """
import socket, sys
data = b"\\x5a" * int(sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); s.sendall(data); s.close()
"""


def bench_link(rows):
    n = size("link_frames")
    folder = os.path.join(W, f"link-{n}")
    jpegs(folder, n, 1280, 720, 5)
    total = folder_bytes(folder)
    netns_up()
    try:
        # Baseline: one bare TCP stream of the same bytes over the same link.
        sink = subprocess.Popen(["ip", "netns", "exec", NS_S, sys.executable, "-c", TCP_SINK,
                                 IP_S, "9000"], stdout=subprocess.PIPE, text=True)
        check(sink.stdout.readline().strip() == "ready", "TCP sink did not start")
        sh("ip", "netns", "exec", NS_C, sys.executable, "-c", TCP_SEND, IP_S, "9000", str(total))
        got, secs = sink.stdout.readline().split()
        sink.wait(10)
        check(int(got) == total, f"TCP baseline moved {got} of {total} bytes")
        tcp = total * 8 / float(secs) / 1e6

        d = fresh(os.path.join(W, "link-edgecap"))
        srv = Server(listen=f"{IP_S}:8080", ns=NS_S)
        cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"), srv.endpoint)
        code, *_r, err = run_wait4(
            [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", folder], env=ENV)
        check(code == 0, f"enqueue failed: {err[-2000:]}")
        code, wall, cpu, peak, out, err = run_wait4(
            [EDGECAP, "run", "--drain", "--config", cfg], env=ENV, ns=NS_C)
        s = srv.stop()
        check(code == 0, f"run --drain failed ({code}): {err[-2000:]}")
        check(s["assets"] == n and not s["violations"], f"link upload incomplete: {s}")
        ec = total * 8 / wall / 1e6
        log(f"link: {total} bytes, TCP {tcp:.2f} Mbit/s, edgecap {ec:.2f} Mbit/s "
            f"({wall:.1f} s, whole process)")
        rows["link"] = {"frames": n, "bytes": total, "tcp_mbit": tcp, "edgecap_mbit": ec,
                        "edgecap_wall": wall, "rate_mbit": RATE_MBIT}
    finally:
        netns_down()


# ---------------------------------------------------------------- 6. the upload cap


CAP_LINK_MBIT = 50
CAPS_KBIT = (256, 1000, 5000, 20000)


def bench_cap(rows):
    """max_upload_rate through a 50 Mbit/s tbf link: each cap's goodput over a transfer of
    about cap_secs, less the fixed cost of a drain (start-up, check, session, operation)
    measured on the same link without a cap."""
    secs = size("cap_secs")
    base = os.path.join(W, "cap-frames")
    jpegs(base, 1000 if not SMOKE else 200, 640, 480, 5)
    files = sorted(os.listdir(base))
    avg = folder_bytes(base) / len(files)
    netns_up(CAP_LINK_MBIT)
    try:
        def drain(n, cap_kbit):
            folder = fresh(os.path.join(W, f"cap-in-{cap_kbit}"))
            for f in files[:n]:
                os.link(os.path.join(base, f), os.path.join(folder, f))
            total = folder_bytes(folder)
            d = fresh(os.path.join(W, f"cap-{cap_kbit}"))
            srv = Server(listen=f"{IP_S}:8080", ns=NS_S)
            extra = f'max_upload_rate = "{cap_kbit} kbit/s"\n' if cap_kbit else ""
            cfg = config(os.path.join(d, "edgecap.toml"), os.path.join(d, "queue"),
                         srv.endpoint, extra_upload=extra)
            code, *_r, err = run_wait4(
                [EDGECAP, "enqueue", "--config", cfg, "--camera", "cam0", folder], env=ENV)
            check(code == 0, f"enqueue failed: {err[-2000:]}")
            code, wall, *_r, err = run_wait4([EDGECAP, "run", "--drain", "--config", cfg],
                                            env=ENV, ns=NS_C)
            got = srv.stop()
            check(code == 0 and got["assets"] == n, f"capped drain incomplete: {got} {err[-2000:]}")
            return total, wall

        # The fixed cost: a small uncapped drain, less its bytes at the link's rate.
        total, wall = drain(8, 0)
        fixed = max(0.0, wall - total * 8 / (CAP_LINK_MBIT * 1e6))
        out = []
        for cap in CAPS_KBIT:
            n = max(4, min(len(files), round(cap * 1000 / 8 * secs / avg)))
            total, wall = drain(n, cap)
            goodput = total * 8 / max(wall - fixed, 1e-3) / 1000
            out.append({"cap_kbit": cap, "frames": n, "bytes": total, "wall": wall,
                        "goodput_kbit": goodput, "error": goodput / cap - 1})
            log(f"cap {cap} kbit/s: {total} bytes in {wall:.2f} s (fixed {fixed:.2f} s): "
                f"{goodput:.0f} kbit/s ({(goodput / cap - 1) * 100:+.1f}%)")
        rows["cap"] = {"link_mbit": CAP_LINK_MBIT, "fixed": fixed, "caps": out}
    finally:
        netns_down()
