//! The `command` source: a child process that writes MJPEG to its stdout
//! (`rpicam-vid --codec mjpeg -o -`, `ffmpeg … -f mjpeg -`, a gstreamer pipeline).
//!
//! The argv runs directly, without a shell. A reader thread spawns the child, splits its
//! stdout into JPEG frames ([`super::mjpeg`]) and keeps the newest in a
//! [`Latest`](super::stream::Latest); a second thread forwards the child's stderr to the
//! log, line by line, rate-limited and with passwords in URLs masked. When the child
//! exits or stalls, `next_frame` fails and the capture loop restarts it with backoff.
//!
//! The child never outlives edgecap:
//! - it runs in its own process group, so a Ctrl-C in a terminal reaches edgecap only,
//!   and stopping the source signals the whole group (SIGTERM, then SIGKILL after 2 s);
//! - it is spawned with `PR_SET_PDEATHSIG = SIGKILL` from the reader thread, which lives
//!   exactly as long as the child: if edgecap is killed with -9, the kernel kills the
//!   child too. (Grandchildren of a wrapper script are not covered by this; under systemd
//!   the service's cgroup is.)

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::mjpeg::JpegSplitter;
use super::stream::Latest;
use super::{CaptureError, Pixels, Source, SourceFrame, Stop};

/// How long a stopped child gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// At most this many stderr lines per minute reach the log.
const STDERR_LINES_PER_MIN: u32 = 30;

/// Replaces the password of every `scheme://user:password@host` in `s` with `***`.
pub fn mask_credentials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A running child and the thread that reads it.
pub struct CommandSource {
    latest: Arc<Latest>,
    /// The child's pid (= its process group id); 0 before the spawn or after the exit.
    pid: Arc<AtomicI32>,
    halt: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
    what: String,
}

fn signal_group(pid: i32, sig: rustix::process::Signal) {
    if pid > 0 {
        // The group is the child's own (process_group(0) at spawn). An error means it is
        // gone already.
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }
}

