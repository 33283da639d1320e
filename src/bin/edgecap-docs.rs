//! `edgecap-docs DIR`: the man pages (`clap_mangen`, one per command: `edgecap.1`,
//! `edgecap-status.1`, …) and the shell completions (`clap_complete`: bash, zsh, fish) of
//! `edgecap`, generated from the very command-line definition the binary parses
//! (`src/cli/args.rs`, compiled in here too), so they cannot drift from it. A build tool,
//! not installed: `debian/make-docs` runs it for the `.deb`.

#[path = "../cli/args.rs"]
#[allow(
    dead_code,
    reason = "only the definition is used here, not the parsed values"
)]
mod args;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        #[allow(clippy::print_stderr, reason = "usage")]
        {
            eprintln!("usage: edgecap-docs DIR (writes DIR/man/*.1 and DIR/completions/*)");
        }
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "the tool's error output")]
            {
                eprintln!("edgecap-docs: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes `dir/man/*.1` and `dir/completions/{edgecap.bash,_edgecap,edgecap.fish}`.
fn generate(dir: &std::path::Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = args::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write the man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "edgecap", &completions)
            .with_context(|| format!("cannot write the {shell} completion"))?;
    }
    println!("{}: man pages and completions written", dir.display());
    Ok(())
}
