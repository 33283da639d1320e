//! The `edgecap` binary: everything is in the `cli` module (commands) and the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
