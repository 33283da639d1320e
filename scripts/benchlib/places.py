"""Where and on what the benchmarks run: the inputs (test JPEGs, a daemon's config), fresh
run directories (nothing deleted in them before), the filesystem a table names, and the
journaled ext4 image a device's root is like."""

import json
import os
import shutil
import subprocess

from benchlib.common import PROJECT, ROOT, SECRET, W, log, sh


# ---------------------------------------------------------------- inputs


def jpegs(folder, n, width, height, q, noise=9):
    """n distinct camera-like JPEGs (ffmpeg's test picture with sensor-like noise)."""
    if os.path.isdir(folder) and len(os.listdir(folder)) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    sh("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
       f"testsrc2=size={width}x{height}:rate=25", "-vf", f"noise=alls={noise}:allf=t",
       "-frames:v", str(n), "-q:v", str(q), os.path.join(folder, "frame%05d.jpg"))


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def config(path, queue_dir, endpoint, camera_fps=None, extra_upload="", sink=None, camera=None,
           daemon_extra="", queue_extra=""):
    """A config close to the shipped defaults: a test-pattern camera (640x480), the Nexus
    sink at `endpoint`, the secret from the environment."""
    status = os.path.join(os.path.dirname(queue_dir), "status.json")
    fps = f"fps = {camera_fps}\n" if camera_fps else "fps = 1.0\n"
    nexus = (f'sink = "nexus"\nendpoint = "{endpoint}"\nproject_id = "{PROJECT}"\n'
             'secret_key_env = "EDGECAP_BENCH_SECRET"\nstart_delay_max_secs = 0')
    text = f"""[device]
id = "bench01"

[daemon]
drain_on_stop_secs = 600
summary_interval_secs = 60
status_file = {json.dumps(status)}
{daemon_extra}
[[camera]]
name = "cam0"
{fps}{camera or TEST_PATTERN}[camera.metadata]
site = "bench"

[queue]
dir = {json.dumps(queue_dir)}
{queue_extra}
[upload]
{sink or nexus}
{extra_upload}
"""
    with open(path, "w") as f:
        f.write(text)
    return path


TEST_PATTERN = "[camera.source]\ntype = \"test_pattern\"\nwidth = 640\nheight = 480\n"
ENV = {"EDGECAP_BENCH_SECRET": SECRET, "RUST_LOG": "warn"}


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


RUN = [0]


# Where run_dir() makes its directories: W, or the journaled image while a part runs there.
RUNS_ON = [W]


def run_dir(what):
    """A directory no run used before: nothing was ever deleted in it (deleting thousands of
    files right before a run slows ext4's inode allocation for the next one). The runs'
    directories are removed when the part ends.

    On an ext4 without a journal "in it" means in its block group: new files take inodes
    from their folder's group, skipping every inode of the group freed in the last 60 s
    (360 s while unwritten; see journaled_fs), whoever freed it. So `runs` is marked as
    the top of directory hierarchies (`chattr +T`): ext4 then spreads each run's directory
    over the groups like a top-level one, and a run does not pay for the files the run
    before it (the SDK's temporary copies, a drained queue) deleted. What a run deletes
    itself (edgecap: the delivered frames, while later ones arrive) it still pays for."""
    RUN[0] += 1
    runs = os.path.join(RUNS_ON[0], "runs")
    if not os.path.isdir(runs):
        os.makedirs(runs)
        if shutil.which("chattr"):
            # Best effort: filesystems without the flag refuse it, and nothing changes.
            subprocess.run(["chattr", "+T", runs], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    d = os.path.join(runs, f"{RUN[0]:03d}-{what}")
    os.makedirs(d)
    return d


def clear_runs():
    shutil.rmtree(os.path.join(RUNS_ON[0], "runs"), ignore_errors=True)


def filesystem(path):
    """The filesystem type and device `path` is on (findmnt), for ext4 whether it has a
    journal (jbd2 lists the journals of mounted filesystems), and whether it is mounted
    with `discard`: then every deleted file's blocks are discarded as they are freed, and
    without a journal the deleting thread waits for each (the queue deletes a file per
    delivered frame; Raspberry Pi OS's fstab mounts its root without it)."""
    r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", path],
                       capture_output=True, text=True)
    parts = r.stdout.split()
    options = parts.pop().split(",") if len(parts) > 2 else []
    if not parts:
        return "unknown"
    text = " ".join(parts)
    if parts[0] == "ext4" and len(parts) > 1:
        dev = os.path.basename(os.path.realpath(parts[1]))
        try:
            journal = any(j.startswith(dev + "-") for j in os.listdir("/proc/fs/jbd2"))
        except OSError:
            journal = False
        text += " (journal)" if journal else " (no journal)"
    if "discard" in options:
        text += ", mounted with discard"
    return text


JOURNAL_IMAGE = os.path.join(ROOT, "target", "bench-ext4.img")
JOURNAL_MOUNT = os.path.join(ROOT, "target", "bench-ext4")


def journaled_fs():
    """A fresh ext4 filesystem with a journal, as Raspberry Pi OS formats its root, in a
    sparse image file mounted through a loop device; its mount point, or None (not root,
    no loop devices) with the reason logged.

    Why: the device runs on a journaled ext4. Without a journal ext4 skips, for every new
    file, each free inode of the folder's block group whose file was deleted in the last
    60 s, or 360 s while its inode table block is not yet written (`recently_deleted()` in
    fs/ext4/ialloc.c, a check only made without a journal), looking the block up for
    each: on a disk formatted so (this benchmark's first machine) that was ~27% of
    `enqueue`'s CPU in `perf`, a cost the device does not have. The end-to-end part runs
    on both, so neither figure stands alone."""
    unmount_journaled()
    try:
        with open(JOURNAL_IMAGE, "wb") as f:
            f.truncate(4 * 2**30)
        sh("mkfs.ext4", "-q", "-F", "-O", "has_journal", JOURNAL_IMAGE)
        os.makedirs(JOURNAL_MOUNT, exist_ok=True)
        sh("mount", "-o", "loop", JOURNAL_IMAGE, JOURNAL_MOUNT)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"no journaled ext4 image for the end-to-end part ({e}): it runs on {W} only")
        unmount_journaled()
        return None
    return JOURNAL_MOUNT


def unmount_journaled():
    if os.path.ismount(JOURNAL_MOUNT):
        subprocess.run(["umount", JOURNAL_MOUNT], check=False)
    if os.path.exists(JOURNAL_IMAGE):
        os.remove(JOURNAL_IMAGE)
