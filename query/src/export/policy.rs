//! Where exports started over HTTP may write: only below the operator's export roots
//! (absolute local directories or URL prefixes), never into the live table, with the
//! operator's object-store options only.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::JOBS_DIR;
use crate::error::{QueryError, Result};
use crate::location::TableLocation;

/// The operator's export configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPolicy {
    /// Absolute directories or URL prefixes (`s3://bucket/exports/`). Empty: exports
    /// over HTTP are refused.
    pub roots: Vec<String>,
    /// Object-store options (credentials, endpoint) for URL destinations.
    pub storage_options: HashMap<String, String>,
    /// How often a running job's record is rewritten as a sign of life
    /// ([`super::record`]).
    pub job_heartbeat: Duration,
}

impl Default for ExportPolicy {
    fn default() -> Self {
        ExportPolicy {
            roots: Vec::new(),
            storage_options: HashMap::new(),
            job_heartbeat: Duration::from_secs(10),
        }
    }
}

/// Whether `below` (segments under an export root) names the job records' directory.
fn into_job_records(below: &[String]) -> bool {
    below.first().is_some_and(|s| s == JOBS_DIR)
}

fn refuse(reason: impl Into<String>) -> QueryError {
    QueryError::ExportRefused(reason.into())
}

/// A local path: absolute, without `.` or `..` components.
fn plain_absolute(path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(refuse(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse(format!("{} contains `.` or `..`", path.display())));
    }
    Ok(())
}

/// The path with its deepest existing ancestor resolved (symlinks followed).
fn resolve(path: &Path) -> Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize()?;
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

fn local_path(location: &str) -> Option<PathBuf> {
    match Url::parse(location) {
        Ok(u) if u.scheme() == "file" => u.to_file_path().ok(),
        Ok(u) if u.scheme().len() > 1 => None,
        _ => Some(PathBuf::from(location)),
    }
}

/// URL path segments, refused when any is `.`/`..` or percent-encodes a separator or dot.
fn segments(u: &Url) -> Result<Vec<String>> {
    let segs: Vec<String> = u
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    for s in &segs {
        let lower = s.to_ascii_lowercase();
        if s == "."
            || s == ".."
            || lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c")
        {
            return Err(refuse(format!(
                "{u} has a `.`, `..` or encoded separator segment"
            )));
        }
    }
    Ok(segs)
}

fn url_under(dest: &Url, root: &Url) -> Result<bool> {
    if dest.scheme() != root.scheme()
        || dest.host_str() != root.host_str()
        || dest.port() != root.port()
        || !dest.username().is_empty()
        || dest.password().is_some()
        || dest.query().is_some()
        || dest.fragment().is_some()
    {
        return Ok(false);
    }
    let (d, r) = (segments(dest)?, segments(root)?);
    Ok(d.len() >= r.len() && d[..r.len()] == r[..])
}

impl ExportPolicy {
    /// Checks a requested destination; returns it as the job will use it.
    pub fn confine(&self, destination: &str, table: &TableLocation) -> Result<String> {
        if self.roots.is_empty() {
            return Err(refuse(
                "no export roots are configured (--export-root); exports over HTTP are off",
            ));
        }
        match local_path(destination) {
            Some(path) => self.confine_local(&path, table),
            None => self.confine_url(destination, table),
        }
    }

    fn confine_local(&self, path: &Path, table: &TableLocation) -> Result<String> {
        plain_absolute(path)?;
        let resolved = resolve(path)?;
        let mut inside = false;
        for root in self.roots.iter().filter_map(|r| local_path(r)) {
            let Ok(root) = resolve(&root) else { continue };
            if let Ok(below) = resolved.strip_prefix(&root)
                && resolved != root
            {
                let below: Vec<String> = below
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if into_job_records(&below) {
                    return Err(refuse(
                        "the destination is the export job records' directory",
                    ));
                }
                inside = true;
            }
        }
        if !inside {
            return Err(refuse(format!(
                "{} is not below an export root",
                path.display()
            )));
        }
        if let Some(live) = local_path(&table.location).and_then(|t| resolve(&t).ok())
            && (resolved.starts_with(&live) || live.starts_with(&resolved))
        {
            return Err(refuse("the destination overlaps the live table"));
        }
        Ok(resolved.to_string_lossy().into_owned())
    }

    fn confine_url(&self, destination: &str, table: &TableLocation) -> Result<String> {
        let dest = Url::parse(destination)
            .map_err(|e| refuse(format!("{destination:?} is not a URL: {e}")))?;
        let mut inside = false;
        for root in self.roots.iter().filter(|r| local_path(r).is_none()) {
            let root = Url::parse(root)
                .map_err(|e| QueryError::Config(format!("export root {root:?}: {e}")))?;
            let (d, r) = (segments(&dest)?, segments(&root)?);
            if url_under(&dest, &root)? && d.len() > r.len() {
                if into_job_records(&d[r.len()..]) {
                    return Err(refuse(
                        "the destination is the export job records' directory",
                    ));
                }
                inside = true;
            }
        }
        if !inside {
            return Err(refuse(format!("{dest} is not below an export root")));
        }
        if let Ok(live) = Url::parse(&table.location)
            && (url_under(&dest, &live).unwrap_or(true) || url_under(&live, &dest).unwrap_or(true))
        {
            return Err(refuse("the destination overlaps the live table"));
        }
        Ok(dest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_outside_the_roots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("exports");
        let table = dir.path().join("table");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&table).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(&table, root.join("live")).unwrap();
        let policy = ExportPolicy {
            roots: vec![root.to_string_lossy().into(), "s3://bucket/exports/".into()],
            ..ExportPolicy::default()
        };
        let loc = TableLocation {
            location: table.to_string_lossy().into(),
            storage_options: HashMap::new(),
        };
        let ok = root.join("nightly");
        assert!(policy.confine(ok.to_str().unwrap(), &loc).is_ok());
        assert!(policy.confine("s3://bucket/exports/nightly", &loc).is_ok());
        for bad in [
            root.to_string_lossy().into_owned(),
            format!("{}/../elsewhere", root.display()),
            format!("{}/escape/x", root.display()),
            format!("{}/live/x", root.display()),
            "relative/dir".into(),
            "/tmp/elsewhere".into(),
            "s3://bucket/other/x".into(),
            "s3://other-bucket/exports/x".into(),
            "s3://bucket/exports/../x".into(),
            "s3://bucket/exports/%2e%2e/x".into(),
            "gs://bucket/exports/x".into(),
            "http://169.254.169.254/latest".into(),
            format!("{}/{JOBS_DIR}", root.display()),
            format!("{}/{JOBS_DIR}/x", root.display()),
            format!("s3://bucket/exports/{JOBS_DIR}/x"),
        ] {
            assert!(
                matches!(
                    policy.confine(&bad, &loc),
                    Err(QueryError::ExportRefused(_))
                ),
                "{bad} must be refused"
            );
        }
        let closed = ExportPolicy::default();
        assert!(closed.confine(ok.to_str().unwrap(), &loc).is_err());
    }
}
