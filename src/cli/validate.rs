//! `edgecap config validate`'s report: the warnings and notes of a config that resolved,
//! and with `--online` what only the machine's PATH and the network can tell — each
//! command source's program is found, the key is not a placeholder, the platform accepts
//! it and knows the project or datalake (the sink's own start-up check, one cheap call),
//! and the upload session budget fits the platform's limit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use edgecap::config::{Resolved, SinkConfig, SourceConfig};
use edgecap::upload::{ConfiguredSink, SessionJournal, SessionRef, Sink, Verdict};

use super::{EXIT_CONFIG, EXIT_RUNTIME};

/// The template's placeholder project id.
const PLACEHOLDER_PROJECT: &str = "proj_00000000000000000000000000000000";
/// Keys shorter than this are typos or placeholders: both platforms issue long ones.
const MIN_KEY_CHARS: usize = 20;
/// How long the platform check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// `config validate`'s report of a config that resolved.
pub(super) fn validated(r: &Resolved, path: &Path) -> ExitCode {
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    println!(
        "{}: ok ({} camera(s), device {})",
        path.display(),
        r.config.cameras.len(),
        r.device_id
    );
    ExitCode::SUCCESS
}

/// `config validate --online`: the offline report, then the online checks, each on a line
/// of its own; exit 2 when any fails (1 when the platform could not be asked).
pub(super) fn validated_online(r: &Resolved, path: &Path) -> ExitCode {
    let offline = validated(r, path);
    if offline != ExitCode::SUCCESS {
        return offline;
    }
    let mut failed = false;
    let mut unreachable = false;
    for (camera, program) in programs(r) {
        match find_program(&program) {
            Some(at) => println!(
                "online: camera {camera}: {program} found at {}",
                at.display()
            ),
            None => {
                failed = true;
                println!(
                    "problem: camera {camera}: the program {program:?} is not found on PATH ({})",
                    std::env::var("PATH").unwrap_or_default()
                );
            }
        }
    }
    match platform_precheck(r) {
        Err(problem) => {
            failed = true;
            println!("problem: {problem}");
        }
        Ok(None) => {}
        Ok(Some(what)) => match check_platform(r) {
            Ok(Verdict::Ok) => println!("online: {what} accepted the key"),
            Ok(Verdict::OperatorMustAct(why)) | Ok(Verdict::Split(why)) => {
                failed = true;
                println!("problem: {what} refused: {why}");
            }
            Ok(Verdict::Offline(why))
            | Ok(Verdict::Backoff { reason: why, .. })
            | Ok(Verdict::RateLimited(why)) => {
                unreachable = true;
                println!("problem: {what} could not be asked: {why}");
            }
            Err(e) => {
                failed = true;
                println!("problem: {what}: {e}");
            }
        },
    }
    if let Some(line) = session_budget(r) {
        println!("online: {line}");
    }
    if failed {
        ExitCode::from(EXIT_CONFIG)
    } else if unreachable {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        println!("{}: online checks passed", path.display());
        ExitCode::SUCCESS
    }
}

/// The programs of the command sources, by camera.
fn programs(r: &Resolved) -> Vec<(String, String)> {
    r.config
        .cameras
        .iter()
        .filter_map(|c| match &c.source {
            SourceConfig::Command { argv, .. } => argv.first().map(|p| (c.name.clone(), p.clone())),
            _ => None,
        })
        .collect()
}

/// Where `program` is: itself when it names a path, else the first executable of that
/// name on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    let executable =
        |p: &Path| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file();
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// What must hold before the platform is asked: a real project id and a key of a
/// plausible length. `Ok(None)` for a sink with no platform; `Ok(Some(name))` names
/// what will be asked.
fn platform_precheck(r: &Resolved) -> Result<Option<String>, String> {
    let (what, key_name) = match &r.config.upload.sink {
        SinkConfig::Directory { .. } => return Ok(None),
        SinkConfig::Nexus(n) => {
            if n.project_id == PLACEHOLDER_PROJECT {
                return Err(format!(
                    "upload.nexus.project_id is the template's placeholder {PLACEHOLDER_PROJECT}: set your project's id (Nexus: project settings)"
                ));
            }
            (
                format!("Nexus project {} at {}", n.project_id, n.endpoint),
                "upload.nexus.secret_key",
            )
        }
        SinkConfig::Picsellia(p) => (
            format!(
                "Picsellia datalake {} at {}",
                p.datalake.as_deref().unwrap_or("(the default)"),
                p.host
            ),
            "upload.picsellia.api_token",
        ),
    };
    let Some(secret) = &r.secret else {
        return Err(format!(
            "{key_name}: the key is provided by systemd at start and cannot be read here; to check it online, run the check with the credential, e.g. `sudo systemd-run --pipe --wait -p LoadCredential=secret_key:/etc/edgecap/secret_key edgecap config validate --online`"
        ));
    };
    let len = secret.expose().chars().count();
    if len < MIN_KEY_CHARS {
        return Err(format!(
            "{key_name}: the key has only {len} characters; a platform key is longer (a placeholder or a truncated copy?)"
        ));
    }
    Ok(Some(what))
}

/// The sink's own start-up check (the one the uploader makes before its first batch).
fn check_platform(r: &Resolved) -> anyhow::Result<Verdict> {
    let rt = super::platform::runtime()?;
    let sink = ConfiguredSink::new(
        &r.config.upload.sink,
        r.secret.as_ref(),
        &r.device_id,
        Arc::new(NoJournal),
    )
    .map_err(anyhow::Error::msg)?;
    rt.block_on(async {
        match tokio::time::timeout(CHECK_TIMEOUT, sink.check()).await {
            Ok(v) => Ok(v),
            Err(_) => Ok(Verdict::Offline(format!(
                "no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    })
}

/// The session budget line (Nexus): sessions per window the group sets need at most, and
/// the limit.
fn session_budget(r: &Resolved) -> Option<String> {
    let SinkConfig::Nexus(n) = &r.config.upload.sink else {
        return None;
    };
    let c = &r.config;
    let sets = c.group_sets().max(1);
    let plan = edgecap::config::platform::session_plan(
        sets,
        c.upload.batch.max_age,
        n.session_rate_limit,
        n.session_rate_window,
    );
    Some(format!(
        "session budget: {sets} group set(s), batches every {} s at most: up to {} session(s) per {} s against a limit of {}{}",
        plan.batch_age.as_secs(),
        plan.per_window.min(u64::from(n.session_rate_limit)),
        n.session_rate_window.as_secs(),
        n.session_rate_limit,
        if plan.batch_age > c.upload.batch.max_age {
            " (batch_max_age_secs is stretched to fit)"
        } else {
            " (fits)"
        }
    ))
}

/// A journal that records nothing: the check sends no frame.
struct NoJournal;

impl SessionJournal for NoJournal {
    fn session_started(&self, _: &[u64], _: &SessionRef) {}
    fn sessions_started(&self, _: &[(u64, SessionRef)]) {}
}
