//! `flowlake capture create|list|status|download|delete|lookup`: the capture
//! API of a query service from the command line.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::create::CreateCapture;
use crate::error::{QueryError, Result};

/// Where the query service is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The query service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7080",
        env = "FLOWLAKE_QUERY_URL"
    )]
    pub url: String,
    /// File holding the bearer token (scope `capture`).
    #[arg(long, env = "FLOWLAKE_CAPTURE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) the service's certificate is checked against (only these).
    #[arg(long, env = "FLOWLAKE_CAPTURE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `flowlake capture`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(subcommand)]
    pub command: CaptureCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaptureCommand {
    /// Start a capture of the selected pods on every node that runs one.
    Create {
        #[arg(long)]
        namespace: String,
        /// Label selector (`app=web,tier!=db`); none: every pod of the namespace.
        #[arg(long, default_value = "")]
        selector: String,
        /// Only these pods (repeat the flag).
        #[arg(long = "pod")]
        pods: Vec<String>,
        /// Only on these nodes (repeat the flag).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// tcpdump-subset filter (`tcp port 5432`).
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Size limit of each node's file (`100MB`, `1GiB`, bytes).
        #[arg(long, value_parser = parse_size)]
        max_bytes: Option<u64>,
        #[arg(long)]
        max_packets: Option<u64>,
        #[arg(long)]
        snaplen: Option<u32>,
    },
    /// The captures this token may see.
    List,
    /// A capture: its request, each node's status, its files and the flows it saw.
    Status { id: String },
    /// A capture's packets as pcapng: one node's file, or all nodes' as sections.
    Download {
        id: String,
        #[arg(long)]
        node: Option<String>,
        /// Only this flow, both directions: `tcp 10.0.0.1:1234 10.0.0.2:80`.
        #[arg(long)]
        flow: Option<String>,
        /// The node's network snapshot at the capture's start (addresses,
        /// routes, nftables/iptables rules, sockets) instead of packets; needs `--node`.
        #[arg(long, requires = "node", conflicts_with = "flow")]
        snapshot: bool,
        /// Output file (default `<id>.pcapng`, `<id>-<node>.snapshot.txt`; `-` for stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Stop a running capture and remove its files.
    Delete { id: String },
    /// The capture files that cover a flow in an interval.
    Lookup {
        #[arg(long)]
        flow: String,
        /// RFC 3339.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        observation_point: Option<String>,
    },
}

/// `100MB`, `64KiB`, `1GB`, plain bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(at);
    let n: u64 = n.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "bad size unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

fn client_error(what: impl std::fmt::Display) -> QueryError {
    QueryError::Config(what.to_string())
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &ServiceArgs) -> Result<Self> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(300));
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(client_error)?;
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let token = match &args.token_file {
            Some(p) => Some(std::fs::read_to_string(p)?.trim().to_string()),
            None => None,
        };
        Ok(Client {
            http: b.build().map_err(client_error)?,
            base: args.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends a request; the body of a 2xx answer, else the service's error as an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        json: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = req.query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = json {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(client_error)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(client_error)?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(match status {
            StatusCode::NOT_FOUND => QueryError::NotFound(message),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                QueryError::NamespaceForbidden(format!("({status}) {message}"))
            }
            s if s.is_client_error() => QueryError::BadRequest(message),
            _ => client_error(format!("{status}: {message}")),
        })
    }
}

fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

/// Runs one command; what to print on stdout (nothing for a download to a file).
pub async fn run(args: CaptureArgs) -> Result<String> {
    let c = Client::new(&args.service)?;
    const BASE: &str = "/api/v1/captures";
    match args.command {
        CaptureCommand::Create {
            namespace,
            selector,
            pods,
            nodes,
            filter,
            duration,
            max_bytes,
            max_packets,
            snaplen,
        } => {
            let body = CreateCapture {
                namespace,
                selector,
                pods,
                nodes,
                filter,
                duration_secs: duration.map(|d| d.as_secs().max(u64::from(!d.is_zero()))),
                max_bytes,
                max_packets,
                snaplen,
            };
            let json = serde_json::to_vec(&body).map_err(client_error)?;
            Ok(pretty(&c.call(Method::POST, BASE, &[], Some(json)).await?))
        }
        CaptureCommand::List => Ok(pretty(&c.call(Method::GET, BASE, &[], None).await?)),
        CaptureCommand::Status { id } => {
            let path = format!("{BASE}/{id}");
            Ok(pretty(&c.call(Method::GET, &path, &[], None).await?))
        }
        CaptureCommand::Delete { id } => {
            let path = format!("{BASE}/{id}");
            Ok(pretty(&c.call(Method::DELETE, &path, &[], None).await?))
        }
        CaptureCommand::Lookup {
            flow,
            from,
            to,
            observation_point,
        } => {
            let mut q = vec![("flow", flow.as_str()), ("from", &from), ("to", &to)];
            if let Some(p) = &observation_point {
                q.push(("observation_point", p));
            }
            let path = format!("{BASE}/lookup");
            Ok(pretty(&c.call(Method::GET, &path, &q, None).await?))
        }
        CaptureCommand::Download {
            id,
            node,
            flow,
            snapshot,
            out,
        } => {
            let mut q = Vec::new();
            if let Some(n) = &node {
                q.push(("node", n.as_str()));
            }
            if let Some(f) = &flow {
                q.push(("flow", f.as_str()));
            }
            if snapshot {
                q.push(("snapshot", "true"));
            }
            let path = format!("{BASE}/{id}/download");
            let data = c.call(Method::GET, &path, &q, None).await?;
            let default = match (&node, snapshot) {
                (Some(n), true) => format!("{id}-{n}.snapshot.txt"),
                _ => format!("{id}.pcapng"),
            };
            let out = out.unwrap_or_else(|| PathBuf::from(default));
            if out.as_os_str() == "-" {
                use std::io::Write;
                std::io::stdout().write_all(&data)?;
                return Ok(String::new());
            }
            std::fs::write(&out, &data)?;
            Ok(format!("wrote {} bytes to {}", data.len(), out.display()))
        }
    }
}

/// `flowlake capture`, on a runtime of its own.
pub fn capture_main(args: CaptureArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(run(args))?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MB").is_err());
    }
}
