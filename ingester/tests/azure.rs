//! The write path against Azurite (Microsoft's Azure Storage emulator, npm
//! `azurite`) on loopback, started by the test: `az://` tables with two
//! concurrent writers, conditional puts (`If-None-Match: *`) and compaction.

use std::process::{Command, Stdio};

use crate::cloud::{Server, free_port, spawn_server, tool, two_ingesters_commit_to};

/// Azurite's well-known development account and key (public, documented by
/// Microsoft; Azurite accepts nothing else by default).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates a container with a Shared Key signed `PUT ?restype=container` (object_store
/// cannot create containers); node is there whenever Azurite is. Exits non-zero
/// unless the container was created or already exists.
const CREATE_CONTAINER_JS: &str = r#"
const crypto = require("crypto");
const [endpoint, account, key, container] = process.argv.slice(1);
const date = new Date().toUTCString();
const version = "2021-08-06";
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
  `x-ms-date:${date}\nx-ms-version:${version}`,
  `/${account}/${account}/${container}\nrestype:container`].join("\n");
const sig = crypto.createHmac("sha256", Buffer.from(key, "base64")).update(toSign, "utf8").digest("base64");
fetch(`${endpoint}/${account}/${container}?restype=container`, {
  method: "PUT",
  headers: { "x-ms-date": date, "x-ms-version": version, authorization: `SharedKey ${account}:${sig}` },
}).then(async (r) => {
  if (r.status !== 201 && r.status !== 409) { console.error(r.status, await r.text()); process.exit(1); }
}, (e) => { console.error(String(e)); process.exit(1); });
"#;

/// Azurite's blob service on a free port with a temporary workspace, and a
/// `flowlake` container in it; `None` (skip) when azurite-blob or node is missing.
async fn start_azurite(workspace: &std::path::Path) -> Option<(Server, String)> {
    tool("azurite-blob")?;
    tool("node")?;
    let port = free_port();
    let (server, endpoint) = spawn_server(
        Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(workspace)
            .args(["--silent", "--disableTelemetry"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
    )
    .await;
    let out = Command::new("node")
        .args([
            "-e",
            CREATE_CONTAINER_JS,
            &endpoint,
            ACCOUNT,
            KEY,
            "flowlake",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating the container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((server, endpoint))
}

/// The write path runs in a child test process: object_store's emulator mode
/// (`azure_storage_use_emulator`) finds an Azurite that is not on port 10000 only
/// through `AZURITE_BLOB_STORAGE_URL`, and setting the environment of this
/// multi-threaded test process would be unsound. (Without emulator mode,
/// object_store asks Azurite for listings with `startFrom`, which Azurite ignores;
/// the Delta log listing then fails with "Invalid table version".)
#[tokio::test]
async fn two_ingesters_on_azure() {
    let workspace = tempfile::tempdir().unwrap();
    let Some((_azurite, endpoint)) = start_azurite(workspace.path()).await else {
        return;
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["azure::write_path_in_child", "--exact", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env("AZURITE_BLOB_STORAGE_URL", &endpoint)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "write path on Azurite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by two_ingesters_on_azure, which starts Azurite and sets AZURITE_BLOB_STORAGE_URL"]
async fn write_path_in_child() {
    assert!(
        std::env::var_os("AZURITE_BLOB_STORAGE_URL").is_some(),
        "run by two_ingesters_on_azure"
    );
    let options = [("azure_storage_use_emulator", "true")];
    two_ingesters_commit_to("az://flowlake/flows", &options).await;
}
