//! `edgecap nexus assets list|get|update|delete` and `edgecap nexus groups`: the project's
//! assets from the device, with the config's key (resolved without the folder checks).
//! Human tables by default, `--json` for scripts; errors name the asset and the
//! platform's words; the key is never printed.

use std::io::Write;

use anyhow::{Context, bail};
use edgecap::config::{Resolved, SinkConfig};
use edgecap::upload::nexus::admin::{AssetView, NexusAdmin};

use super::args::{AssetCommand, NexusCommand};
use super::platform::{confirm, metadata, runtime};

/// Runs one `nexus` command.
pub fn run(resolved: &Resolved, command: NexusCommand) -> anyhow::Result<()> {
    let SinkConfig::Nexus(cfg) = &resolved.config.upload.sink else {
        bail!(
            "upload.sink is \"{}\": the nexus commands need sink = \"nexus\"",
            resolved.config.upload.sink.name()
        );
    };
    let secret = resolved
        .secret
        .clone()
        .context("the Nexus secret key was not resolved")?;
    let admin = NexusAdmin::new(cfg, secret)?;
    let rt = runtime()?;
    let mut out = std::io::stdout().lock();
    match command {
        NexusCommand::Groups { names, json } => {
            let groups = rt.block_on(admin.groups(&names))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &groups)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{:<24}  STATISTIC", "GROUP")?;
                for g in &groups {
                    writeln!(out, "{:<24}  {}", g.group, g.statistic)?;
                }
            }
        }
        NexusCommand::Assets { command } => assets(&rt, &admin, command, &mut out)?,
    }
    Ok(())
}

fn assets(
    rt: &tokio::runtime::Runtime,
    admin: &NexusAdmin,
    command: AssetCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        AssetCommand::List {
            group,
            limit,
            page,
            all,
            json,
        } => {
            let mut cursor = page;
            let mut listed = Vec::new();
            loop {
                let p = rt.block_on(admin.list(&group, limit.max(1), cursor.as_deref()))?;
                listed.extend(p.data);
                cursor = p.next_page.filter(|c| !c.is_empty());
                if !all || cursor.is_none() {
                    break;
                }
            }
            if json {
                let v = serde_json::json!({ "assets": listed, "nextPage": cursor });
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                table(out, &listed)?;
                match cursor {
                    Some(c) => writeln!(out, "{} asset(s); next page: --page {c}", listed.len())?,
                    None => writeln!(out, "{} asset(s); last page", listed.len())?,
                }
            }
        }
        AssetCommand::Get { asset, json } => {
            let a = rt.block_on(admin.get(&asset))?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &a)?;
                writeln!(out)?;
            } else {
                detail(out, &a)?;
            }
        }
        AssetCommand::Update {
            asset,
            status,
            metadata: pairs,
        } => {
            if status.is_none() && pairs.is_empty() {
                bail!("nothing to update: give --status and/or --metadata KEY=VALUE");
            }
            let m = (!pairs.is_empty()).then(|| metadata(&pairs)).transpose()?;
            let a = rt.block_on(admin.update(&asset, status.as_deref(), m.as_ref()))?;
            detail(out, &a)?;
        }
        AssetCommand::Delete { asset, yes } => {
            let a = rt.block_on(admin.get(&asset))?;
            if !yes
                && !confirm(&format!(
                    "Delete {} ({}) from the project?",
                    a.filename, a.id
                ))?
            {
                bail!("not deleted (answer y, or pass --yes)");
            }
            rt.block_on(admin.delete(&a.id))?;
            writeln!(out, "deleted {} ({})", a.filename, a.id)?;
        }
    }
    Ok(())
}

fn table(out: &mut impl Write, list: &[AssetView]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<44}  {:<10}  {:>9}  {:<48}  GROUPS",
        "ID", "STATUS", "BYTES", "FILENAME"
    )?;
    for a in list {
        writeln!(
            out,
            "{:<44}  {:<10}  {:>9}  {:<48}  {}",
            a.id,
            a.status,
            a.metadata.file_size,
            a.filename,
            a.metadata.groups.join(",")
        )?;
    }
    Ok(())
}

fn detail(out: &mut impl Write, a: &AssetView) -> std::io::Result<()> {
    writeln!(out, "id:              {}", a.id)?;
    writeln!(out, "filename:        {}", a.filename)?;
    writeln!(out, "status:          {}", a.status)?;
    writeln!(out, "bytes:           {}", a.metadata.file_size)?;
    writeln!(out, "type:            {}", a.metadata.mime_type)?;
    writeln!(out, "groups:          {}", a.metadata.groups.join(", "))?;
    let m = a
        .metadata
        .custom_metadata
        .as_ref()
        .map_or("(none)".to_string(), |v| v.to_string());
    writeln!(out, "custom metadata: {m}")
}
