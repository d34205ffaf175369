//! HTTPS on the query listener: a client trusting the certificate is served, one
//! trusting another is refused, and a rotated certificate is served without a restart.

use std::time::Duration;

use flowlake_query::QueryConfig;
use flowlake_service::tls::TlsFiles;
use flowlake_testkit::tls::{ca, leaf, openssl_available};

use crate::support::*;

async fn health(port: u16, trusted: &[u8]) -> Result<u16, reqwest::Error> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(trusted).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test]
async fn https_with_a_rotated_certificate() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    // The served certificate is signed by `first`; a client trusting `stranger` is
    // refused; the rotated one is signed by `second`.
    let pem = |name: &str| std::fs::read(ca(dir.path(), name)).unwrap();
    let (first, stranger, second) = (pem("first"), pem("stranger"), pem("second"));
    leaf(dir.path(), "first", &cert, &key);
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.tls = Some(TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    });
    let svc = start(cfg).await;
    let port = svc.addr().port();

    assert_eq!(health(port, &first).await.unwrap(), 200);
    assert!(
        health(port, &stranger).await.is_err(),
        "a certificate the client does not trust"
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP on the TLS port"
    );

    leaf(dir.path(), "second", &cert, &key);
    // The files are looked at again at most every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        health(port, &second).await.unwrap(),
        200,
        "the rotated certificate"
    );
    assert!(
        health(port, &first).await.is_err(),
        "the old certificate is no longer served"
    );
    svc.stop().await.unwrap();
}
