//! The optional HTTP endpoint (`[daemon] http_listen`), served with axum on the daemon's
//! runtime:
//!
//! - `GET /metrics`: [`super::metrics::exposition`] of a fresh snapshot;
//! - `GET /status`: the snapshot as JSON (what the status file holds);
//! - `GET /snapshot/<camera>.jpg`: the newest frame that camera delivered to the queue,
//!   to aim it from a browser (404 for an unknown camera, 503 before its first frame).
//!
//! Read-only: nothing served changes the daemon. A port that cannot be bound is logged
//! (ERROR: the operator asked for it) and the daemon runs on without it.
//!
//! A snapshot is taken on tokio's blocking pool, not on the queue thread
//! (`queue::calls`): it only reads (the queue's counters under its lock, the oldest
//! frame's age), and queued behind the queue thread's work it waited for all of it: an
//! acknowledgement deleting a batch's files, an fsync on a stalled SD card. A scrape then
//! timed out exactly when the operator wanted to see why, and a delivery showed ~0.1 s
//! after the index had made it durable (the end-to-end benchmark's last step).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tracing::{error, info};

use super::snapshot::Snapshot;

/// What the endpoint reads: a snapshot now, and a camera's newest frame.
pub trait Source: Send + Sync + 'static {
    /// The status now (may block briefly on the queue's lock: called on the blocking
    /// pool). Must not change the index (see the module doc).
    fn snapshot(&self) -> Snapshot;
    /// The newest JPEG of `camera`: `None` for an unknown camera, `Some(None)` before its
    /// first frame.
    fn frame(&self, camera: &str) -> Option<Option<Arc<Vec<u8>>>>;
}

/// Serves on `addr` until `stop` is set. Returns once bound (or failed to bind).
pub async fn serve(
    addr: SocketAddr,
    source: Arc<dyn Source>,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(address = %addr, error = %e,
                "cannot serve daemon.http_listen: /metrics, /status and /snapshot are off (the daemon runs on)");
            return None;
        }
    };
    info!(address = %addr, "serving /metrics, /status and /snapshot/<camera>.jpg");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/snapshot/{file}", get(snapshot))
        .with_state(source);
    Some(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            error!(error = %e, "the HTTP endpoint stopped");
        }
    }))
}

type Src = State<Arc<dyn Source>>;

async fn take(src: Arc<dyn Source>) -> Result<Snapshot, Response> {
    tokio::task::spawn_blocking(move || src.snapshot())
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn metrics(State(src): Src) -> Response {
    let snap = match take(src).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match super::metrics::exposition(&snap) {
        Ok(text) => ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn status(State(src): Src) -> Response {
    match take(src).await {
        Ok(s) => match serde_json::to_vec_pretty(&s) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(r) => r,
    }
}

async fn snapshot(State(src): Src, Path(file): Path<String>) -> Response {
    let Some(camera) = file.strip_suffix(".jpg") else {
        return (StatusCode::NOT_FOUND, "ask for /snapshot/<camera>.jpg\n").into_response();
    };
    match src.frame(camera) {
        None => (
            StatusCode::NOT_FOUND,
            format!("no camera named {camera:?}\n"),
        )
            .into_response(),
        Some(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("camera {camera:?} has delivered no frame yet\n"),
        )
            .into_response(),
        Some(Some(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg.as_ref().clone(),
        )
            .into_response(),
    }
}
