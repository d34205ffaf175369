//! Where the Delta table lives: the flags shared by `query` and `export`, and the plain
//! location behind them (a leaf module: plain data, no other module of the crate).

use std::collections::HashMap;

/// Where the Delta table lives and how to reach it (shared by `query` and `export`).
#[derive(Debug, Clone, clap::Args)]
pub struct TableArgs {
    /// Table location: a local directory or an `s3://`, `gs://`, `az://` URL.
    #[arg(long, default_value = "./flowlake-table", env = "FLOWLAKE_TABLE")]
    pub table: String,
    /// Object-store options `KEY=VALUE` (e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`); credentials also come from the usual `AWS_*`,
    /// `GOOGLE_*`, `AZURE_*` environment variables.
    #[arg(long = "storage-option", value_parser = parse_key_value, env = "FLOWLAKE_STORAGE_OPTIONS", value_delimiter = ',')]
    pub storage_options: Vec<(String, String)>,
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Table location and object-store options, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableLocation {
    /// A URL (`file:///…`, `s3://…`) or a local path.
    pub location: String,
    pub storage_options: HashMap<String, String>,
}

impl TableArgs {
    pub fn into_location(self) -> TableLocation {
        TableLocation {
            location: self.table,
            storage_options: self.storage_options.into_iter().collect(),
        }
    }
}
