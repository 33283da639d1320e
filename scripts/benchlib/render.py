"""The report: the BENCHMARKS.md section drawn from a run's figures, with its goals table."""

import collections
import os

from report import machine, replace_section
from benchlib.common import PARTS, ROOT, ROUNDS, SDKS, spread


# The keys of `rows` that say which part wrote which keys, and when and on which commit
# each part ran (a full run's parts share one stamp; `--only` replaces some).
KEYS, STAMPS = "_keys", "_runs"


# ---------------------------------------------------------------- report


def render(rows):
    mib = lambda v: f"{v / 2**20:.1f} MiB"
    # The run most parts come from; parts re-run since with --only are named after it.
    stamps = rows[STAMPS]
    runs = [r for r, _ in collections.Counter(
        (st["date"], st["commit"], st["secs"]) for st in stamps.values()).most_common()]
    date, commit, secs = runs[0]
    o = ["## Whole-process figures: upload vs the SDK, the queue, memory, the link", ""]
    o.append(f"One run of `scripts/bench` on {date} (commit `{commit}`, {secs // 60} min "
             f"{secs % 60} s in all): {machine()}. Release build. The disk is this "
             "machine's virtual disk, not an SD card; the fake server is "
             "`examples/fake_nexus.rs` (the test suite's server as a process; "
             "`examples/fake_picsellia.rs` for the Picsellia sink).")
    for d, c, _ in runs[1:]:
        again = [n for n, st in stamps.items() if (st["date"], st["commit"]) == (d, c)]
        o.append(f"Re-run since with `--only {','.join(again)}` on {d} (commit `{c}`): "
                 f"those parts' figures come from that run, the rest from the one above.")
    o.append("")
    for i, u in enumerate(rows.get("upload", [])):
        runs = u["runs"]
        fmt = lambda t, f: " / ".join(f(x) for x in t)
        title = (f"### 1. End to end: {u['files']} JPEG files ({u['bytes'] / u['files'] / 1000:.0f} KB "
                 "each) to the fake server on 127.0.0.1" if i == 0 else
                 "#### The same on a journaled ext4 (as on the device)")
        where = (f"in a fresh directory on this machine's disk, {u['fs']}" if not u["image"] else
                 f"in a fresh directory on {u['fs']}: a fresh ext4 with a journal, as "
                 "Raspberry Pi OS formats its root, in a sparse image file through a loop "
                 "device. Without a journal (as this machine's disk may be), ext4 checks every "
                 "free inode of the folder's block group whose file was deleted in the last "
                 "60 s (360 s while its inode table block is unwritten) before it takes one "
                 "for a new file, a cost `enqueue` and the spool pay per frame and a device "
                 "does not")
        o += [title, "",
              f"One warm-up round of every side, not counted, then {u['rounds']} rounds, "
              "the three sides in alternating order, each run "
              f"{where}; min / median / max. The SDKs: "
              "`create_upload_session` + `add_bytes` (1.12.2 then sets the metadata through "
              "the bulk endpoint, which it no longer takes per file). edgecap: the daemon "
              "already running and idle; `edgecap enqueue` hands the folder over through "
              "the inbox while the daemon queues (fsync'd) and uploads; the time runs from "
              "the enqueue's start until the daemon reports the last frame delivered (its "
              "`/status` is asked only once the server holds every asset: asking all along "
              "cost the daemon ~2% more CPU); its CPU counts until the delivered frames' "
              "files are deleted, which it does after reporting them. Every "
              "run starts after a `sync`: the SDKs leave a temporary copy of each file "
              "unwritten (~110 MB), which edgecap's `syncfs` would otherwise write out for "
              "them.", "",
              "| | wall (s) | CPU user+sys (s) | peak RSS (MiB) |", "|---|---:|---:|---:|"]
        for side in ["edgecap"] + SDKS:
            r = runs[side]
            label = "edgecap (daemon + `enqueue`)" if side == "edgecap" else f"SDK `{side}`"
            o.append(f"| {label} | {fmt(spread([x['wall'] for x in r]), '{:.2f}'.format)} | "
                     f"{fmt(spread([x['cpu'] for x in r]), '{:.2f}'.format)} | "
                     f"{fmt(spread([x['rss'] / 2**20 for x in r]), '{:.1f}'.format)} |")
        for sdk in SDKS:
            pair = list(zip(runs["edgecap"], runs[sdk]))
            q = {k: spread([e[k] / b[k] for e, b in pair]) for k in ("wall", "cpu", "rss")}
            o.append(f"| **edgecap / `{sdk}`** (per round) | **{fmt(q['wall'], '{:.2f}'.format)}** | "
                     f"**{fmt(q['cpu'], '{:.2f}'.format)}** | **{fmt(q['rss'], '{:.2f}'.format)}** |")
        o += ["", "edgecap's figures include writing and fsync'ing every file once (`enqueue` "
              "writes it into the inbox as a prepared frame, which the daemon adopts into the "
              "durable queue in place) before it is sent; the SDK keeps nothing on failure. "
              "Peak RSS: the process's own, through GNU `time` (`ru_maxrss` read by this "
              "script itself would include the script's size); for edgecap the larger of "
              "the daemon's `VmHWM` and the enqueue's.", ""]
    if "sinks" in rows:
        k = rows["sinks"]
        o += [f"### 1b. Draining {k['files']} queued JPEGs ({k['bytes'] / k['files'] / 1000:.0f} KB "
              "each): Nexus sink vs Picsellia sink", "",
              "`edgecap run --drain` after `enqueue`, to each fake server on 127.0.0.1; "
              f"{ROUNDS} rounds in alternating order, fresh directories; min / median / max. "
              f"Nexus: {nexus_sessions(k)} with `put_concurrency` 4; Picsellia: frame by frame "
              "(object name, form POST, registration), `concurrency` 4, a fake that has "
              "processed each data when it answers.", "",
              "| sink | drain wall (s) | frames/s (median) | CPU user+sys (s) | peak RSS (MiB) |",
              "|---|---:|---:|---:|---:|"]
        for name in ("nexus", "picsellia"):
            rs = k["runs"][name]
            f3 = lambda key, f, d=1: " / ".join(f.format(x / d) for x in spread([r[key] for r in rs]))
            med = spread([r["wall"] for r in rs])[1]
            o.append(f"| {name} | {f3('wall', '{:.2f}')} | {k['files'] / med:.0f} | "
                     f"{f3('cpu', '{:.2f}')} | {f3('rss', '{:.1f}', 2**20)} |")
        o.append("")
    if "verify" in rows:
        v = rows["verify"]
        o += [f"### 1c. `edgecap verify` over {v['frames']} receipts", "",
              f"{v['frames']} frames enqueued and drained to the fake Nexus server, then "
              "`edgecap verify --rate 1000000` (no throttle) against the same server: one "
              "asset lookup per frame, one at a time.", "",
              "| receipt log | verify wall | lookups/s | CPU | peak RSS |",
              "|---:|---:|---:|---:|---:|",
              f"| {v['receipt_bytes'] / v['frames']:.0f} bytes per frame | {v['wall']:.2f} s | "
              f"{v['frames'] / v['wall']:.0f} | {v['cpu']:.2f} s | {mib(v['rss'])} |", "",
              "With the default `--rate 10` the same check takes "
              f"{v['frames'] / 10 / 60:.0f} min: the rate, not edgecap, bounds it.", ""]
    if "queue" in rows:
        q = rows["queue"]
        o += ["### 2–3. Capture → durable queue, per fsync mode", "",
              f"{ROUNDS} rounds per mode, edgecap and the baseline in alternating order, each "
              f"run in a fresh directory on {rows.get('queue_fs', '?')} (nothing deleted "
              "there before it); min / median / max. "
              f"{q[0]['frames']} frames of {q[0]['frame_bytes'] / 1000:.0f} KB (a 1080p "
              f"MJPEG frame) per run, {q[0]['frames'] * q[0]['frame_bytes'] / 1e9:.2f} GB, "
              "through `daemon::commit::run` as fast as a producer thread hands frames over "
              "(`benches/queue.rs`). Baseline: plain files with the same fsync pattern "
              "(write, fdatasync, rename, directory fsync per group or per frame), no "
              "header, metadata or index.", "",
              "| mode | what | frames/s | MB/s | CPU per frame | write amplification | "
              "disk used / live |", "|---|---|---:|---:|---:|---:|---:|"]
        for mode in ("grouped", "per_frame"):
            for what in ("edgecap", "baseline"):
                rs = [r for r in q if r["mode"] == mode and r["what"] == what]
                f3 = lambda k, f: " / ".join(f.format(x) for x in spread([r[k] for r in rs]))
                o.append(f"| {mode} | {what} | {f3('frames_per_sec', '{:.0f}')} | "
                         f"{f3('mb_per_sec', '{:.0f}')} | {f3('cpu_us_per_frame', '{:.0f}')} µs | "
                         f"{f3('write_amplification', '{:.3f}')} | {f3('disk_used_ratio', '{:.3f}')} |")
        o.append("")
        for mode in ("grouped", "per_frame"):
            e = [r for r in q if r["mode"] == mode and r["what"] == "edgecap"]
            b = [r for r in q if r["mode"] == mode and r["what"] == "baseline"]
            lo, med, hi = spread([x["frames_per_sec"] / y["frames_per_sec"] for x, y in zip(e, b)])
            o.append(f"- {mode}: edgecap / plain files, per round: {lo:.2f} / {med:.2f} / "
                     f"{hi:.2f} (min / median / max) of the plain-file rate.")
        o.append("")
    if "memory" in rows:
        m = rows["memory"]
        o += ["### 4. Memory with a backlog", "",
              f"`edgecap run` with one test-pattern camera (640x480, 1 fps), RSS sampled every "
              f"100 ms. Backlog: {m['frames']} frames of ~100 KB enqueued beforehand; the "
              f"server is down for {m['sit_secs']} s, then comes up and the queue drains.", "",
              "| state | RSS |", "|---|---:|",
              f"| baseline: same daemon, empty queue, server up | {mib(m['empty_max'])} |",
              f"| {m['frames']} frames queued, server down (max) | {mib(m['sitting_max'])} |",
              f"| draining {m['frames']} frames (peak; {m['drain_secs']:.1f} s) | "
              f"{mib(m['draining_max'])} |", "",
              f"Goal ≤ 25 MB: sitting {m['sitting_max'] / 1e6:.1f} MB, draining peak "
              f"{m['draining_max'] / 1e6:.1f} MB.", ""]
    if "scale" in rows:
        sc = rows["scale"]
        o += ["### 4b. Memory and start-up against the backlog", "",
              "`edgecap run --drain` with the default config except a time-scaled session "
              "limit (15 sessions per 10 s instead of per 300 s, so that 100k frames drain in "
              "a minute, not half an hour) and `max_bytes` raised to 20 GB (the default 2 GB "
              "holds ~18,000 of these frames); ~108 KB frames. Start-up: process start to the "
              "queue opened and reconciled (every spool header read). RSS sampled every "
              "100 ms; the tenths are the highest RSS up to each tenth of the drain's time. "
              "RSS is the process's own memory (`RssAnon`) plus the program and libraries "
              "mapped from disk (`RssFile`: code, shared and given back under memory "
              "pressure); the highest of each during the drain are given apart. Each "
              "backlog is enqueued once and drained on a copy in a fresh directory "
              f"{ROUNDS} times (the last on the original), each against a fresh server: "
              "the peak of every drain is listed, and the highest of them is the one "
              "judged; start-up, drain time and tenths are those of the drain of the original (the "
              "copies' files were written in directory order, which slows the open's header "
              "reads).", "",
              "| backlog | start-up | RSS at start-up | drain | peak RSS, highest (each drain) | of which own / mapped, highest | RSS at 10% … 100% of the drain (MiB) |",
              "|---:|---:|---:|---:|---:|---:|---|"]
        for r in sc:
            split = (f"{mib(r['peak_anon'])} / {mib(r['peak_file'])}"
                     if r.get("peak_anon") else "–")
            each = ", ".join(f"{p / 2**20:.1f}" for p in r.get("peaks", [r["peak"]]))
            o.append(f"| {r['frames']} | {r['startup']:.2f} s | {mib(r['open_rss'])} | "
                     f"{r['drain']:.1f} s | {mib(r['peak'])} ({each}) | {split} | "
                     + " ".join(f"{t / 2**20:.0f}" if t else "–" for t in r["tenths"]) + " |")
        o.append("")
    if "index_memory" in rows:
        im = rows["index_memory"]
        caches = sorted({c["cache_bytes"] for c in im})
        o += ["What the index (sled 0.34) keeps after reading every entry once, as the "
              "reconcile does (`examples/index_memory.rs`: a tree of "
              f"{im[0]['entries']} entries with 8-byte keys, opened with each page-cache "
              "capacity in a fresh process and read from start to end with sled's iterator "
              "(the baseline) and with one `get_gt` per entry (`walk`, what the queue does); "
              "anonymous RSS after the scan less after the open, and the scan's time):", "",
              "| value size | read | " + " | ".join(f"cache {c // 1024} KiB" for c in caches)
              + " |", "|---|---|" + "---:|" * len(caches)]
        for v in sorted({c["value_bytes"] for c in im}, reverse=True):
            for read in ("iter", "walk"):
                cells = []
                for cache in caches:
                    c = next((c for c in im if c["value_bytes"] == v and c.get("read", "iter") == read
                              and c["cache_bytes"] == cache), None)
                    cells.append(f"{(c['scanned_kib'] - c['opened_kib']) / 1024:.1f} MiB, "
                                 f"{c.get('ms', 0)} ms" if c else "–")
                o.append(f"| {v} B | {read} | " + " | ".join(cells) + " |")
        o.append("")
    if "link" in rows:
        l = rows["link"]
        o += [f"### 5. Link utilisation through {l['rate_mbit']} Mbit/s (tbf)", "",
              f"Two network namespaces joined by a veth pair; edgecap's side sends through "
              f"`tbf rate {l['rate_mbit']}mbit burst 32kb latency 100ms`; the fake server "
              f"listens in the other. {l['frames']} frames, {l['bytes'] / 1e6:.1f} MB.", "",
              "| | goodput | of the link |", "|---|---:|---:|",
              f"| bare TCP stream, same bytes (baseline) | {l['tcp_mbit']:.2f} Mbit/s | "
              f"{l['tcp_mbit'] / l['rate_mbit'] * 100:.1f}% |",
              f"| edgecap `run --drain`, whole process ({l['edgecap_wall']:.1f} s) | "
              f"{l['edgecap_mbit']:.2f} Mbit/s | {l['edgecap_mbit'] / l['rate_mbit'] * 100:.1f}% |",
              "", f"edgecap / bare TCP: {l['edgecap_mbit'] / l['tcp_mbit']:.2f}. The whole-"
              "process time includes start-up, the session request and the operation poll.",
              ""]
    if "cap" in rows:
        c = rows["cap"]
        o += [f"### 6. The upload cap (`max_upload_rate`) through a {c['link_mbit']} Mbit/s link",
              "", "Same namespaces as above, the link shaped at "
              f"{c['link_mbit']} Mbit/s; 640x480 frames enqueued and drained with each cap. "
              "Goodput is the image bytes over the drain's time less its fixed cost "
              f"(start-up, project check, session, operation: {c['fixed']:.2f} s, measured "
              "by an uncapped drain on the same link).", "",
              "| cap | frames | bytes | drain | goodput | error |",
              "|---:|---:|---:|---:|---:|---:|"]
        for r in c["caps"]:
            o.append(f"| {r['cap_kbit']} kbit/s | {r['frames']} | {r['bytes'] / 1e6:.2f} MB | "
                     f"{r['wall']:.1f} s | {r['goodput_kbit']:.0f} kbit/s | "
                     f"{r['error'] * 100:+.1f}% |")
        o.append("")
    o += goals(rows)
    o.append("Reproduce: `sudo scripts/bench` (the link part needs root for network "
             f"namespaces; `--only {','.join(PARTS)}` picks parts; "
             "`BENCH_ROUNDS` sets the rounds, 3 by default, 5 end to end).")
    return "\n".join(o)


