//! `flowlake`: one binary with a subcommand per role. Parsing and wiring only; each
//! role's logic lives in its crate.

mod cli;
mod standalone;

use clap::Parser;

/// jemalloc keeps freed pages for reuse: every role builds and drops large Arrow
/// buffers batch after batch, and the system allocator's unmap/fault cycle on them
/// cost the record builder about 40% of its time (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
