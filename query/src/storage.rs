//! Table and export locations: local paths or `s3://`, `gs://`, `az://` URLs, opened
//! through `object_store`.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake_core::logstore::ObjectStoreRef;
use deltalake_core::{DeltaTable, DeltaTableBuilder, Path};
use url::Url;

use crate::error::{QueryError, Result};

pub use flowlake_storage::register_cloud_schemes;

/// Parses a location: a URL with a scheme, or a local path (made absolute).
pub fn location_url(location: &str) -> Result<Url> {
    let bad = |reason: String| QueryError::Location {
        location: location.to_string(),
        reason,
    };
    if location.contains("://") {
        return Url::parse(location).map_err(|e| bad(e.to_string()));
    }
    let path = std::path::Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    Url::from_directory_path(&abs).map_err(|()| bad("not a valid local path".into()))
}

/// Opens the Delta table at its newest version.
pub async fn open_table(location: &str, options: &HashMap<String, String>) -> Result<DeltaTable> {
    let mut table = build_table(location, options)?;
    table.load().await?;
    Ok(table)
}

/// The Delta table at `location`, not loaded (nothing read from its store yet).
pub fn build_table(location: &str, options: &HashMap<String, String>) -> Result<DeltaTable> {
    register_cloud_schemes();
    let url = location_url(location)?;
    Ok(DeltaTableBuilder::from_url(url)?
        .with_storage_options(options.clone())
        .build()?)
}

/// An object store and the path inside it for an export destination.
pub fn object_store_for(
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<(ObjectStoreRef, Path)> {
    let (store, path) = object_store::parse_url_opts(url, options.iter())?;
    Ok((Arc::from(store), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let url = location_url("/tmp/some table").unwrap();
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/tmp/some%20table/"));
        assert_eq!(
            location_url("s3://bucket/flows").unwrap().host_str(),
            Some("bucket")
        );
        assert!(
            location_url("s3://").is_err() || location_url("s3://").unwrap().host_str().is_none()
        );
    }
}
