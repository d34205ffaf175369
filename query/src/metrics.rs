//! Metrics of the query service; names in one place, registry passed in.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::QueryError;

pub const QUERIES: &str = "flowlake_query_queries";
pub const QUERY_SECONDS: &str = "flowlake_query_query_duration_seconds";
pub const EXPORT_ROWS: &str = "flowlake_query_export_rows";
pub const ROLLUP_FILES: &str = "flowlake_query_rollup_files";
pub const ROLLUP_PASSES: &str = "flowlake_query_rollup_passes";
pub const QUESTION_HOURS: &str = "flowlake_query_question_hours";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

/// `action`: `built`, `deleted`; `outcome`: `ok`, `error`; `source`: `rollup`, `rows`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Handles to the service's metrics (cheap to clone).
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub seconds: Family<EndpointLabel, Histogram>,
    pub export_rows: Counter,
    /// Rollup files built and deleted (`kind`: `built`, `deleted`).
    pub rollup_files: Family<KindLabel, Counter>,
    /// Rollup build passes (`kind`: `ok`, `error`).
    pub rollup_passes: Family<KindLabel, Counter>,
    /// Hours of question ranges answered, by source (`kind`: `rollup`, `rows`).
    pub question_hours: Family<KindLabel, Counter>,
}

impl QueryMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register(
            QUERIES,
            "Queries started, by endpoint and outcome",
            m.queries.clone(),
        );
        registry.register(
            QUERY_SECONDS,
            "Time to plan and start a query",
            m.seconds.clone(),
        );
        registry.register(
            EXPORT_ROWS,
            "Rows written by exports",
            m.export_rows.clone(),
        );
        for (name, help, family) in [
            (
                ROLLUP_FILES,
                "Hourly rollup files built and deleted",
                &m.rollup_files,
            ),
            (
                ROLLUP_PASSES,
                "Rollup build passes, by outcome",
                &m.rollup_passes,
            ),
            (
                QUESTION_HOURS,
                "Hours of per-pod question ranges, by where they were answered from (partial hours count as one)",
                &m.question_hours,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        m
    }

    /// Metrics that are not exported anywhere (tests, embedded use).
    pub fn unregistered() -> Self {
        QueryMetrics {
            queries: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            export_rows: Counter::default(),
            rollup_files: Family::default(),
            rollup_passes: Family::default(),
            question_hours: Family::default(),
        }
    }

    pub fn count(family: &Family<KindLabel, Counter>, kind: &'static str, n: usize) {
        family.get_or_create(&KindLabel { kind }).inc_by(n as u64);
    }

    pub fn observe<T>(
        &self,
        endpoint: &'static str,
        outcome: &Result<T, QueryError>,
        took: Duration,
    ) {
        let outcome = match outcome {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.queries
            .get_or_create(&QueryLabels { endpoint, outcome })
            .inc();
        self.seconds
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }
}
