//! A fault-injecting TCP proxy on 127.0.0.1, in front of the fake Nexus server (`netem` is
//! not available here, see `shared/recipes/test-infra.md`). It passes bytes through, and on
//! command it refuses connections (the port is closed), hangs them (accepted, never
//! answered: a dropped port or a dead peer), or resets the next PUT requests in the middle
//! of their body. It counts what it sees so tests can assert on the client's retry pace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass through both ways.
    Pass,
    /// The port is closed: connections are refused by the kernel.
    Refuse,
    /// Connections are accepted and never answered; nothing reaches the server.
    Hang,
}

/// What the proxy saw.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Connections accepted while passing.
    pub passed: u64,
    /// Connections accepted and left hanging.
    pub hung: u64,
    /// HTTP requests seen going to the server (request lines), passed ones only.
    pub requests: u64,
    /// PUTs reset in the middle of their body.
    pub resets: u64,
}

struct Shared {
    counts: Counts,
    /// How many of the next PUTs to reset mid-body.
    reset_puts: u64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts passing to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, rx) = watch::channel(Mode::Pass);
        let shared = Arc::new(Mutex::new(Shared {
            counts: Counts::default(),
            reset_puts: 0,
        }));
        let task = tokio::spawn(serve(listener, addr, upstream, rx, Arc::clone(&shared)));
        Self {
            addr,
            mode,
            shared,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode; connections open in another mode are reset.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Resets the next `n` PUT requests after part of their body went through.
    pub fn reset_next_puts(&self, n: u64) {
        self.shared.lock().unwrap().reset_puts = n;
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().unwrap().counts.clone()
    }
}

async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut listener = Some(listener);
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Refuse {
            // Close the port until the mode changes, then listen on it again.
            listener = None;
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => loop {
                // tokio sets SO_REUSEADDR, so the port can be bound again at once.
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            },
        };
        let accepted = tokio::select! {
            a = l.accept() => a,
            r = mode.changed() => {
                if r.is_err() { return; }
                listener = Some(l);
                continue;
            }
        };
        listener = Some(l);
        let Ok((client, _)) = accepted else { continue };
        let rx = mode.clone();
        let shared2 = Arc::clone(&shared);
        match current {
            Mode::Hang => {
                shared.lock().unwrap().counts.hung += 1;
                tokio::spawn(hang(client, rx));
            }
            _ => {
                shared.lock().unwrap().counts.passed += 1;
                tokio::spawn(pass(client, upstream, rx, shared2));
            }
        }
    }
}

/// Holds the connection without reading or answering until the mode changes.
async fn hang(client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Mode::Hang).await;
    reset(&client);
}

/// Closes with a TCP RST instead of a FIN.
fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

const METHODS: [&[u8]; 5] = [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH "];

async fn pass(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    shared: Arc<Mutex<Shared>>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
        cw
    });
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of the current PUT still to pass before the reset (None: not cutting).
    let mut cut_in: Option<usize> = None;
    let outcome = loop {
        let n = tokio::select! {
            r = cr.read(&mut buf) => match r { Ok(0) | Err(_) => break false, Ok(n) => n },
            _ = mode.wait_for(|m| *m != Mode::Pass) => break true,
        };
        let chunk = &buf[..n];
        if METHODS.iter().any(|m| chunk.starts_with(m)) {
            let mut g = shared.lock().unwrap();
            g.counts.requests += 1;
            if chunk.starts_with(b"PUT ") && g.reset_puts > 0 && cut_in.is_none() {
                g.reset_puts -= 1;
                // The headers and 1 KiB of the body go through, then the connection dies.
                let head = chunk
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(n, |p| p + 4);
                cut_in = Some(head + 1024);
            }
        }
        let send = match cut_in {
            Some(left) if left <= n => {
                let _ = sw.write_all(&chunk[..left]).await;
                shared.lock().unwrap().counts.resets += 1;
                break true;
            }
            Some(left) => {
                cut_in = Some(left - n);
                chunk
            }
            None => chunk,
        };
        if sw.write_all(send).await.is_err() {
            break false;
        }
    };
    if outcome {
        // Reset both sides: the client sees ECONNRESET, the server a truncated body.
        reset(cr.as_ref());
        reset(sw.as_ref());
        down.abort();
    } else {
        let _ = sw.shutdown().await;
        let _ = down.await;
    }
}
