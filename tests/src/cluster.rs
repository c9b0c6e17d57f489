//! Three `patchbay` processes on one PostgreSQL database (the test server `scripts/test`
//! starts), and what the operator's `GET /v1/cluster` shows of them.

use serde_json::Value;

use crate::Gateway;

/// The operator's credentials every node of the test clusters is given.
pub const OPERATOR: (&str, &str) = ("ops", "operator-secret");

/// Nodes n1, n2, n3 on `url` with lease `lease` (e.g. "3s"), as docs/cluster.md tells
/// operators to run them: HTTPS between nodes (the test CA's certificate for 127.0.0.1,
/// trusted through `cluster_ca`), PostgreSQL over TLS verified (`url` from
/// [`crate::postgres::database`]), the token secret from their configuration.
pub async fn nodes(url: &str, lease: &str) -> Vec<Gateway> {
    nodes_with(url, lease, &[]).await
}

/// Like [`nodes`], each started with `args` too.
pub async fn nodes_with(url: &str, lease: &str, args: &[&str]) -> Vec<Gateway> {
    let mut out = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let operator = format!("{}:{}", OPERATOR.0, OPERATOR.1);
        let ca = crate::workspace().join("tests/data/tls/ca.pem");
        let ca = ca.display().to_string();
        let mut all = vec!["--cluster-ca", ca.as_str()];
        all.extend_from_slice(args);
        out.push(
            Gateway::start_https_with(
                &all,
                &[
                    ("PATCHBAY_DATABASE_URL", url),
                    ("PATCHBAY_NODE_ID", id),
                    ("PATCHBAY_CLUSTER_LEASE", lease),
                    ("PATCHBAY_OPERATOR", &operator),
                    ("PATCHBAY_LOG", "info"),
                ],
            )
            .await,
        );
    }
    out
}

/// `GET /v1/cluster` on `g` with the operator's credentials (asserted 200).
pub async fn view(g: &Gateway) -> Value {
    let r = g
        .client()
        .get(format!("{}/v1/cluster", g.base()))
        .basic_auth(OPERATOR.0, Some(OPERATOR.1))
        .send()
        .await
        .expect("GET /v1/cluster");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.json().await.expect("JSON")
}

/// The live node ids `g` lists.
pub async fn live_nodes(g: &Gateway) -> Vec<String> {
    view(g).await["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `(id, ownedSessions)` of every live node `g` lists.
pub async fn owned(g: &Gateway) -> Vec<(String, u64)> {
    view(g).await["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or_default().to_string(),
                        n["ownedSessions"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
