//! The Nexus API client: the HTTP client and its timeouts, the `Secret-Key` header, URLs,
//! the session rate limiter, the classification of API errors into a [`Verdict`], and
//! the small calls (probe, cancel, asset lookup). Everything the server says is treated as
//! untrusted text: shortened, and any occurrence of the secret masked, before it is logged.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::watch;
use tracing::{info, warn};

use super::wire::ErrorBody;
use crate::config::{NexusConfig, Secret};
use crate::upload::backoff::retry_after;
use crate::upload::pacer::{Learnt, Pacer};
use crate::upload::sink::Verdict;
use crate::upload::sleep_or_stop;

/// The API client of one project.
pub(super) struct Client {
    pub(super) cfg: NexusConfig,
    secret: Secret,
    pub(super) http: reqwest::Client,
    base: Url,
    secret_header: HeaderValue,
    limiter: Mutex<Pacer>,
    /// Where the pacer keeps what it learnt (None: nowhere).
    pace_file: Option<std::path::PathBuf>,
}

impl Client {
    /// Builds the client.
    pub(super) fn new(cfg: NexusConfig, secret: Secret) -> Result<Self, String> {
        // Picks ring as rustls' crypto provider (once per process; later calls are no-ops).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.stall_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("edgecap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let base = Url::parse(&cfg.endpoint).map_err(|e| format!("upload.endpoint: {e}"))?;
        let mut secret_header = HeaderValue::from_str(secret.expose())
            .map_err(|_| "upload secret key: not a valid header value".to_string())?;
        secret_header.set_sensitive(true);
        let limiter = Mutex::new(Pacer::new(
            cfg.session_rate_limit,
            cfg.session_rate_window,
            Instant::now(),
        ));
        Ok(Self {
            cfg,
            secret,
            http: client,
            base,
            secret_header,
            limiter,
            pace_file: None,
        })
    }

    /// Goes on from the rate a previous run learnt (kept in `path`), and keeps it there.
    pub(super) fn set_pace_file(&mut self, path: std::path::PathBuf) {
        if let Some(learnt) = Learnt::load(&path) {
            let now_ms = crate::frame::unix_ms(SystemTime::now());
            let ago = Duration::from_millis(u64::try_from(now_ms - learnt.at_ms).unwrap_or(0));
            let pacer = Pacer::resume(
                self.cfg.session_rate_limit,
                self.cfg.session_rate_window,
                Instant::now(),
                learnt,
                ago,
            );
            info!(
                sessions_per_window = (learnt.rate * 100.0).round() / 100.0,
                last_429_secs_ago = ago.as_secs(),
                "the session pacer goes on from the rate it learnt before the restart"
            );
            self.limiter = Mutex::new(pacer);
        }
        self.pace_file = Some(path);
    }

    pub(super) fn url(&self, path: &str) -> Url {
        // RFC 3986 resolution of an absolute path drops any path of the base, as the SDK does.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    pub(super) fn api(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("Secret-Key", self.secret_header.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.cfg.request_timeout)
    }

    /// The `Secret-Key` header value (marked sensitive).
    pub(super) fn secret_header(&self) -> HeaderValue {
        self.secret_header.clone()
    }

    pub(super) fn project_path(&self, rest: &str) -> String {
        format!("/projects/{}{rest}", self.cfg.project_id)
    }

    /// Masks the secret and shortens server-provided text for logs.
    pub(super) fn clean(&self, s: &str) -> String {
        crate::upload::masked(s, self.secret.expose(), 300)
    }

