//! `flowlake`: one binary with a subcommand per role. Parsing and wiring only; each
//! role's logic lives in its crate.

mod cli;
mod standalone;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli.log);
    match cli::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
