//! The `losses` table: what collectors lost and what this ingester refused, per
//! node and interval (`flowlake_schemas::losses`; `docs/schema.md`, "Losses").
//!
//! A Delta table of its own under `_losses/` of the flow table's root (a hidden
//! directory to the flow table's vacuum), partitioned `date`/`hour`. Two writers:
//!
//! - `POST /api/v1/losses`: a collector's loss batch, committed before it is
//!   acknowledged. Loss batches are few and small, so they skip the WAL: each is
//!   one Delta commit carrying the application transaction
//!   `flowlake-losses/<producer>` = its sequence number, so a retry (to this or
//!   another replica) of a batch already stored is answered as a duplicate.
//! - every batch of flows (or losses) refused as bad input (a 4xx that the
//!   collector does not retry): one row per node of the refused rows with their
//!   count (`unit = 'records'`; `'loss_rows'` for a loss batch), or, when the
//!   body cannot be read, one row `unit = 'batches'` without a node; `detail` is
//!   the refusal's reason label. Kind `rejected`.
//! - every batch acknowledged and then quarantined ([`crate::quarantine`]):
//!   the same rows, kind `quarantined`.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use deltalake_core::kernel::StructType;
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::protocol::SaveMode;
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use flowlake_schemas::losses::{LOSSES_DIR, component};
use flowlake_schemas::{
    LossRow, PARTITION_COLUMNS, batch_to_losses, col, loss_schema, losses_to_batch,
};
use tokio::sync::Mutex;

use crate::config::TableConfig;
use crate::decode::{BodyEncoding, DecodeError};
use crate::error::{IngestError, Result};
use crate::exactly_once::SequencedId;
use crate::http::{HttpState, IngestResponse, batch_id};
use crate::metrics::Metrics;
use crate::table::{COMMIT_RETRIES, table_url};
use crate::validate::{EARLIEST_MICROS, MAX_FUTURE_MICROS};
use crate::writer::Clock;

/// Route of collectors' loss batches.
pub const LOSSES_ROUTE: &str = "/api/v1/losses";
/// Largest loss batch taken, as sent and once inflated (a report holds a few rows).
pub const MAX_LOSS_BODY: usize = 4 << 20;
/// Prefix of the app ids of stored loss batches.
pub const APP_PREFIX: &str = "flowlake-losses/";

/// The open losses table.
pub struct LossTable {
    delta: Mutex<DeltaTable>,
    metrics: Metrics,
    clock: Clock,
}

impl std::fmt::Debug for LossTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossTable").finish_non_exhaustive()
    }
}

/// Where the losses table of the flow table at `cfg` lives.
pub fn losses_url(cfg: &TableConfig) -> Result<url::Url> {
    let mut root = table_url(&cfg.location)?;
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    root.join(&format!("{LOSSES_DIR}/"))
        .map_err(|source| IngestError::Location {
            location: cfg.location.clone(),
            source,
        })
}