fn spawn_child(argv: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (prctl, getppid) through rustix: async-signal-safe, no allocation, no lock.
    // `pre_exec` itself is unsafe in std; there is no safe way to run code in the child.
    #[allow(
        unsafe_code,
        reason = "PR_SET_PDEATHSIG must be set in the child: pre_exec"
    )]
    unsafe {
        cmd.pre_exec(move || {
            use rustix::process::{Signal, getppid, set_parent_process_death_signal};
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died between fork and prctl.
            if getppid() != Some(parent) {
                return Err(std::io::Error::other("edgecap exited during the spawn"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn forward_stderr(camera: String, program: String, stderr: impl Read) {
    let mut window = Instant::now();
    let (mut shown, mut suppressed) = (0u32, 0u64);
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if window.elapsed() >= Duration::from_secs(60) {
            if suppressed > 0 {
                info!(camera = %camera, program = %program, suppressed,
                    "child stderr: lines suppressed in the last minute");
            }
            window = Instant::now();
            (shown, suppressed) = (0, 0);
        }
        if shown >= STDERR_LINES_PER_MIN {
            suppressed += 1;
            continue;
        }
        shown += 1;
        let mut masked = mask_credentials(text);
        if masked.len() > 500 {
            let mut cut = 500;
            while !masked.is_char_boundary(cut) {
                cut -= 1;
            }
            masked.truncate(cut);
            masked.push('…');
        }
        info!(target: "edgecap::child", camera = %camera, program = %program, "{masked}");
    }
}

impl CommandSource {
    /// Starts `argv`; fails only if the program cannot be started.
    pub fn spawn(
        camera: &str,
        argv: &[String],
        max_frame_bytes: usize,
        timeout: Duration,
    ) -> Result<Self, CaptureError> {
        let program = argv
            .first()
            .cloned()
            .ok_or_else(|| CaptureError::Device("empty argv".into()))?;
        let latest = Arc::new(Latest::default());
        let pid = Arc::new(AtomicI32::new(0));
        let halt = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (l2, p2, h2) = (Arc::clone(&latest), Arc::clone(&pid), Arc::clone(&halt));
        let (argv2, cam2, prog2) = (argv.to_vec(), camera.to_string(), program.clone());
        let reader = std::thread::Builder::new()
            .name(format!("cmd-{camera}"))
            .spawn(move || {
                let mut child = match spawn_child(&argv2) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start `{prog2}`: {e}")));
                        return;
                    }
                };
                let child_pid = i32::try_from(child.id()).unwrap_or(0);
                p2.store(child_pid, Ordering::SeqCst);
                let _ = ready_tx.send(Ok(()));
                info!(camera = %cam2, program = %prog2, pid = child_pid,
                    args = %mask_credentials(&argv2[1..].join(" ")), "command source started");
                let stderr = child.stderr.take().map(|e| {
                    let (c, p) = (cam2.clone(), prog2.clone());
                    std::thread::Builder::new()
                        .name(format!("cmd-err-{cam2}"))
                        .spawn(move || forward_stderr(c, p, e))
                });
                let mut splitter = JpegSplitter::new(max_frame_bytes);
                if let Some(mut out) = child.stdout.take() {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match out.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                splitter.push(&buf[..n]);
                                while let Some(jpeg) = splitter.pop() {
                                    l2.put(SourceFrame {
                                        pixels: Pixels::Jpeg(jpeg),
                                        captured_at: SystemTime::now(),
                                    });
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
                splitter.finish();
                let st = splitter.stats();
                let status = child.wait();
                p2.store(0, Ordering::SeqCst);
                if let Some(Ok(h)) = stderr {
                    let _ = h.join();
                }
                let how = match status {
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(c), _) => format!("exit code {c}"),
                        (None, Some(sig)) => format!("signal {sig}"),
                        _ => s.to_string(),
                    },
                    Err(e) => format!("unknown status ({e})"),
                };
                debug!(camera = %cam2, program = %prog2, frames = st.frames,
                    garbage_bytes = st.garbage_bytes, truncated = st.truncated,
                    oversize = st.oversize, status = %how, "command source ended");
                if st.oversize > 0 {
                    warn!(camera = %cam2, program = %prog2, oversize = st.oversize, max_frame_bytes,
                        "frames larger than max_frame_bytes were discarded");
                }
                let why = if h2.load(Ordering::SeqCst) {
                    "stopped".to_string()
                } else {
                    format!(
                        "`{prog2}` ended ({how}) after {} frame(s); {} truncated, {} oversize, {} garbage byte(s)",
                        st.frames, st.truncated, st.oversize, st.garbage_bytes
                    )
                };
                l2.end(why);
            })
            .map_err(|e| CaptureError::Device(format!("cannot start a thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                let _ = reader.join();
                return Err(CaptureError::Device(msg));
            }
            Err(_) => {
                let _ = reader.join();
                return Err(CaptureError::Device(format!(
                    "the reader of `{program}` ended during start"
                )));
            }
        }
        Ok(Self {
            latest,
            pid,
            halt,
            reader: Some(reader),
            timeout,
            what: format!("`{program}`"),
        })
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<i32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p > 0)
    }

    /// Frames the child wrote that the capture rate skipped.
    pub fn skipped(&self) -> u64 {
        self.latest.overwritten()
    }
}

impl Source for CommandSource {
    fn next_frame(&mut self, stop: &Stop) -> Result<Option<SourceFrame>, CaptureError> {
        self.latest.take(stop, self.timeout, &self.what)
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::SeqCst);
        signal_group(
            self.pid.load(Ordering::SeqCst),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + TERM_GRACE;
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
            if Instant::now() >= deadline {
                warn!(program = %self.what, "the command did not stop on SIGTERM within 2 s; killing it");
                signal_group(
                    self.pid.load(Ordering::SeqCst),
                    rustix::process::Signal::KILL,
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader ends at EOF on the pipe. A process outside the group (a wrapper's
        // `setsid` grandchild) may still hold it open: do not wait for it forever, the
        // capture loop must not wedge.
        if let Some(r) = self.reader.take() {
            let deadline = Instant::now() + TERM_GRACE;
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if r.is_finished() {
                let _ = r.join();
            } else {
                warn!(program = %self.what,
                    "a process outside the command's process group still holds its stdout; leaving its reader behind");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_credentials("-i rtsp://admin:hunter2@10.0.0.5:554/stream1 -f mjpeg -"),
            "-i rtsp://admin:***@10.0.0.5:554/stream1 -f mjpeg -"
        );
        assert_eq!(
            mask_credentials("[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://u:p@h/x"),
            "[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://u:***@h/x"
        );
        assert_eq!(
            mask_credentials("http://h/x?a=1 plain"),
            "http://h/x?a=1 plain"
        );
        assert_eq!(mask_credentials("rtsp://user@h"), "rtsp://user@h");
        assert_eq!(mask_credentials("no url here"), "no url here");
        assert_eq!(
            mask_credentials("a://x:y@h b://z:w@k"),
            "a://x:***@h b://z:***@k"
        );
    }

    #[test]
    fn a_program_that_does_not_exist_is_a_clear_error() {
        let argv = vec!["/nonexistent/edgecap-no-such-program".to_string()];
        let e = CommandSource::spawn("c", &argv, 1 << 20, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("cannot start `/nonexistent/edgecap-no-such-program`"),
            "{e}"
        );
    }

    #[test]
    fn frames_from_a_child_arrive_and_its_exit_is_reported() {
        // `sh` writes two JPEGs (from a file) and exits.
        let dir = tempfile::tempdir().unwrap();
        let a = crate::capture::mjpeg::tests::jpeg(3, 16, 16);
        let path = dir.path().join("two.mjpeg");
        std::fs::write(&path, [a.clone(), a.clone()].concat()).unwrap();
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("cat {} && sleep 0.3", path.display()),
        ];
        let mut src = CommandSource::spawn("c", &argv, 1 << 20, Duration::from_secs(5)).unwrap();
        let stop = Stop::default();
        let f = src.next_frame(&stop).unwrap().unwrap();
        assert!(matches!(f.pixels, Pixels::Jpeg(ref j) if *j == a));
        let e = loop {
            match src.next_frame(&stop) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("`sh` ended (exit code 0)"), "{e}");
    }
}
