//! `[upload]`: batching, retries, and the sink's own keys (Nexus, Picsellia or a folder).

use std::path::PathBuf;
use std::time::Duration;

use super::Seg;
use super::units;
use super::{Validator, key};
use crate::config::platform::NEXUS_MAX_ASSETS_PER_SESSION;
use crate::config::raw::{RawPicsellia, RawUpload, SinkKind, defaults};
use crate::config::types::{
    BatchLimits, Deferred, LinkPolicy, NexusConfig, PicselliaConfig, RetryPolicy, Secret,
    SecretSource, SinkConfig, UploadConfig,
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
        let start_delay = self.range(&p("start_delay_max_secs"), u.start_delay_max_secs, 0, 3600);
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
        if u.sink != SinkKind::Nexus {
            for (k, set) in nexus_keys {
                if set {
                    self.problem(&p(k), "only valid with sink = \"nexus\"");
                }
            }
        }
        if u.sink != SinkKind::Directory && u.path.is_some() {
            self.problem(&p("path"), "only valid with sink = \"directory\"");
        }
        if u.sink != SinkKind::Picsellia && u.picsellia.is_some() {
            self.problem(&p("picsellia"), "only valid with sink = \"picsellia\"");
        }
        let link = self.link(&u);
        let sink = match u.sink {
            SinkKind::Directory => match u.path {
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
            },
            SinkKind::Nexus => self.nexus(&u),
            SinkKind::Picsellia => match &u.picsellia {
                Some(ps) => self.picsellia(ps),
                None => {
                    self.problem(
                        &p("picsellia"),
                        "the [upload.picsellia] table is required with sink = \"picsellia\" (at least its api_token source)",
                    );
                    None
                }
            },
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
            // A folder is no platform shared with other devices.
            start_delay_max: if u.sink == SinkKind::Directory {
                Duration::ZERO
            } else {
                Duration::from_secs(start_delay)
            },
            link: link?,
            sink: sink?,
        })
    }

    /// The link policy: windows, order, rate cap, budgets.
    fn link(&mut self, u: &RawUpload) -> Option<LinkPolicy> {
        let p = |k: &str| [key("upload"), key(k)];
        let windows = self.windows(&p("windows"), &u.windows)?;
        let mut ok = true;
        let mut amount = |v: &Option<toml::Value>,
                          name: &str,
                          parse: fn(&str) -> Result<u64, String>,
                          example: &str| {
            match v {
                None => None,
                Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
                Some(toml::Value::String(s)) => match parse(s) {
                    Ok(n) => Some(n),
                    Err(msg) => {
                        self.problem(&p(name), msg);
                        ok = false;
                        None
                    }
                },
                Some(_) => {
                    self.problem(&p(name), format!("must be text like {example}"));
                    ok = false;
                    None
                }
            }
        };
        let max_rate = amount(
            &u.max_upload_rate,
            "max_upload_rate",
            units::parse_rate,
            "\"2 Mbit/s\"",
        );
        let daily = amount(
            &u.daily_budget,
            "daily_budget",
            units::parse_size,
            "\"500 MB\"",
        );
        let monthly = amount(
            &u.monthly_budget,
            "monthly_budget",
            units::parse_size,
            "\"2 GB\"",
        );
        if let Some(r) = max_rate.filter(|r| *r < 1000) {
            self.problem(
                &p("max_upload_rate"),
                format!("must be at least 8 kbit/s (got {} bit/s)", r * 8),
            );
            ok = false;
        }
        let day = self.range(&p("budget_reset_day"), u.budget_reset_day, 1, 28);
        if u.budget_reserve_for_newest && daily.is_none() && monthly.is_none() {
            self.problem(
                &p("budget_reserve_for_newest"),
                "needs daily_budget or monthly_budget",
            );
            ok = false;
        }
        ok.then(|| LinkPolicy {
            windows,
            order: u.order,
            max_rate,
            daily_budget: daily,
            monthly_budget: monthly,
            reset_day: u8::try_from(day).unwrap_or(1),
            reserve_for_newest: u.budget_reserve_for_newest,
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
        let secret = self.secret(
            &[key("upload")],
            "secret_key",
            "the Nexus secret key",
            [
                u.secret_key.clone(),
                u.secret_key_env.clone(),
                u.secret_key_file.clone(),
                u.secret_key_credential.clone(),
            ],
        );
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

    /// `[upload.picsellia]`.
    fn picsellia(&mut self, ps: &RawPicsellia) -> Option<SinkConfig> {
        let base = [key("upload"), key("picsellia")];
        let p = |k: &str| [key("upload"), key("picsellia"), key(k)];
        let host_ok = match reqwest::Url::parse(&ps.host) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => true,
            Ok(_) => {
                self.problem(&p("host"), "must be an http:// or https:// URL");
                false
            }
            Err(e) => {
                self.problem(&p("host"), format!("is not a URL: {e}"));
                false
            }
        };
        let secret = self.secret(
            &base,
            "api_token",
            "the Picsellia API token",
            [
                ps.api_token.clone(),
                ps.api_token_env.clone(),
                ps.api_token_file.clone(),
                ps.api_token_credential.clone(),
            ],
        );
        let mut text = |k: &str, v: &Option<String>| match v {
            Some(t) if t.trim().is_empty() => {
                self.problem(
                    &p(k),
                    "must not be blank (leave the key out for the default)",
                );
                None
            }
            Some(t) if t.chars().any(char::is_control) => {
                self.problem(&p(k), "must not contain control characters");
                None
            }
            other => Some(other.clone()),
        };
        let organization = text("organization", &ps.organization);
        let datalake = text("datalake", &ps.datalake);
        let upload_dir = text("upload_dir", &ps.upload_dir);
        let data_source = text("data_source", &ps.data_source);
        let concurrency = self.range(&p("concurrency"), ps.concurrency, 1, 64);
        let mut secs = |k: &str, v: u64, min: u64, max: u64| {
            Duration::from_secs(self.range(&p(k), v, min, max))
        };
        let connect_timeout = secs("connect_timeout_secs", ps.connect_timeout_secs, 1, 3600);
        let request_timeout = secs("request_timeout_secs", ps.request_timeout_secs, 1, 3600);
        let stall_timeout = secs("stall_timeout_secs", ps.stall_timeout_secs, 1, 3600);
        let processing_timeout = secs(
            "processing_timeout_secs",
            ps.processing_timeout_secs,
            0,
            86_400,
        );
        let poll = self.range(
            &p("processing_poll_ms"),
            ps.processing_poll_ms,
            100,
            600_000,
        );
        if !host_ok {
            return None;
        }
        secret?;
        Some(SinkConfig::Picsellia(PicselliaConfig {
            host: ps.host.clone(),
            organization: organization?,
            datalake: datalake?,
            upload_dir: upload_dir?,
            data_source: data_source?,
            concurrency: usize::try_from(concurrency).ok()?,
            connect_timeout,
            request_timeout,
            stall_timeout,
            processing_poll: Duration::from_millis(poll),
            processing_timeout,
        }))
    }

    /// Which of the four sources of a secret (`{name}`, `{name}_env`, `{name}_file`,
    /// `{name}_credential` under `table`) is set; reading it is
    /// [`crate::config::resolve()`]'s.
    fn secret(
        &mut self,
        table: &[Seg],
        name: &str,
        what: &str,
        values: [Option<String>; 4],
    ) -> Option<SecretSource> {
        let p = |suffix: &str| {
            let mut v = table.to_vec();
            v.push(key(&format!("{name}{suffix}")));
            v
        };
        let given = values.iter().filter(|x| x.is_some()).count();
        if given != 1 {
            let keys = format!("{name}, {name}_env, {name}_file or {name}_credential");
            self.problem(
                &p(""),
                if given == 0 {
                    format!("{what} is required: set one of {keys}")
                } else {
                    format!("set only one of {keys}")
                },
            );
            return None;
        }
        let [value, env, file, credential] = values;
        let (path, source) = if let Some(v) = value {
            (p(""), SecretSource::ConfigFile(Secret::new(v)))
        } else if let Some(var) = env {
            (p("_env"), SecretSource::Env(var))
        } else if let Some(f) = file {
            (p("_file"), SecretSource::File(PathBuf::from(f)))
        } else if let Some(c) = credential {
            (p("_credential"), SecretSource::Credential(c))
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
