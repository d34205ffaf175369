//! Entry points for the `flowlake` binary: each builds a runtime and runs a role.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::QueryArgs;
use crate::error::{QueryError, Result};
use crate::export::{ExportArgs, ExportSummary, run_export};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `flowlake query`: serves until Ctrl-C or SIGTERM, then drains for at most
/// `--shutdown-grace`.
pub fn query_main(args: QueryArgs) -> Result<()> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        let shutdown = flowlake_service::shutdown_signal();
        crate::server::run(args.into_config(), shutdown).await
    });
    // Work abandoned after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// `flowlake export`: runs one export with a progress line on stderr.
pub fn export_main(args: ExportArgs) -> Result<ExportSummary> {
    let quiet = args.quiet;
    let cfg = args.into_config();
    runtime()?.block_on(async move {
        let started = Instant::now();
        // The export is one DataFusion write (no row count before it ends): a spinner
        // with the elapsed time, then the rows written. Hidden when quiet or not a TTY.
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}")
                .expect("static progress template"),
        );
        bar.set_message(format!("exporting to {}", cfg.destination));
        bar.enable_steady_tick(Duration::from_millis(120));
        let progress_bar = bar.clone();
        let progress: crate::export::Progress = std::sync::Arc::new(move |rows| {
            progress_bar.set_message(format!("{rows} rows written"));
        });
        let outcome = run_export(&cfg, Some(progress)).await;
        bar.finish_and_clear();
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
