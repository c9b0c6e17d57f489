//! Requests between the nodes of a cluster (a device's socket relayed to its session's
//! node, a dialog request forwarded to the node that placed it), authenticated both ways
//! with a key every node derives from the cluster's `token_secret` (which comes from each
//! node's configuration, never from the database):
//!
//! - **The sender proves who it is**: a hop mark `NODE:TIME_MS:HMAC` over the method,
//!   path, time and node id; a receiver honours a hop mark only when it verifies and is
//!   at most [`MARK_LIFETIME_MS`] old. A client that sends the mark itself gains nothing
//!   (it is ignored, as if absent).
//! - **The receiver proves who it is before anything is sent**: the sender first asks
//!   `GET /v1/cluster/proof?nonce=N` and checks the HMAC over the nonce, the node id the
//!   `nodes` row names and the URL it asked at, which the prover signs as its own
//!   advertised URL. So a row pointing elsewhere receives no credentials (no participant
//!   token, no account's Basic credentials), even if whoever answers there relays the
//!   question to the real node: that node's proof names its own URL, not the row's. A
//!   proven peer is remembered for [`PROVEN_FOR`].
//!
//! Between nodes with `http_tls`, hops go over HTTPS verified against `cluster_ca`
//! (or the Web PKI roots).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

/// How old a hop mark may be (clocks of the nodes within this of each other).
pub const MARK_LIFETIME_MS: u64 = 30_000;
/// How long a peer that proved itself is believed.
const PROVEN_FOR: Duration = Duration::from_secs(60);
/// Most peers remembered (a cluster is a handful of nodes).
const MAX_PROVEN: usize = 256;

/// This node's side of the hops between nodes.
pub struct Hops {
    node: String,
    /// This node's advertised HTTP URL (what its proofs name).
    url: String,
    key: hmac::Key,
    client: reqwest::Client,
    tls: Arc<patchbay_tls::TlsClientConfig>,
    proven: Mutex<HashMap<(String, String), Instant>>,
}

fn hex(tag: &[u8]) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    patchbay_conference::media::session::unix_us() / 1000
}