impl LossTable {
    /// Opens the losses table beside the flow table at `cfg`, creating it when
    /// missing (losing a create race to another replica just opens it).
    pub async fn open_or_create(cfg: &TableConfig, metrics: Metrics, clock: Clock) -> Result<Self> {
        let url = losses_url(cfg)?;
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir)
                .map_err(|source| IngestError::Wal { path: dir, source })?;
        }
        let builder = || {
            DeltaTableBuilder::from_url(url.clone())
                .map(|b| b.with_storage_options(cfg.storage_options.clone()))
        };
        let mut delta = builder()?.build()?;
        let delta = match delta.load().await {
            Ok(()) => delta,
            Err(DeltaTableError::NotATable(_)) => {
                let schema: StructType = loss_schema().as_ref().try_into_kernel()?;
                let created = delta
                    .create()
                    .with_table_name("losses")
                    .with_comment(
                        "Flowlake losses: what was not counted or stored, per node and interval",
                    )
                    .with_columns(schema.fields().cloned())
                    .with_partition_columns(PARTITION_COLUMNS)
                    .with_save_mode(SaveMode::Ignore)
                    .await;
                match created {
                    Ok(t) => t,
                    Err(_) => builder()?.load().await?,
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(LossTable {
            delta: Mutex::new(delta),
            metrics,
            clock,
        })
    }

    /// Appends `rows` in one commit; with `batch` (`<producer>/<seq>`) only when
    /// no replica stored that batch yet. `false`: it was already stored.
    pub async fn append(&self, rows: &[LossRow], batch: Option<&SequencedId>) -> Result<bool> {
        let batch_rb = losses_to_batch(rows).map_err(|e| IngestError::Internal(e.to_string()))?;
        let mut delta = self.delta.lock().await;
        delta.update_state().await?;
        let txn = match batch {
            Some(id) => {
                let app = format!("{APP_PREFIX}{}", id.producer);
                let stored = delta
                    .snapshot()?
                    .transaction_version(delta.log_store().as_ref(), &app)
                    .await?;
                if stored.is_some_and(|v| v >= id.seq as i64) {
                    return Ok(false);
                }
                vec![Transaction::new(app, id.seq as i64)]
            }
            None => Vec::new(),
        };
        if rows.is_empty() {
            return Ok(true);
        }
        let props = CommitProperties::default()
            .with_max_retries(COMMIT_RETRIES)
            .with_application_transactions(txn);
        let written = delta
            .clone()
            .write(vec![batch_rb])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await?;
        *delta = written;
        Ok(true)
    }

    /// Records a refused batch (`body`, when it was read) as loss rows: its
    /// rows (`unit`: `records` of flows, `loss_rows` of a loss batch), kind
    /// `rejected`.
    pub async fn record_refusal(
        &self,
        body: Option<&[u8]>,
        encoding: BodyEncoding,
        unit: &str,
        why: &IngestError,
    ) {
        self.record(SetAside::Rejected, body, encoding, unit, why)
            .await
    }

    /// Records a batch quarantined after it was acknowledged (WAL replay, or a
    /// flush that cannot encode it) as loss rows: kind `quarantined`, its
    /// records per node.
    pub async fn record_quarantine(&self, body: &[u8], encoding: BodyEncoding, why: &IngestError) {
        let unit = "records";
        self.record(SetAside::Quarantined, Some(body), encoding, unit, why)
            .await
    }

    async fn record(
        &self,
        kind: SetAside,
        body: Option<&[u8]>,
        encoding: BodyEncoding,
        unit: &str,
        why: &IngestError,
    ) {
        let now = (self.clock)();
        let rows = refused_rows(body, encoding, kind, unit, why.reason(), now);
        match self.append(&rows, None).await {
            Ok(_) => tracing::warn!(
                kind = kind.as_str(),
                reason = why.reason(),
                rows = rows.len(),
                "batch set aside recorded in the losses table"
            ),
            Err(e) => {
                self.metrics.error("losses");
                tracing::error!(error = %e, kind = kind.as_str(), reason = why.reason(), "cannot record a batch set aside in the losses table");
            }
        }
    }
}

/// Why the ingester wrote a batch's rows off (the `kind` of its loss rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAside {
    /// Refused as bad input before it was acknowledged.
    Rejected,
    /// Acknowledged, then found unwritable and quarantined.
    Quarantined,
}

impl SetAside {
    pub fn as_str(self) -> &'static str {
        match self {
            SetAside::Rejected => "rejected",
            SetAside::Quarantined => "quarantined",
        }
    }
}

/// Whether a refusal loses the batch: bad input the collector will not retry
/// (not a token problem, an overload or a timeout).
pub fn is_refusal(e: &IngestError) -> bool {
    let status = e.status();
    status.is_client_error() && !e.retryable() && !matches!(e, IngestError::Service(_))
}

/// Per (cluster, node): rows and their time range.
type Seen = std::collections::BTreeMap<(Option<String>, Option<String>), (i64, i64, i64)>;

