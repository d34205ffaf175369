//! Bearer-token authentication. Tokens live in a JSON file as SHA-256 hashes, each
//! with a name, scopes and optionally the namespaces it may read:
//!
//! ```json
//! {"tokens": [{"name": "grafana", "sha256": "9f86d0…", "scopes": ["read"]},
//!             {"name": "payments-team", "sha256": "…", "scopes": ["read"], "namespaces": ["payments"]}]}
//! ```
//!
//! The file is read again when it changes (checked at most every `recheck`), so
//! tokens are added and revoked without a restart; a file that fails to parse keeps
//! the previous tokens and is logged. Presented tokens are hashed and compared with
//! every entry in constant time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ServiceError;
use crate::reload::{Monotonic, Reloading, system_monotonic};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send flows to the ingester (collectors).
    Ingest,
    /// SQL, the per-pod questions and the Grafana datasource.
    Read,
    /// Start and watch exports.
    Export,
    /// Packet captures.
    Capture,
    /// Everything, including `/metrics`.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Export => "export",
            Scope::Capture => "capture",
            Scope::Admin => "admin",
        }
    }
}

/// The caller of a request, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Principal {
    /// The caller when authentication is off: every scope, every namespace.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            scopes: vec![Scope::Admin],
            namespaces: None,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// One line of the token file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// A parsed entry: the hash as bytes.
#[derive(Debug, Clone)]
struct Known {
    hash: [u8; 32],
    principal: Principal,
}

/// Hex SHA-256 of a token, the form the token file stores.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn load(path: &Path) -> Result<Vec<Known>, ServiceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let format_err = |reason: String| ServiceError::TokenFormat {
        path: path.to_path_buf(),
        reason,
    };
    let file: TokenFile = serde_json::from_str(&text).map_err(|e| format_err(e.to_string()))?;
    file.tokens
        .into_iter()
        .map(|t| {
            let hash = parse_hex32(&t.sha256).ok_or_else(|| {
                format_err(format!("token {:?}: sha256 is not 64 hex digits", t.name))
            })?;
            Ok(Known {
                hash,
                principal: Principal {
                    name: t.name,
                    scopes: t.scopes,
                    namespaces: t.namespaces,
                },
            })
        })
        .collect()
}

/// The token file, re-read when it changes.
pub struct TokenStore {
    path: PathBuf,
    tokens: Reloading<Vec<Known>>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenStore {
    /// Reads the file (an error if it cannot be read or parsed); it is read again
    /// when its size, modification time or inode changed, looked at most every `recheck`.
    pub fn open(path: impl Into<PathBuf>, recheck: Duration) -> Result<Self, ServiceError> {
        Self::open_with_clock(path, recheck, system_monotonic())
    }

    /// [`TokenStore::open`] with the clock that times the rechecks.
    pub fn open_with_clock(
        path: impl Into<PathBuf>,
        recheck: Duration,
        clock: Monotonic,
    ) -> Result<Self, ServiceError> {
        let path = path.into();
        let tokens = Reloading::open("token file", vec![path.clone()], recheck, clock, || {
            let tokens = load(&path)?;
            tracing::info!(path = %path.display(), tokens = tokens.len(), "token file loaded");
            Ok::<_, ServiceError>(tokens)
        })?;
        Ok(TokenStore { path, tokens })
    }

    fn tokens(&self) -> Arc<Vec<Known>> {
        self.tokens.get(|| load(&self.path))
    }

    /// The principal of a presented token, compared with every entry in constant time.
    pub fn lookup(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let tokens = self.tokens();
        let mut found = None;
        for known in tokens.iter() {
            if bool::from(known.hash.ct_eq(&presented)) {
                found = Some(known.principal.clone());
            }
        }
        found
    }
}

/// Authentication of a service: off (every caller is [`Principal::anonymous`]) or tokens.
#[derive(Debug, Clone)]
pub enum Auth {
    Open,
    Tokens(Arc<TokenStore>),
}

/// The token name of a request, left in the response's extensions for the audit log.
#[derive(Debug, Clone)]
pub struct TokenName(pub String);

impl Auth {
    /// The caller of a request with this `Authorization` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ServiceError> {
        let store = match self {
            Auth::Open => return Ok(Principal::anonymous()),
            Auth::Tokens(store) => store,
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ServiceError::Unauthorized("no bearer token"))?
            .to_str()
            .map_err(|_| ServiceError::Unauthorized("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ServiceError::Unauthorized(
                "expected `Authorization: Bearer <token>`",
            ))?;
        store
            .lookup(token)
            .ok_or(ServiceError::Unauthorized("unknown or revoked token"))
    }

    /// The caller, if it holds `scope`.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Principal, ServiceError> {
        let principal = self.authenticate(headers)?;
        if principal.has(scope) {
            Ok(principal)
        } else {
            Err(ServiceError::Forbidden {
                token: principal.name,
                scope: scope.name(),
            })
        }
    }
}

/// Middleware: the request needs a token with `scope`; the [`Principal`] is put in the
/// request's extensions for the handler, its name in the response's for the audit log.
/// Use with `axum::middleware::from_fn_with_state((auth, scope), require)`.
pub async fn require(
    State((auth, scope)): State<(Auth, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authorize(req.headers(), scope) {
        Ok(principal) => {
            let name = TokenName(principal.name.clone());
            req.extensions_mut().insert(principal);
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(name);
            resp
        }
        Err(e) => {
            let name = match &e {
                ServiceError::Forbidden { token, .. } => token.clone(),
                _ => "-".into(),
            };
            let mut resp = e.into_response();
            resp.extensions_mut().insert(TokenName(name));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    fn write(path: &Path, entries: &[(&str, &str, &[Scope])]) {
        let tokens: Vec<TokenEntry> = entries
            .iter()
            .map(|(name, token, scopes)| TokenEntry {
                name: name.to_string(),
                sha256: hash_token(token),
                scopes: scopes.to_vec(),
                namespaces: None,
            })
            .collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::json!({ "tokens": tokens }).to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    #[test]
    fn tokens_scopes_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        write(
            &path,
            &[
                ("grafana", "s3cret", &[Scope::Read]),
                ("ops", "root", &[Scope::Admin]),
            ],
        );
        let auth = Auth::Tokens(Arc::new(TokenStore::open(&path, Duration::ZERO).unwrap()));
        assert_eq!(
            auth.authorize(&headers("s3cret"), Scope::Read)
                .unwrap()
                .name,
            "grafana"
        );
        assert!(matches!(
            auth.authorize(&headers("s3cret"), Scope::Export),
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(auth.authorize(&headers("root"), Scope::Export).is_ok());
        assert!(matches!(
            auth.authorize(&headers("wrong"), Scope::Read),
            Err(ServiceError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.authorize(&HeaderMap::new(), Scope::Read),
            Err(ServiceError::Unauthorized(_))
        ));
        // Revoked by rewriting the file: no restart.
        write(&path, &[("ops", "root", &[Scope::Admin])]);
        assert!(matches!(
            auth.authorize(&headers("s3cret"), Scope::Read),
            Err(ServiceError::Unauthorized(_))
        ));
        // A broken file keeps the previous tokens.
        std::fs::write(&path, "{not json").unwrap();
        assert!(auth.authorize(&headers("root"), Scope::Read).is_ok());
    }

    #[test]
    fn bad_hash_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(
            &path,
            r#"{"tokens":[{"name":"x","sha256":"abc","scopes":["read"]}]}"#,
        )
        .unwrap();
        assert!(matches!(
            TokenStore::open(&path, Duration::ZERO),
            Err(ServiceError::TokenFormat { .. })
        ));
    }
}
