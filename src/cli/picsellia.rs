//! `edgecap picsellia data list|get|tag|delete`: the datalake from the device, with the
//! config's token (resolved without the folder checks, so a user who cannot write the queue
//! may run them). Human tables by default, `--json` for scripts; errors name the data and
//! the platform's words; the token is never printed.

use std::io::Write;

use anyhow::{Context, bail};
use edgecap::config::{Resolved, SinkConfig};
use edgecap::upload::picsellia::admin::{Admin, DataView};

use super::args::DataCommand;

/// Runs one `picsellia data` command.
pub fn data(resolved: &Resolved, command: DataCommand) -> anyhow::Result<()> {
    let SinkConfig::Picsellia(cfg) = &resolved.config.upload.sink else {
        bail!(
            "upload.sink is \"{}\": the picsellia commands need sink = \"picsellia\"",
            resolved.config.upload.sink.name()
        );
    };
    let token = resolved
        .secret
        .clone()
        .context("the Picsellia API token was not resolved")?;
    let admin = Admin::new(cfg, token, &resolved.device_id)?;
    let rt = super::platform::runtime()?;
    let mut out = std::io::stdout().lock();
    match command {
        DataCommand::List { tag, limit, json } => {
            let list = rt.block_on(admin.list(tag.as_deref(), limit))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                table(&mut out, &list)?;
            }
        }
        DataCommand::Get { data, json } => {
            let d = rt.block_on(admin.get(&data))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &d)?;
                writeln!(out)?;
            } else {
                detail(&mut out, &d)?;
            }
        }
        DataCommand::Tag { data, tags } => {
            let d = rt.block_on(admin.tag(&data, &tags))?;
            writeln!(
                out,
                "{} ({}) now tagged: {}",
                d.filename,
                d.id,
                d.tags.join(", ")
            )?;
        }
        DataCommand::Delete { data, yes } => {
            let d = rt.block_on(admin.get(&data))?;
            if !yes
                && !super::platform::confirm(&format!(
                    "Delete {} ({}) from the datalake?",
                    d.filename, d.id
                ))?
            {
                bail!("not deleted (answer y, or pass --yes)");
            }
            rt.block_on(admin.delete(&d.id))?;
            writeln!(out, "deleted {} ({})", d.filename, d.id)?;
        }
    }
    Ok(())
}

fn table(out: &mut impl Write, list: &[DataView]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<9}  {:<48}  TAGS",
        "ID", "STATUS", "FILENAME"
    )?;
    for d in list {
        writeln!(
            out,
            "{:<36}  {:<9}  {:<48}  {}",
            d.id,
            d.status,
            d.filename,
            d.tags.join(",")
        )?;
    }
    writeln!(out, "{} data", list.len())
}

fn detail(out: &mut impl Write, d: &DataView) -> std::io::Result<()> {
    writeln!(out, "id:              {}", d.id)?;
    writeln!(out, "filename:        {}", d.filename)?;
    writeln!(out, "object name:     {}", d.object_name)?;
    writeln!(out, "status:          {}", d.status)?;
    writeln!(out, "tags:            {}", d.tags.join(", "))?;
    writeln!(out, "metadata:        {}", d.metadata)?;
    writeln!(out, "custom metadata: {}", d.custom_metadata)
}
