//! What BI tools and the ADBC/JDBC drivers browse before they query: the server's
//! `SqlInfo`, and the catalogs, schemas, tables (with their Arrow schemas) and table
//! types of the DataFusion session. Every session (each namespace scope) registers
//! the same tables, so they are listed from the session of every namespace; what a
//! scoped token reads of them is still filtered when it queries them.

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, SqlInfo,
    SqlSupportedTransaction,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

/// The table types this server lists.
const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => TABLE_TYPES[0],
        TableType::View => TABLE_TYPES[1],
        TableType::Temporary => TABLE_TYPES[2],
    }
}

/// The answers to `GetSqlInfo`: a read-only SQL server without transactions.
pub fn sql_info() -> Result<SqlInfoData, FlightError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Flowlake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs).
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.build()
}

pub fn catalogs(
    ctx: &SessionContext,
    query: CommandGetCatalogs,
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for name in ctx.catalog_names() {
        b.append(name);
    }
    b.build()
}

pub fn db_schemas(
    ctx: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for catalog in ctx.catalog_names() {
        let Some(list) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema in list.schema_names() {
            b.append(&catalog, schema);
        }
    }
    b.build()
}

pub async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for catalog in ctx.catalog_names() {
        let Some(list) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema_name in list.schema_names() {
            let Some(schema) = list.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let table = schema
                    .table(&name)
                    .await
                    .map_err(|e| FlightError::ExternalError(Box::new(e)))?;
                if let Some(table) = table {
                    let arrow_schema = table.schema();
                    b.append(
                        &catalog,
                        &schema_name,
                        &name,
                        type_name(table.table_type()),
                        &arrow_schema,
                    )?;
                }
            }
        }
    }
    b.build()
}

pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for t in TABLE_TYPES {
        b.append(t);
    }
    b.build()
}
