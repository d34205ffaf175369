//! The Flight SQL service: statements and prepared statements run through the same
//! path as `POST /api/v1/sql` ([`QueryEngine::execute_user_sql`]: admission bounds,
//! the read-only sandbox, the caller's namespace scope, the time, memory, row and
//! concurrency limits), and the metadata calls BI tools browse with ([`super::catalog`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use super::call::Call;
use super::catalog;
use super::status::{status_of, with_code};
use super::tickets::Tickets;
use crate::access::Access;
use crate::engine::{QueryEngine, QueryResult};
use flowlake_service::RowCount;

/// The endpoint label of Flight SQL statements in the query metrics.
pub const ENDPOINT: &str = "flight_sql";

/// How long after the query timeout a result waits for its `DoGet` at most (the query
/// itself fails at its deadline; this only frees what nobody fetched).
const TICKET_MARGIN: Duration = Duration::from_secs(5);

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service over the query engine.
#[derive(Clone)]
pub struct FlightSql {
    engine: Arc<QueryEngine>,
    tickets: Tickets,
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql")
            .field("tickets", &self.tickets)
            .finish()
    }
}

impl FlightSql {
    pub fn new(engine: Arc<QueryEngine>) -> crate::error::Result<Self> {
        let sql_info = catalog::sql_info()
            .map_err(|e| crate::error::QueryError::Config(format!("Flight SQL info: {e}")))?;
        Ok(FlightSql {
            engine,
            tickets: Tickets::default(),
            sql_info: Arc::new(sql_info),
        })
    }

    /// Results waiting for their `DoGet`.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// Starts user SQL as the caller and keeps it under a new ticket.
    async fn start(&self, call: &Call, sql: String) -> Result<(Uuid, SchemaRef), Status> {
        call.record_sql(&sql);
        let access = Access::of(&call.principal);
        let result = self
            .engine
            .execute_user_sql(&sql, ENDPOINT, &access)
            .await
            .map_err(|e| status_of(&e))?;
        let schema = result.schema.clone();
        let ttl = self.engine.limits().timeout + TICKET_MARGIN;
        let id = self
            .tickets
            .insert(result, call.principal.clone(), sql, ttl);
        Ok((id, schema))
    }
}

fn statement_ticket(id: Uuid) -> TicketStatementQuery {
    TicketStatementQuery {
        statement_handle: Bytes::copy_from_slice(id.as_bytes()),
    }
}

fn invalid(message: impl Into<String>) -> Status {
    with_code(Code::InvalidArgument, message, "bad_request")
}

fn internal(e: impl std::fmt::Display) -> Status {
    with_code(Code::Internal, e.to_string(), "encode_error")
}

/// A `FlightInfo` of one endpoint whose ticket is `ticket`, on this connection.
fn info(
    ticket: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor)
        .with_ordered(true);
    Ok(Response::new(info))
}

/// Batches as Flight data, dictionary columns kept as dictionaries (the schema of the
/// `FlightInfo` and of the HTTP endpoint's Arrow answer); a query error ends the
/// stream with its status.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
) -> DoGetStream {
    let batches = batches.map_err(|s| FlightError::Tonic(Box::new(s)));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(batches)
        .map_err(Status::from);
    Box::pin(data)
}

/// A query result as Flight data, its rows counted for the audit line.
fn result_stream(result: QueryResult, rows: RowCount) -> DoGetStream {
    let schema = result.schema.clone();
    let batches = result.into_stream().map(move |r| match r {
        Ok(batch) => {
            rows.add(batch.num_rows());
            Ok(batch)
        }
        Err(e) => Err(status_of(&e)),
    });
    encode(schema, batches)
}

/// One metadata batch as Flight data.
fn batch_response(
    batch: Result<RecordBatch, FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(internal)?;
    let schema = batch.schema();
    Ok(Response::new(encode(
        schema,
        futures::stream::once(async { Ok(batch) }),
    )))
}