def goals(rows):
    """The issue's goals against this run's figures."""
    g = []
    ok = lambda b: "met" if b else "**missed**"
    for u in rows.get("upload", []):
        on = u["fs"]
        for sdk in SDKS:
            pair = list(zip(u["runs"]["edgecap"], u["runs"][sdk]))
            w = spread([e["wall"] / b["wall"] for e, b in pair])[1]
            c = spread([e["cpu"] / b["cpu"] for e, b in pair])[1]
            g.append(f"| end-to-end wall vs `{sdk}` (median), {on} | ≤ 0.25 | {w:.4f} | "
                     f"{ok(w <= 0.25)} |")
            g.append(f"| end-to-end CPU vs `{sdk}` (median), {on} | ≤ 0.20 | {c:.4f} | "
                     f"{ok(c <= 0.2)} |")
    if "queue" in rows:
        for mode in ("grouped", "per_frame"):
            e = [q for q in rows["queue"] if q["what"] == "edgecap" and q["mode"] == mode]
            fps = spread([q["frames_per_sec"] for q in e])[1]
            wa = spread([q["write_amplification"] for q in e])[1]
            if mode == "grouped":
                g.append(f"| capture → queue, grouped, ~200 KB frames (median) | ≥ 300 frames/s | "
                         f"{fps:.0f} frames/s | {ok(fps >= 300)} |")
            g.append(f"| write amplification, {mode} (median) | ≤ 1.1 | {wa:.3f} | {ok(wa <= 1.1)} |")
    if "memory" in rows:
        m = rows["memory"]
        for what, v in (("sitting", m["sitting_max"]), ("draining", m["draining_max"])):
            g.append(f"| RSS, {m['frames']}-frame backlog, {what} | ≤ 25 MB | {v / 1e6:.1f} MB | "
                     f"{ok(v <= 25e6)} |")
    if "scale" in rows:
        for r in rows["scale"]:
            n = len(r.get("peaks", [r["peak"]]))
            g.append(f"| drain peak RSS, {r['frames']} frames, highest of {n} drains | ≤ 25 MB | "
                     f"{r['peak'] / 1e6:.1f} MB | {ok(r['peak'] <= 25e6)} |")
    if "link" in rows:
        l = rows["link"]
        u = l["edgecap_mbit"] / l["rate_mbit"]
        g.append(f"| link utilisation, {l['rate_mbit']} Mbit/s | ≥ 90% | {u * 100:.1f}% | "
                 f"{ok(u >= 0.9)} |")
    if "cap" in rows:
        worst = max(abs(r["error"]) for r in rows["cap"]["caps"])
        g.append(f"| upload cap accuracy, 256 kbit/s to 20 Mbit/s | ±5% | worst "
                 f"{worst * 100:.1f}% | {ok(worst <= 0.05)} |")
    if not g:
        return []
    return ["### Goals", "", "| goal | target | measured | |", "|---|---:|---:|---|"] + g + [""]


def write_benchmarks(text):
    start = "<!-- bench:start (written by scripts/bench; do not edit by hand) -->"
    replace_section(os.path.join(ROOT, "BENCHMARKS.md"), start, "<!-- bench:end -->",
                    f"{start}\n{text}\n<!-- bench:end -->")


def nexus_sessions(k):
    """How the sinks part's Nexus drains batched, as the server counted the sessions."""
    runs = k["runs"]["nexus"]
    if not runs or any("sessions" not in r for r in runs):
        # Figures from before the server's count was kept.
        return "sessions of up to 500 (the default `batch_max_frames`)"
    counts = sorted({r["sessions"] for r in runs})
    if len(counts) > 1:
        return f"{' or '.join(map(str, counts))} sessions per drain (server-counted)"
    c = counts[0]
    return (f"{c} session{'s' if c != 1 else ''} per drain (server-counted; "
            f"{k['files'] / c:.0f} frames each)")
