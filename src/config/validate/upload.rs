//! `[upload]`: batching, retries, and the sink's own keys (Nexus or a folder).

use std::path::PathBuf;
use std::time::Duration;

use super::{Validator, key};
use crate::config::platform::NEXUS_MAX_ASSETS_PER_SESSION;
use crate::config::raw::{RawUpload, SinkKind, defaults};
use crate::config::types::{
    BatchLimits, Deferred, NexusConfig, RetryPolicy, Secret, SecretSource, SinkConfig, UploadConfig,
};

impl Validator<'_> {
    pub(super) fn upload(&mut self, u: RawUpload) -> Option<UploadConfig> {
        let p = |k: &str| [key("upload"), key(k)];
        let max_frames = self.range(
            &p("batch_max_frames"),
            u.batch_max_frames,
            1,
            NEXUS_MAX_ASSETS_PER_SESSION as u64,
        );
        let max_bytes = self.range(&p("batch_max_bytes"), u.batch_max_bytes, 1, u64::MAX);
        let max_age = self.range(&p("batch_max_age_secs"), u.batch_max_age_secs, 0, 86_400);
        let initial = self.range(&p("retry_initial_ms"), u.retry_initial_ms, 10, 3_600_000);
        let max = self.range(&p("retry_max_secs"), u.retry_max_secs, 1, 86_400);
        if max * 1000 < initial {
            self.problem(
                &p("retry_max_secs"),
                format!("must be at least retry_initial_ms ({initial} ms)"),
            );
        }
        if u.max_attempts == 0 {
            self.problem(&p("max_attempts"), "must be at least 1 (got 0)");
        }
        let nexus_keys = [
            ("endpoint", u.endpoint.is_some()),
            ("project_id", u.project_id.is_some()),
            ("secret_key", u.secret_key.is_some()),
            ("secret_key_env", u.secret_key_env.is_some()),
            ("secret_key_file", u.secret_key_file.is_some()),
            ("secret_key_credential", u.secret_key_credential.is_some()),
            ("put_concurrency", u.put_concurrency.is_some()),
            ("session_rate_limit", u.session_rate_limit.is_some()),
            (
                "session_rate_window_secs",
                u.session_rate_window_secs.is_some(),
            ),
            ("connect_timeout_secs", u.connect_timeout_secs.is_some()),
            ("request_timeout_secs", u.request_timeout_secs.is_some()),
            ("stall_timeout_secs", u.stall_timeout_secs.is_some()),
            ("operation_poll_ms", u.operation_poll_ms.is_some()),
            ("operation_timeout_secs", u.operation_timeout_secs.is_some()),
            ("metadata_api", u.metadata_api.is_some()),
        ];
        let sink = match u.sink {
            SinkKind::Directory => {
                for (k, set) in nexus_keys {
                    if set {
                        self.problem(&p(k), "only valid with sink = \"nexus\"");
                    }
                }
                match u.path {
                    Some(path) if !path.trim().is_empty() => {
                        self.defer_writable(&p("path"), PathBuf::from(&path), false);
                        Some(SinkConfig::Directory {
                            path: PathBuf::from(path),
                        })
                    }
                    _ => {
                        self.problem(&p("path"), "is required with sink = \"directory\"");
                        None
                    }
                }
            }
            SinkKind::Nexus => {
                if u.path.is_some() {
                    self.problem(&p("path"), "only valid with sink = \"directory\"");
                }
                self.nexus(&u)
            }
        };
        Some(UploadConfig {
            batch: BatchLimits {
                max_frames: usize::try_from(max_frames).ok()?,
                max_bytes,
                max_age: Duration::from_secs(max_age),
            },
            retry: RetryPolicy {
                initial: Duration::from_millis(initial),
                max: Duration::from_secs(max),
            },
            max_attempts: u.max_attempts.max(1),
            sink: sink?,
        })
    }

    fn nexus(&mut self, u: &RawUpload) -> Option<SinkConfig> {
        let p = |k: &str| [key("upload"), key(k)];
        let endpoint = u.endpoint.clone().unwrap_or_else(defaults::endpoint);
        let endpoint_ok = match reqwest::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => true,
            Ok(_) => {
                self.problem(&p("endpoint"), "must be an http:// or https:// URL");
                false
            }
            Err(e) => {
                self.problem(&p("endpoint"), format!("is not a URL: {e}"));
                false
            }
        };
        let project_id = match &u.project_id {
            None => {
                self.problem(
                    &p("project_id"),
                    "is required with sink = \"nexus\" (the project's `proj_…` id)",
                );
                None
            }
            Some(id) => {
                let bare = id.strip_prefix("proj_").unwrap_or(id);
                if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric()) {
                    self.problem(
                        &p("project_id"),
                        "must look like `proj_` followed by letters and digits",
                    );
                    None
                } else {
                    // The SDK (≥ 1.10) adds the prefix to bare ids; the API wants it.
                    Some(format!("proj_{bare}"))
                }
            }
        };
        let secret = self.secret(u);
        let put = self.range(
            &p("put_concurrency"),
            u.put_concurrency.unwrap_or_else(defaults::put_concurrency),
            1,
            64,
        );
        let rate = self.range(
            &p("session_rate_limit"),
            u.session_rate_limit
                .unwrap_or_else(defaults::session_rate_limit),
            1,
            10_000,
        );
        let mut secs = |k: &str, v: Option<u64>, d: fn() -> u64, min: u64, max: u64| {
            Duration::from_secs(self.range(&p(k), v.unwrap_or_else(d), min, max))
        };
        let window = secs(
            "session_rate_window_secs",
            u.session_rate_window_secs,
            defaults::session_rate_window_secs,
            1,
            86_400,
        );
        let connect = secs(
            "connect_timeout_secs",
            u.connect_timeout_secs,
            defaults::connect_timeout_secs,
            1,
            3600,
        );
        let request = secs(
            "request_timeout_secs",
            u.request_timeout_secs,
            defaults::request_timeout_secs,
            1,
            3600,
        );
        let stall = secs(
            "stall_timeout_secs",
            u.stall_timeout_secs,
            defaults::stall_timeout_secs,
            1,
            3600,
        );
        let op_timeout = secs(
            "operation_timeout_secs",
            u.operation_timeout_secs,
            defaults::operation_timeout_secs,
            1,
            36_000,
        );
        let poll = self.range(
            &p("operation_poll_ms"),
            u.operation_poll_ms
                .unwrap_or_else(defaults::operation_poll_ms),
            100,
            600_000,
        );
        if !endpoint_ok {
            return None;
        }
        secret?;
        Some(SinkConfig::Nexus(NexusConfig {
            endpoint,
            project_id: project_id?,
            put_concurrency: usize::try_from(put).ok()?,
            session_rate_limit: u32::try_from(rate).ok()?,
            session_rate_window: window,
            connect_timeout: connect,
            request_timeout: request,
            stall_timeout: stall,
            operation_poll: Duration::from_millis(poll),
            operation_timeout: op_timeout,
            metadata_api: u.metadata_api.unwrap_or_default(),
        }))
    }

    /// Which of the four secret sources is set; reading it is [`crate::config::resolve()`]'s.
    fn secret(&mut self, u: &RawUpload) -> Option<SecretSource> {
        let p = |k: &str| [key("upload"), key(k)];
        let given = [
            u.secret_key.is_some(),
            u.secret_key_env.is_some(),
            u.secret_key_file.is_some(),
            u.secret_key_credential.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            self.problem(
                &p("secret_key"),
                if given == 0 {
                    "the Nexus secret key is required: set one of secret_key, secret_key_env, secret_key_file or secret_key_credential"
                } else {
                    "set only one of secret_key, secret_key_env, secret_key_file and secret_key_credential"
                },
            );
            return None;
        }
        let (path, source) = if let Some(v) = &u.secret_key {
            (
                p("secret_key"),
                SecretSource::ConfigFile(Secret::new(v.clone())),
            )
        } else if let Some(var) = &u.secret_key_env {
            (p("secret_key_env"), SecretSource::Env(var.clone()))
        } else if let Some(file) = &u.secret_key_file {
            (
                p("secret_key_file"),
                SecretSource::File(PathBuf::from(file)),
            )
        } else if let Some(name) = &u.secret_key_credential {
            (
                p("secret_key_credential"),
                SecretSource::Credential(name.clone()),
            )
        } else {
            return None;
        };
        let site = self.site(&path);
        self.deferred.push(Deferred::Secret {
            site,
            source: source.clone(),
        });
        Some(source)
    }
}
