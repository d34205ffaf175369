//! Object storage shared by the roles that open the Delta table (ingester, query,
//! export): deltalake-core only knows `file://` and `memory://`, so the cloud schemes
//! are registered here once, served by `object_store` directly; and the cloud
//! credentials come from the usual environment variables. Also the table's location
//! flags shared by every role ([`TableArgs`]).

mod location;

pub use location::{TableArgs, TableLocation, parse_key_value};

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake_core::{DeltaResult, Path};
use url::Url;

/// Cloud schemes served through `object_store` directly.
pub const CLOUD_SCHEMES: [&str; 6] = ["s3", "s3a", "gs", "az", "abfs", "abfss"];

/// Cloud stores straight from `object_store` (credentials from the options); commits
/// use the default log store, whose atomic commit is a conditional put
/// (`If-None-Match: *`), supported by S3, GCS and Azure.
struct CloudStores;

impl ObjectStoreFactory for CloudStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let (store, path) = object_store::parse_url_opts(url, config.raw.iter())?;
        Ok((Arc::from(store), path))
    }
}

impl LogStoreFactory for CloudStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Teaches deltalake-core the cloud schemes, once per process. Registrations made
/// by someone else first are kept.
pub fn register_cloud_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stores = object_store_factories();
        let logs = logstore_factories();
        for scheme in CLOUD_SCHEMES {
            let key = Url::parse(&format!("{scheme}://")).expect("valid scheme URL");
            if !stores.contains_key(&key) {
                stores.insert(key.clone(), Arc::new(CloudStores));
            }
            if !logs.contains_key(&key) {
                logs.insert(key, Arc::new(CloudStores));
            }
        }
    });
}

/// Object-store options from `AWS_*`, `GOOGLE_*`, `AZURE_*` environment variables
/// (keys lowercased), as the object_store builders' `from_env` would read them. The
/// binary passes `std::env::vars()`; explicit options win over these.
pub fn cloud_env_options(
    vars: impl IntoIterator<Item = (String, String)>,
) -> HashMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_scheme_is_registered() {
        register_cloud_schemes();
        register_cloud_schemes(); // idempotent
        for scheme in CLOUD_SCHEMES {
            let key = Url::parse(&format!("{scheme}://")).unwrap();
            assert!(object_store_factories().contains_key(&key), "{scheme}");
            assert!(logstore_factories().contains_key(&key), "{scheme}");
        }
    }

    #[test]
    fn only_cloud_variables_become_options() {
        let vars = [
            ("AWS_REGION", "eu-west-1"),
            ("GOOGLE_SERVICE_ACCOUNT", "/sa.json"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let opts = cloud_env_options(vars);
        assert_eq!(opts.len(), 3);
        assert_eq!(opts["aws_region"], "eu-west-1");
        assert!(!opts.contains_key("home"));
    }
}
