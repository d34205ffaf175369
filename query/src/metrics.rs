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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

/// Handles to the service's metrics (cheap to clone).
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub seconds: Family<EndpointLabel, Histogram>,
    pub export_rows: Counter,
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
        }
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
