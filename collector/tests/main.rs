//! Integration tests of flowlake-collector (one binary, one module per area).

mod enrich;
mod ship;