    pub(super) fn describe_error_body(&self, status: StatusCode, body: &[u8]) -> String {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody {
                code: Some(c),
                message: Some(m),
            }) => self.clean(&format!("{status} {c}: {m}")),
            Ok(ErrorBody {
                message: Some(m), ..
            }) => self.clean(&format!("{status}: {m}")),
            _ => self.clean(&format!("{status}: {}", String::from_utf8_lossy(body))),
        }
    }

    /// Verdict for a non-2xx answer of the API.
    pub(super) fn classify(
        &self,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Verdict {
        let text = format!("{what}: {}", self.describe_error_body(status, body));
        let retry_after = retry_after(headers);
        match status.as_u16() {
            401 | 403 | 404 => Verdict::OperatorMustAct(text),
            // The SDK waits 60 s before retrying a 429 that says nothing more.
            429 => Verdict::Backoff {
                reason: text,
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(60))),
            },
            408 => Verdict::Backoff {
                reason: text,
                retry_after,
            },
            400..=499 => Verdict::Split(text),
            _ => Verdict::Backoff {
                reason: text,
                retry_after,
            },
        }
    }

    pub(super) fn network_error(&self, what: &str, e: reqwest::Error) -> Verdict {
        Verdict::Offline(self.clean(&format!("{what}: {}", e.without_url())))
    }

    /// Checks that the API answers at all (any HTTP status counts).
    pub(super) async fn probe(&self) -> Result<(), String> {
        let url = self.url(&self.project_path(""));
        match self.api(Method::GET, url).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.clean(&e.without_url().to_string())),
        }
    }

    /// `GET /projects/{pid}`: `Ok` when it answers 2xx; a refusal says what to fix.
    pub(super) async fn check_project(&self) -> Verdict {
        let url = self.url(&self.project_path(""));
        let resp = match self.api(Method::GET, url).send().await {
            Ok(r) => r,
            Err(e) => return self.network_error("checking the project", e),
        };
        let status = resp.status();
        if status.is_success() {
            return Verdict::Ok;
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        let what = match status.as_u16() {
            401 | 403 => format!(
                "checking project {}: the secret key is refused (set upload.secret_key* to the project's key)",
                self.cfg.project_id
            ),
            404 => format!(
                "checking project {}: no such project for this key (check upload.project_id)",
                self.cfg.project_id
            ),
            _ => format!("checking project {}", self.cfg.project_id),
        };
        match self.classify(&what, status, &headers, &body) {
            // Any other 4xx on a plain GET is as much the operator's to fix.
            Verdict::Split(r) => Verdict::OperatorMustAct(r),
            v => v,
        }
    }

    /// Takes back the last session creation from the limiter (nothing reached the server,
    /// so an outage must not use up the window).
    pub(super) fn forget_last_session(&self) {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_last();
    }

    /// Until the client-side limiter allows the next session (zero: now).
    pub(super) fn next_session_in(&self) -> Duration {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait_time(Instant::now())
    }

    /// Sessions the pacer plans for in the next window (at least one).
    pub(super) fn sessions_left(&self) -> usize {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions_left(Instant::now())
    }

    /// The platform answered 429 to a session creation: the pacer slows down (its rate
    /// halves) or, for a device kept waiting by bad luck, tries again soon; never before
    /// `retry_after`. Returns the wait before the next try, the rate now (sessions per
    /// window) and whether the rate was cut.
    pub(super) fn session_rate_limited(
        &self,
        retry_after: Option<Duration>,
    ) -> (Duration, f64, bool) {
        let (wait, rate, cut, learnt) = {
            let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let cut = l.rate_limited(now, retry_after);
            // Only a cut rate is kept for a restart.
            let learnt = cut.then(|| l.learnt(now, crate::frame::unix_ms(SystemTime::now())));
            (l.wait_time(now), l.rate(now), cut, learnt)
        };
        if let (Some(path), Some(learnt)) = (self.pace_file.clone(), learnt) {
            // Off the async threads: an SD card may stall a write for seconds.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = learnt.save(&path) {
                    warn!(path = %path.display(), error = %e,
                        "cannot keep the learnt session rate (a restart starts at the configured limit)");
                }
            });
        }
        (wait, rate, cut)
    }

    /// The platform created a session (the pacer's wait for it is over).
    pub(super) fn session_accepted(&self) {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accepted(Instant::now());
    }

    /// The session rate this device allows itself now, and the 429s it got.
    pub(super) fn session_pace(&self) -> (f64, u64) {
        let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        (l.rate(Instant::now()), l.rate_limited_total())
    }

    pub(super) async fn wait_for_rate_limit(&self, stop: &watch::Receiver<bool>) -> bool {
        loop {
            let wait = {
                let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
                let w = l.wait_time(Instant::now());
                if w.is_zero() {
                    l.record(Instant::now());
                }
                w
            };
            if wait.is_zero() {
                return false;
            }
            info!(
                wait_secs = wait.as_secs(),
                limit = self.cfg.session_rate_limit,
                window_secs = self.cfg.session_rate_window.as_secs(),
                "session rate limit reached; waiting"
            );
            if sleep_or_stop(wait, stop).await {
                return true;
            }
        }
    }

    /// Cancels a session (409: it had finished already).
    pub(super) async fn cancel(&self, session_id: &str) {
        let url =
            self.url(&self.project_path(&format!("/assetuploadsessions/{session_id}:cancel")));
        // An empty body alone goes out without Content-Length; the SDK sends `0`.
        let req = self
            .api(Method::POST, url)
            .header(CONTENT_LENGTH, "0")
            .body(Vec::new())
            .timeout(Duration::from_secs(3));
        match req.send().await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::CONFLICT => {
                info!(session = %self.clean(session_id), "upload session cancelled");
            }
            Ok(r) => warn!(session = %self.clean(session_id), status = %r.status(),
                "cancelling the upload session failed"),
            Err(e) => {
                warn!(session = %self.clean(session_id), error = %self.clean(&e.without_url().to_string()),
                "cancelling the upload session failed")
            }
        }
    }

    /// `GET …/assets/{filename}`: what the platform says of the asset.
    pub(super) async fn look_up(&self, filename: &str) -> Lookup {
        let mut url = self.url(&self.project_path("/assets"));
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.push(filename);
        }
        match self.api(Method::GET, url).send().await {
            Ok(r) if r.status().is_success() => Lookup::Present,
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Lookup::Absent,
            Ok(r)
                if r.status().is_server_error()
                    || r.status() == StatusCode::TOO_MANY_REQUESTS
                    || r.status() == StatusCode::REQUEST_TIMEOUT =>
            {
                Lookup::Unreachable(format!("asset lookup answered {}", r.status()))
            }
            Ok(r) => Lookup::Refused(format!("asset lookup answered {}", r.status())),
            Err(e) => Lookup::Unreachable(
                self.clean(&format!("asset lookup failed: {}", e.without_url())),
            ),
        }
    }
}

/// What the platform said of one asset looked up by filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lookup {
    /// It has the asset.
    Present,
    /// It answered 404: it does not.
    Absent,
    /// It could not be asked now (a network error or timeout, 408, 429, a 5xx): ask again
    /// later, before the frame is sent again.
    Unreachable(String),
    /// It answered another error (400, 403, 405…): it will not tell, and asking again
    /// would not help; the frame is sent again (a re-send, counted).
    Refused(String),
}
