//! Certificates for TLS tests from the `openssl` command, as cert-manager writes them:
//! a CA, and leaf certificates for `localhost` and 127.0.0.1 that it signs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl req` options for a new P-256 key, unencrypted, written to the path after them.
const NEW_EC_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the `openssl` command runs; prints why a test skips otherwise.
///
/// # Panics
/// When it does not and [`crate::required`] is true.
pub fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !crate::required(),
            "the openssl command is not available and FLOWLAKE_REQUIRE_PRIVILEGED=1"
        );
        eprintln!("skipping: the openssl command is not available");
    }
    ok
}

/// A CA (`<name>.ca.crt`, `<name>.ca.key`) in `dir`; returns the certificate's path.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    let (crt, key) = (format!("{name}.ca.crt"), format!("{name}.ca.key"));
    let subj = format!("/CN=flowlake test CA {name}");
    let args = [
        &["req", "-x509"][..],
        &NEW_EC_KEY,
        &[&key, "-out", &crt, "-days", "1", "-subj", &subj],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
        &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    .concat();
    openssl(&args, dir);
    dir.join(crt)
}

/// A certificate for `localhost` and 127.0.0.1 signed by the CA `ca` of `dir` (made by
/// [`ca`]), written to `cert` and `key` the way a Secret update swaps them: the key
/// first, each by a rename.
pub fn leaf(dir: &Path, ca: &str, cert: &Path, key: &Path) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("writing leaf.ext");
    let args = [
        &["req", "-new"][..],
        &NEW_EC_KEY,
        &["new.key", "-out", "new.csr", "-subj", "/CN=localhost"],
    ]
    .concat();
    openssl(&args, dir);
    let (ca_crt, ca_key) = (format!("{ca}.ca.crt"), format!("{ca}.ca.key"));
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "new.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "new.crt",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ],
        dir,
    );
    std::fs::rename(dir.join("new.key"), key).expect("moving the key into place");
    std::fs::rename(dir.join("new.crt"), cert).expect("moving the certificate into place");
}

/// DER of the first certificate of a PEM file.
pub fn der(pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(pem)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl x509 {}", pem.display());
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_signed_by_its_ca_only() {
        if !openssl_available() {
            return;
        }
        let dir = tempfile_dir();
        let one = ca(&dir, "one");
        let two = ca(&dir, "two");
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        leaf(&dir, "one", &cert, &key);
        let verify = |ca: &Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .arg(&cert)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&one) && !verify(&two));
        assert!(key.is_file() && !der(&cert).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flowlake-testkit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