/// A prepared statement's handle: the ticket of the result its preparation started,
/// and the SQL (run again by later executions). Nothing is kept per statement.
#[derive(Debug)]
struct Prepared {
    id: Uuid,
    sql: String,
}

impl Prepared {
    fn encode(&self) -> Bytes {
        let mut v = self.id.as_bytes().to_vec();
        v.extend_from_slice(self.sql.as_bytes());
        v.into()
    }

    fn decode(handle: &[u8]) -> Result<Self, Status> {
        let (id, sql) = handle
            .split_at_checked(16)
            .ok_or_else(|| invalid("malformed prepared statement handle"))?;
        let id =
            Uuid::from_slice(id).map_err(|_| invalid("malformed prepared statement handle"))?;
        let sql = String::from_utf8(sql.to_vec())
            .map_err(|_| invalid("malformed prepared statement handle"))?;
        Ok(Prepared { id, sql })
    }
}

fn no_transactions(transaction_id: &Option<Bytes>) -> Result<(), Status> {
    match transaction_id {
        Some(t) if !t.is_empty() => Err(with_code(
            Code::InvalidArgument,
            "transactions are not supported: the query service is read-only",
            "statement_refused",
        )),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = Call::of(&request)?;
        no_transactions(&query.transaction_id)?;
        let (id, schema) = self.start(&call, query.query).await?;
        info(statement_ticket(id), &schema, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let call = Call::of(&request)?;
        let id = Uuid::from_slice(&ticket.statement_handle)
            .map_err(|_| invalid("malformed statement ticket"))?;
        let pending = self.tickets.take(&id, &call.principal).ok_or_else(|| {
            with_code(
                Code::NotFound,
                "unknown or expired ticket: a ticket is good once, for the caller that asked \
                 for it, on the replica that issued it, until the query timeout",
                "not_found",
            )
        })?;
        call.record_sql(&pending.sql);
        Ok(Response::new(result_stream(pending.result, call.rows())))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let call = Call::of(&request)?;
        no_transactions(&query.transaction_id)?;
        let (id, schema) = self.start(&call, query.query.clone()).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(internal)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Prepared {
                id,
                sql: query.query,
            }
            .encode(),
            dataset_schema,
            parameter_schema: Bytes::new(),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = Call::of(&request)?;
        let prepared = Prepared::decode(&cmd.prepared_statement_handle)?;
        call.record_sql(&prepared.sql);
        let (id, schema) = match self.tickets.claim(&prepared.id, &call.principal) {
            Some(schema) => (prepared.id, schema),
            None => self.start(&call, prepared.sql).await?,
        };
        info(statement_ticket(id), &schema, request.into_inner())
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let call = Call::of(&request)?;
        let prepared = Prepared::decode(&query.prepared_statement_handle)?;
        // A preparation never executed frees its query now.
        self.tickets
            .discard_unclaimed(&prepared.id, &call.principal);
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Call::of(&request)?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Call::of(&request)?;
        batch_response(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Call::of(&request)?;
        let schema = query.into_builder().schema();
        info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Call::of(&request)?;
        batch_response(catalog::catalogs(self.engine.context(), query))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Call::of(&request)?;
        let schema = query.clone().into_builder().schema();
        info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Call::of(&request)?;
        batch_response(catalog::db_schemas(self.engine.context(), query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Call::of(&request)?;
        let schema = query.clone().into_builder().schema();
        info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Call::of(&request)?;
        batch_response(catalog::tables(self.engine.context(), query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Call::of(&request)?;
        let schema = query.into_builder().schema();
        info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Call::of(&request)?;
        batch_response(catalog::table_types(query))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_handles_round_trip() {
        let p = Prepared {
            id: Uuid::new_v4(),
            sql: "select 'é' as x".into(),
        };
        let back = Prepared::decode(&p.encode()).unwrap();
        assert_eq!((back.id, back.sql.as_str()), (p.id, "select 'é' as x"));
        assert_eq!(
            Prepared::decode(b"short").unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
