//! The `captures` SQL table: one row per captured pod interface of every
//! completed node file, read from the descriptions under `_captures/` at
//! each scan (so a file completed a moment ago is a row now). Scoped tokens
//! see it through `NamespaceFiltered` on `namespace`, as `flows`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::store::CaptureFiles;

/// Name the table is registered under.
pub const CAPTURES: &str = "captures";
/// Its namespace column (what scoped tokens are filtered on).
pub const NAMESPACE_COLUMNS: [&str; 1] = ["namespace"];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRow {
    pub id: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub interface: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub object_path: String,
    pub filter: String,
    pub requested_by: String,
}

fn micros(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Every row: the interfaces of every completed file.
pub async fn rows(files: &CaptureFiles) -> crate::error::Result<Vec<CaptureRow>> {
    let mut out = Vec::new();
    for id in files.ids().await? {
        for (node, d) in files.stored(&id).await?.files {
            for i in &d.interfaces {
                out.push(CaptureRow {
                    id: id.clone(),
                    node: node.clone(),
                    namespace: i.namespace.clone(),
                    pod: i.pod.clone(),
                    interface: i.interface.clone(),
                    start: micros(&i.start),
                    end: micros(&i.end),
                    packets: i.packets,
                    bytes: i.bytes,
                    lost: i.lost,
                    object_path: d.object_path.clone(),
                    filter: d.filter.clone(),
                    requested_by: d.requested_by.clone(),
                });
            }
        }
    }
    Ok(out)
}

pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let u = |n: &str| Field::new(n, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        s("id"),
        s("node"),
        s("namespace"),
        s("pod"),
        s("interface"),
        Field::new("start", ts.clone(), true),
        Field::new("end", ts, true),
        u("packets"),
        u("bytes"),
        u("lost"),
        s("object_path"),
        s("filter"),
        s("requested_by"),
    ]))
}

fn batch(rows: &[CaptureRow]) -> DfResult<RecordBatch> {
    let s = |f: fn(&CaptureRow) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let t = |f: fn(&CaptureRow) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let u = |f: fn(&CaptureRow) -> u64| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let columns = vec![
        s(|r| &r.id),
        s(|r| &r.node),
        s(|r| &r.namespace),
        s(|r| &r.pod),
        s(|r| &r.interface),
        t(|r| r.start),
        t(|r| r.end),
        u(|r| r.packets),
        u(|r| r.bytes),
        u(|r| r.lost),
        s(|r| &r.object_path),
        s(|r| &r.filter),
        s(|r| &r.requested_by),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// The table over the capture descriptions of one table root.
#[derive(Debug)]
pub struct CapturesTable {
    files: CaptureFiles,
}

impl CapturesTable {
    pub fn new(files: CaptureFiles) -> Self {
        CapturesTable { files }
    }
}

#[async_trait]
impl TableProvider for CapturesTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = rows(&self.files)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let table = MemTable::try_new(schema(), vec![vec![batch(&rows)?]])?;
        table.scan(state, projection, filters, limit).await
    }
}
