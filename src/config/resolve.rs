//! Resolving a parsed config against this machine: the host name (when `device.id` is not
//! set), the secret key from its source, and whether the configured folders are usable by
//! this user. How much is answered is the caller's [`Stage`]: `run` and `enqueue` need all
//! of it, the platform commands the secret alone, `config validate` all of it except a
//! systemd credential outside systemd (noted as "provided by systemd at start"), and
//! `config validate --offline` none of it. Read-only views (`status`, `queue stats`, …)
//! do not resolve at all, so they work without the secret and without write access.

use std::path::Path;

use super::types::{Config, Deferred, Secret, SecretSource, Site};
use super::validate::is_name_char;
use super::{ConfigError, Problem};

/// A config resolved against this machine: what the daemon runs with.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The checked config.
    pub config: Config,
    /// `device.id`, or the host name made safe for filenames.
    pub device_id: String,
    /// The platform's secret key (None for a sink that needs none).
    pub secret: Option<Secret>,
    /// Things worth an operator's attention that do not stop the daemon (a file holding
    /// the secret that every user can read, …).
    pub warnings: Vec<String>,
    /// What was left unchecked at this stage, and why (for `config validate`'s report).
    pub notes: Vec<String>,
    /// The config file (read again on SIGHUP).
    pub path: std::path::PathBuf,
}

/// How far [`resolve_at`] answers the config's deferred checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Everything: the secret must be readable now and the folders usable (`run`,
    /// `enqueue`).
    Run,
    /// Everything, except that a systemd credential outside systemd (no
    /// `CREDENTIALS_DIRECTORY`) is noted, not refused: `config validate` run by hand.
    Validate,
    /// The secret only, no folder rights: commands that only talk to the platform.
    Platform,
    /// Neither the secret nor the folders: `config validate --offline`, for any user.
    Offline,
}

/// Answers the config's deferred checks; every problem is listed, with its key and line.
/// `path` is the config file (it may hold the secret itself).
pub fn resolve(config: Config, path: &Path) -> Result<Resolved, ConfigError> {
    resolve_at(config, path, Stage::Run)
}

/// [`resolve()`] without the folder checks: what a command that only talks to the platform
/// needs (`edgecap picsellia …`), so it works for a user who cannot write the queue.
pub fn resolve_platform(config: Config, path: &Path) -> Result<Resolved, ConfigError> {
    resolve_at(config, path, Stage::Platform)
}

