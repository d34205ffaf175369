//! TLS for a service's listener: a PEM certificate chain and key, read again when the
//! files change (looked at most every `recheck`, at a handshake), so a rotated
//! certificate (cert-manager renewing a Secret) is served without a restart. A pair
//! that fails to load keeps the previous one and is logged.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ServiceError;
use crate::reload::{Monotonic, Reloading, system_monotonic};

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn load(files: &TlsFiles) -> Result<CertifiedKey, ServiceError> {
    let err = |path: &PathBuf, reason: String| ServiceError::Tls {
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&files.cert, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let signing = any_supported_type(&key).map_err(|e| err(&files.key, e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    // A certificate of one pair with the key of another (one file renewed, the
    // other not yet) is refused, and tried again when the files change.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(err(&files.key, e.to_string())),
    }
}

/// Serves the certificate of the files, reloaded when they change.
#[derive(Debug)]
struct Resolver {
    files: TlsFiles,
    key: Reloading<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.get(|| load(&self.files)))
    }
}

/// A rustls server configuration serving the files' certificate (HTTP/1.1).
pub fn server_config(
    files: TlsFiles,
    recheck: Duration,
) -> Result<Arc<ServerConfig>, ServiceError> {
    server_config_with_clock(files, recheck, system_monotonic())
}

/// [`server_config`] with the clock that times the rechecks of the files.
pub fn server_config_with_clock(
    files: TlsFiles,
    recheck: Duration,
    clock: Monotonic,
) -> Result<Arc<ServerConfig>, ServiceError> {
    let paths = vec![files.cert.clone(), files.key.clone()];
    let key = Reloading::open("TLS certificate", paths, recheck, clock, || load(&files))?;
    let resolver = Resolver { files, key };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ServiceError::Tls {
                path: PathBuf::new(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a TLS handshake under [`HANDSHAKE_TIMEOUT`]; `None` (logged at
/// debug) when it fails or times out. Run it in the connection's own task.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A listener for `axum::serve` that hands out TLS connections. Handshakes run in
/// their own tasks, so a slow client holds up no one else.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(tls) = handshake(&acceptor, stream, peer).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            addr,
            task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
