//! Entry points for the `flowlake` binary: each builds a runtime and runs a role.

use std::io::Write;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::QueryArgs;
use crate::error::{QueryError, Result};
use crate::export::{ExportArgs, ExportSummary, run_export};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `flowlake query`: serves until Ctrl-C / SIGTERM.
pub fn query_main(args: QueryArgs) -> Result<()> {
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            token.cancel();
        });
        crate::server::run(args.into_config(), shutdown).await
    })
}

/// `flowlake export`: runs one export with a progress line on stderr.
pub fn export_main(args: ExportArgs) -> Result<ExportSummary> {
    let quiet = args.quiet;
    let cfg = args.into_config();
    runtime()?.block_on(async move {
        let started = Instant::now();
        let spinner = (!quiet).then(|| {
            tokio::spawn(async move {
                let frames = ['|', '/', '-', '\\'];
                for i in 0.. {
                    eprint!("\r{} exporting… {:.0?}", frames[i % 4], started.elapsed());
                    let _ = std::io::stderr().flush();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        });
        let outcome = run_export(&cfg, None).await;
        if let Some(s) = spinner {
            s.abort();
            eprintln!("\r");
        }
        let summary = outcome?;
        if !quiet {
            eprintln!(
                "exported {} rows (Delta versions {}..={}) to {} in {:.1?}",
                summary.rows,
                summary
                    .from_version
                    .map_or("start".to_string(), |v| (v + 1).to_string()),
                summary.to_version,
                cfg.destination,
                started.elapsed()
            );
        }
        Ok::<_, QueryError>(summary)
    })
}
