//! HTTPS on the query listener: a client trusting the certificate is served, one
//! trusting another is refused, and a rotated certificate is served without a restart.

use std::path::Path;
use std::time::Duration;

use flowlake_query::QueryConfig;
use flowlake_service::tls::TlsFiles;

use crate::support::*;

/// Whether the `openssl` command runs; prints why a test is skipped otherwise and
/// fails when FLOWLAKE_REQUIRE_PRIVILEGED=1.
fn openssl_available() -> bool {
    let ok = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "the openssl command is not available";
        if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{msg} and FLOWLAKE_REQUIRE_PRIVILEGED=1");
        }
        eprintln!("skipping: {msg}");
    }
    ok
}

/// A self-signed certificate for `localhost` (not a CA, so it can serve), written
/// with its key; returns the certificate PEM.
fn self_signed(cert: &Path, key: &Path) -> Vec<u8> {
    let dir = cert.parent().unwrap();
    let (tmp_cert, tmp_key) = (dir.join("new-cert.pem"), dir.join("new-key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&tmp_key)
        .arg("-out")
        .arg(&tmp_cert)
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key first, then the certificate: a reload never pairs a new cert with an old key
    // for long (a mismatch is refused and retried).
    std::fs::rename(&tmp_key, key).unwrap();
    std::fs::rename(&tmp_cert, cert).unwrap();
    std::fs::read(cert).unwrap()
}

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
    let first = self_signed(&cert, &key);
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = self_signed(
        &other_dir.path().join("c.pem"),
        &other_dir.path().join("k.pem"),
    );
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

    let second = self_signed(&cert, &key);
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
