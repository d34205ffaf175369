//! Where the Delta table lives: the command-line flags every role that opens it shares
//! (`ingester`, `compact`, `query`, `export`), and the plain location behind them.

use std::collections::HashMap;

/// Where the Delta table lives and how to reach it.
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

/// A `KEY=VALUE` flag value (object-store options).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
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

impl TableLocation {
    /// Adds object-store options from the environment (see
    /// [`crate::cloud_env_options`]); explicit options win.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut options = crate::cloud_env_options(vars);
        options.extend(self.storage_options);
        self.storage_options = options;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_environment_options() {
        assert_eq!(
            parse_key_value(" aws_region = eu-west-1 "),
            Ok(("aws_region".into(), "eu-west-1".into()))
        );
        assert!(parse_key_value("no-equals").is_err());
        let loc = TableArgs {
            table: "s3://b/t".into(),
            storage_options: vec![("aws_region".into(), "explicit".into())],
        }
        .into_location()
        .with_env([
            ("AWS_REGION".to_string(), "env".to_string()),
            ("AWS_ENDPOINT".to_string(), "http://e".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        assert_eq!(loc.location, "s3://b/t");
        assert_eq!(loc.storage_options["aws_region"], "explicit");
        assert_eq!(loc.storage_options["aws_endpoint"], "http://e");
        assert!(!loc.storage_options.contains_key("home"));
    }
}