impl Hops {
    /// Hops of node `node`, keyed from the cluster's `token_secret`; `ca`: the CAs
    /// trusted for HTTPS to other nodes (PEM), else the Web PKI roots.
    pub fn new(
        node: &str,
        url: &str,
        token_secret: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Hops, String> {
        // A key of its own (domain-separated from the tokens' HS256 key).
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, token_secret.as_bytes()),
            b"patchbay node hops v1",
        );
        let tls = patchbay_tls::client_config(ca)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| format!("the HTTP client between nodes: {e}"))?;
        Ok(Hops {
            node: node.to_string(),
            url: url.trim_end_matches('/').to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            client,
            tls,
            proven: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client for requests to other nodes (after [`Hops::check_peer`]).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The TLS configuration for WebSocket relays to other nodes.
    pub fn tls(&self) -> Arc<patchbay_tls::TlsClientConfig> {
        self.tls.clone()
    }

    fn tag(&self, parts: &[&str]) -> String {
        hex(hmac::sign(&self.key, parts.join("\n").as_bytes()).as_ref())
    }

    /// The hop mark of a request `method path` this node sends now.
    pub fn mark(&self, method: &str, path: &str) -> String {
        self.mark_at(method, path, now_ms())
    }

    fn mark_at(&self, method: &str, path: &str, at_ms: u64) -> String {
        let t = at_ms.to_string();
        let tag = self.tag(&["hop", method, path, &t, &self.node]);
        format!("{}:{t}:{tag}", self.node)
    }

    /// The node that sent `mark` with `method path`, if it is a genuine, fresh mark.
    pub fn verify(&self, mark: &str, method: &str, path: &str) -> Option<String> {
        self.verify_at(mark, method, path, now_ms())
    }

    fn verify_at(&self, mark: &str, method: &str, path: &str, now_ms: u64) -> Option<String> {
        let mut parts = mark.splitn(3, ':');
        let (node, t, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let at: u64 = t.parse().ok()?;
        if now_ms.abs_diff(at) > MARK_LIFETIME_MS {
            return None;
        }
        let bytes = (0..tag.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(tag.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let msg = ["hop", method, path, t, node].join("\n");
        hmac::verify(&self.key, msg.as_bytes(), &bytes).ok()?;
        Some(node.to_string())
    }

    /// This node's answer to `GET /v1/cluster/proof?nonce=N`.
    pub fn proof(&self, nonce: &str) -> String {
        let tag = self.tag(&["proof", nonce, &self.node, &self.url]);
        format!("{}:{tag}", self.node)
    }

    /// Ask the node at `base` to prove it is `node` of this cluster (remembered for a
    /// while); nothing else is sent to a peer that did not.
    pub async fn check_peer(&self, base: &str, node: &str) -> Result<(), String> {
        let key = (base.to_string(), node.to_string());
        {
            let proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
            if proven.get(&key).is_some_and(|t| t.elapsed() < PROVEN_FOR) {
                return Ok(());
            }
        }
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("{base}/v1/cluster/proof?nonce={nonce}");
        let answer = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("node {node} at {base}: {e}"))?;
        let text = answer
            .text()
            .await
            .map_err(|e| format!("node {node} at {base}: {e}"))?;
        let asked = base.trim_end_matches('/');
        let want = format!("{node}:{}", self.tag(&["proof", &nonce, node, asked]));
        if text.trim() != want {
            return Err(format!(
                "{base} did not prove it is node {node} of this cluster"
            ));
        }
        let mut proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        if proven.len() >= MAX_PROVEN {
            proven.retain(|_, t| t.elapsed() < PROVEN_FOR);
            if proven.len() >= MAX_PROVEN {
                proven.clear();
            }
        }
        proven.insert(key, Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_verify_only_with_the_key_method_path_and_time_they_were_made_for() {
        let a = Hops::new("n1", "https://n1:8443", "the-cluster-secret-0123", None).unwrap();
        let b = Hops::new("n2", "https://n2:8443", "the-cluster-secret-0123", None).unwrap();
        let other = Hops::new("n3", "https://n3:8443", "another-cluster-secret-0", None).unwrap();
        let m = a.mark_at("GET", "/v3/", 1_000_000);
        assert_eq!(b.verify_at(&m, "GET", "/v3/", 1_000_500), Some("n1".into()));
        assert_eq!(other.verify_at(&m, "GET", "/v3/", 1_000_500), None);
        assert_eq!(b.verify_at(&m, "GET", "/v2/", 1_000_500), None);
        assert_eq!(b.verify_at(&m, "POST", "/v3/", 1_000_500), None);
        assert_eq!(
            b.verify_at(&m, "GET", "/v3/", 1_000_000 + MARK_LIFETIME_MS + 1),
            None
        );
        // Another node's name on the same tag.
        let forged = m.replacen("n1", "n3", 1);
        assert_eq!(b.verify_at(&forged, "GET", "/v3/", 1_000_500), None);
        for junk in ["", "1", "n1:x:y", "n1:1000000:zz", "n1:1000000:"] {
            assert_eq!(b.verify_at(junk, "GET", "/v3/", 1_000_000), None, "{junk}");
        }
    }

    #[test]
    fn proofs_name_the_node_and_the_nonce() {
        let a = Hops::new("n1", "https://n1:8443", "the-cluster-secret-0123", None).unwrap();
        let b = Hops::new("n2", "https://n2:8443", "the-cluster-secret-0123", None).unwrap();
        // What n2 expects of n1 asked at n1's URL: n1's proof.
        assert_eq!(
            a.proof("abc"),
            format!("n1:{}", b.tag(&["proof", "abc", "n1", "https://n1:8443"]))
        );
        // Asked at another URL (a `nodes` row pointing at a server that relays the
        // question to the real n1), n1's answer does not match.
        assert_ne!(
            a.proof("abc"),
            format!("n1:{}", b.tag(&["proof", "abc", "n1", "https://evil:443"]))
        );
        assert_ne!(a.proof("abc"), a.proof("abd"));
        // A proof is never a hop mark.
        assert_ne!(a.tag(&["proof", "x", "n1"]), a.tag(&["hop", "x", "n1"]));
    }
}