/// What can be read of a refused body: rows per cluster and node with their
/// interval range, or one `batches` row when nothing can.
fn refused_rows(
    body: Option<&[u8]>,
    encoding: BodyEncoding,
    kind: SetAside,
    unit: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Vec<LossRow> {
    let row = |cluster, node, unit: &str, lost, from: DateTime<Utc>, to: DateTime<Utc>| LossRow {
        interval_start: from,
        interval_end: to.max(from),
        cluster,
        node,
        component: component::INGESTER.into(),
        kind: kind.as_str().into(),
        unit: unit.into(),
        lost,
        lost_bytes: None,
        detail: Some(reason.to_string()),
    };
    let seen = body.and_then(|b| read_loosely(b, encoding, now));
    match seen {
        Some(seen) if !seen.is_empty() => seen
            .into_iter()
            .map(|((cluster, node), (rows, from, to))| {
                let t = |m| DateTime::from_timestamp_micros(m).unwrap_or(now);
                row(cluster, node, unit, rows, t(from), t(to))
            })
            .collect(),
        _ => vec![row(None, None, "batches", 1, now, now)],
    }
}

/// Reads an Arrow IPC body without the schema's rules: rows per cluster and
/// node, and the range of their (sane) interval columns.
fn read_loosely(body: &[u8], encoding: BodyEncoding, now: DateTime<Utc>) -> Option<Seen> {
    let batches =
        flowlake_wire::decode_any(body, encoding, MAX_LOSS_BODY.max(body.len() * 64)).ok()?;
    let latest = now.timestamp_micros() + MAX_FUTURE_MICROS;
    let sane = |m: i64| (EARLIEST_MICROS..=latest).contains(&m);
    let mut seen = Seen::new();
    for batch in batches {
        let strings = |name| {
            let c = batch.column_by_name(name)?;
            cast(c, &DataType::Utf8).ok()
        };
        let times = |name| {
            let c = batch.column_by_name(name)?;
            c.as_primitive_opt::<TimestampMicrosecondType>().cloned()
        };
        let (cluster, node) = (strings(col::CLUSTER), strings(col::NODE));
        let (start, end) = (times(col::INTERVAL_START), times(col::INTERVAL_END));
        let text = |a: &Option<arrow::array::ArrayRef>, row| {
            let a = a.as_ref()?.as_string::<i32>();
            a.is_valid(row).then(|| a.value(row).to_string())
        };
        for row in 0..batch.num_rows() {
            let at = |a: &Option<arrow::array::PrimitiveArray<TimestampMicrosecondType>>| {
                a.as_ref()
                    .filter(|a| a.is_valid(row))
                    .map(|a| a.value(row))
                    .filter(|m| sane(*m))
            };
            let from = at(&start).unwrap_or(now.timestamp_micros());
            let to = at(&end).unwrap_or(from).max(from);
            let e = seen
                .entry((text(&cluster, row), text(&node, row)))
                .or_insert((0, from, to));
            e.0 += 1;
            e.1 = e.1.min(from);
            e.2 = e.2.max(to);
        }
    }
    Some(seen)
}

/// The losses route (token with `ingest`, layered by the caller).
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route(LOSSES_ROUTE, post(post_losses))
        .route_layer(axum::extract::DefaultBodyLimit::max(MAX_LOSS_BODY))
}

/// A batch the flows route refused: recorded when it is a refusal and the
/// losses table is open. `seen`: its body, when it was read.
pub async fn refused(s: &HttpState, seen: Option<(Bytes, BodyEncoding)>, e: &IngestError) {
    let Some(table) = s.losses.get().filter(|_| is_refusal(e)) else {
        return;
    };
    match seen {
        Some((body, encoding)) => {
            table
                .record_refusal(Some(&body), encoding, "records", e)
                .await
        }
        None => {
            table
                .record_refusal(None, BodyEncoding::Identity, "records", e)
                .await
        }
    }
}

async fn post_losses(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(t) = s.losses.get() else {
        return IngestError::NotReady.into_response();
    };
    let encoding = match BodyEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    ) {
        Ok(e) => e,
        Err(e) => return IngestError::from(e).into_response(),
    };
    match store(t, &headers, &body, encoding).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => {
            if is_refusal(&e) {
                t.record_refusal(Some(&body), encoding, "loss_rows", &e)
                    .await;
            }
            e.into_response()
        }
    }
}

async fn store(
    t: &LossTable,
    headers: &HeaderMap,
    body: &Bytes,
    encoding: BodyEncoding,
) -> Result<IngestResponse> {
    let id = batch_id(headers)?;
    let batches = flowlake_wire::decode_any(body, encoding, MAX_LOSS_BODY)?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(
            batch_to_losses(batch).map_err(|e| IngestError::Decode(DecodeError::Schema(e)))?,
        );
    }
    let sequenced = id.as_ref().and_then(SequencedId::parse);
    let fresh = t.append(&rows, sequenced.as_ref()).await?;
    Ok(IngestResponse {
        rows: rows.len() as u64,
        duplicate: !fresh,
    })
}