/// Answers the config's deferred checks as far as `stage` asks.
pub fn resolve_at(config: Config, path: &Path, stage: Stage) -> Result<Resolved, ConfigError> {
    let folders = matches!(stage, Stage::Run | Stage::Validate);
    let mut problems = Vec::new();
    let mut warnings = config.warnings.clone();
    let mut notes = Vec::new();
    let mut secret = None;
    let mut host = None;
    let problem = |site: &Site, message: String| Problem {
        key: site.key.clone(),
        line: site.line,
        file: site.file.clone(),
        message,
    };
    for d in &config.deferred {
        match d {
            Deferred::HostName => {
                let name = gethostname::gethostname().to_string_lossy().into_owned();
                host = Some(sanitize_name(name.trim()));
            }
            Deferred::Writable { .. } if !folders => {}
            Deferred::Writable {
                site,
                dir,
                required,
            } => {
                if let Err(msg) = check_dir_usable(dir) {
                    if *required {
                        problems.push(problem(site, msg));
                    } else {
                        let at = match site.line {
                            Some(l) => format!("{} (line {l})", site.key),
                            None => site.key.clone(),
                        };
                        warnings.push(format!(
                            "{at}: {msg}; edgecap starts anyway, keeps capturing, and delivers there once it can write"
                        ));
                    }
                }
            }
            Deferred::Secret { site, .. } if stage == Stage::Offline => {
                notes.push(format!("{}: the secret is not read (--offline)", site.key))
            }
            Deferred::Secret {
                site,
                source: SecretSource::Credential(name),
            } if stage == Stage::Validate
                && std::env::var_os("CREDENTIALS_DIRECTORY").is_none() =>
            {
                notes.push(format!(
                    "{}: provided by systemd at start (LoadCredential={name}:…); not read here, outside the service",
                    site.key
                ));
            }
            Deferred::Secret { site, source } => match read_secret(source) {
                Ok(s) => {
                    secret = Some(s);
                    let holder = match source {
                        // The file that set it: the main file or a drop-in.
                        SecretSource::ConfigFile(_) => Some(site.file.as_deref().unwrap_or(path)),
                        SecretSource::File(f) => Some(f.as_path()),
                        _ => None,
                    };
                    if let Some(h) = holder.filter(|h| readable_by_others(h)) {
                        warnings.push(format!(
                            "{} holds the platform's secret and every user of this machine can read it: chmod o-r {} (the .deb installs it as root:edgecap 0640)",
                            h.display(),
                            h.display()
                        ));
                    }
                }
                Err(msg) => problems.push(problem(site, msg)),
            },
        }
    }
    if stage == Stage::Offline
        && config
            .deferred
            .iter()
            .any(|d| matches!(d, Deferred::Writable { .. }))
    {
        notes.push("folder rights are not checked (--offline)".to_string());
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    let device_id = config
        .device_id
        .clone()
        .or(host)
        .unwrap_or_else(|| "device".to_string());
    Ok(Resolved {
        config,
        device_id,
        secret,
        warnings,
        notes,
        path: path.to_path_buf(),
    })
}

/// Reads the secret from its source and checks its shape (never echoing it).
fn read_secret(source: &SecretSource) -> Result<Secret, String> {
    let value = match source {
        SecretSource::ConfigFile(s) => s.expose().to_string(),
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("environment variable `{var}` is not set or not UTF-8"))?,
        SecretSource::File(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read secret file `{}`: {e}", file.display()))?,
        SecretSource::Credential(name) => read_credential(name)?,
    };
    let v = value.trim();
    if v.is_empty() {
        Err("the secret key is empty".to_string())
    } else if v.chars().any(|c| c.is_control() || c == ' ') {
        Err("the secret key contains spaces or control characters".to_string())
    } else {
        Ok(Secret::new(v.to_string()))
    }
}

/// Reads a systemd credential (`LoadCredential=NAME:FILE` puts it in
/// `$CREDENTIALS_DIRECTORY/NAME`).
fn read_credential(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a credential name (a plain file name such as \"secret_key\")"
        ));
    }
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Err(format!(
            "CREDENTIALS_DIRECTORY is not set: secret_key_credential works under systemd with LoadCredential={name}:/path/to/file"
        ));
    };
    let path = Path::new(&dir).join(name);
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read credential `{name}` ({}): {e}", path.display()))
}

/// Whether others (not owner, not group) may read `path`.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Whether this process could create and use `dir`: the nearest existing ancestor must be
/// a directory this user may write into (`access(2)`, so the service user's rights count).
/// Nothing is created.
fn check_dir_usable(dir: &Path) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    if at.is_relative() {
        at = std::env::current_dir()
            .map_err(|e| format!("cannot resolve a relative path: {e}"))?
            .join(at);
    }
    loop {
        match std::fs::metadata(&at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(format!("{} exists and is not a directory", at.display()));
            }
            Err(_) => match at.parent() {
                Some(p) => at = p.to_path_buf(),
                None => return Err(format!("no existing parent of {}", dir.display())),
            },
        }
    }
    // access(2), not the mode bits: it answers for this process's user and groups.
    use rustix::fs::Access;
    rustix::fs::access(&at, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
        format!(
            "{} is not writable by this user: {}",
            at.display(),
            std::io::Error::from(e)
        )
    })
}

/// Makes a host name safe for filenames: every other character becomes `-`.
pub fn sanitize_name(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if is_name_char(c) { c } else { '-' })
        .collect();
    if out.is_empty() {
        "device".to_string()
    } else {
        out
    }
}
