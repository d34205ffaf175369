//! Flight SQL over TLS with bearer tokens, through the ADBC driver (`grpc+tls://`,
//! trusting the test CA only): missing, wrong and scope-less tokens are refused with
//! the same gRPC codes as in plain gRPC, a namespace-scoped token sees only rows of
//! its namespaces and the same rows as HTTPS with that token, and neither a client
//! trusting another CA nor one talking plain gRPC to the TLS port gets an answer.

use flowlake_service::tls::TlsFiles;
use flowlake_testkit::tls::{ca, leaf, openssl_available};
use serde_json::Value;

use super::client::{Client, Outcome};
use super::{
    first_namespace, refuses_all_but_the_reader, shared_config, start_flight, write_tokens,
};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_over_tls_keeps_to_tokens_and_namespaces() {
    if !python_has("adbc_driver_flightsql") || !openssl_available() {
        return;
    }
    let ns = first_namespace().await;

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let trusted = ca(dir.path(), "flowlake");
    let stranger = ca(dir.path(), "stranger");
    leaf(dir.path(), "flowlake", &cert, &key);
    let tokens = dir.path().join("tokens.json");
    write_tokens(&tokens, &ns);
    let mut cfg = shared_config();
    cfg.token_file = Some(tokens);
    cfg.tls = Some(TlsFiles { cert, key });
    let svc = start_flight(cfg).await;

    refuses_all_but_the_reader(|token| Client::with_tls(&svc, token, &trusted));
    let one = vec!["SELECT 1 AS one".to_string()];

    // The connection itself: another CA, or no TLS at all, gets nothing even with a
    // good token.
    let refused = [
        Client::with_tls(&svc, Some("reader-secret"), &stranger),
        Client::with_tls(&svc, Some("reader-secret"), &trusted).without_tls(),
    ];
    for client in refused {
        match client.run(&one).remove(0) {
            Outcome::Error(e) => assert!(e.contains("(Unavailable;"), "{e}"),
            Outcome::Rows(n) => panic!("answered with {n} rows without a trusted TLS session"),
        }
    }

    // The team token over TLS: the same rows as HTTPS with the same token, every row
    // with its namespace at one end, and the Delta table's counts filtered to it.
    let team = Client::with_tls(&svc, Some("team-secret"), &trusted);
    let sql = "SELECT src_namespace, dst_namespace, count(*) AS n, sum(bytes) AS b \
               FROM flows GROUP BY 1, 2";
    let answer = team.compare_scoped(sql, shared_table(), &ns);
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert_eq!(answer["same_rows"], true, "{answer}");
    assert_eq!(answer["only_mine"], true, "{answer}");
    assert_eq!(answer["n"], answer["truth_n"], "{answer}");
    assert_eq!(answer["b"], answer["truth_b"], "{answer}");
    let n = answer["truth_n"].as_u64().unwrap();
    assert!(n > 0 && n < 36_000, "{answer}");
    // The catalog calls over TLS need the token too.
    let meta = Client::with_tls(&svc, None, &trusted).metadata_error();
    assert!(meta.contains("(Unauthenticated;"), "{meta}");
    svc.stop().await.unwrap();
}
