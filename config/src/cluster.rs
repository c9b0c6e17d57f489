//! The keys of a node in a cluster: its id, the lease after which a silent node is
//! dead, and the operator's credentials for the cluster view.

use std::time::Duration;

use crate::{key_err, parse_duration, ConfigError, Layer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique among the nodes and stable across restarts; `None`: the one kept in `data_dir/node-id` (`HOSTNAME-XXXXXX`, made once).
    pub node_id: Option<String>,
    pub lease: Duration,
    /// How long a stopping node waits for its calls to end (its browser-only sessions
    /// move at once); 0: it ends everything at once.
    pub drain_timeout: Duration,
    /// `(user, password)` for `GET /v1/cluster`.
    pub operator: Option<(String, String)>,
    /// The URL other nodes reach this one's HTTP listener at (`None`: from `http_listen`).
    pub advertise_url: Option<String>,
    /// The CAs trusted for HTTPS to other nodes (`None`: the Web PKI roots).
    pub ca: Option<std::path::PathBuf>,
}

pub(crate) fn validate(layer: &Layer) -> Result<ClusterConfig, ConfigError> {
    let node_id = layer.node_id.clone().filter(|s| !s.is_empty());
    if let Some(id) = &node_id {
        if id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(key_err(
                "node_id",
                "must be 1-64 characters of letters, digits, '-', '_' and '.'",
            ));
        }
    }
    let lease = parse_duration("cluster_lease", layer.cluster_lease.as_deref(), "10s")?;
    if lease < Duration::from_secs(3) || lease > Duration::from_secs(300) {
        return Err(key_err("cluster_lease", "must be between 3s and 300s"));
    }
    let drain_timeout = parse_duration("drain_timeout", layer.drain_timeout.as_deref(), "25s")?;
    if drain_timeout > Duration::from_secs(3600) {
        return Err(key_err("drain_timeout", "must be at most 1h"));
    }
    let operator = match layer.operator.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && password.len() >= 8 => {
                Some((user.to_string(), password.to_string()))
            }
            _ => {
                return Err(key_err(
                    "operator",
                    "must be USER:PASSWORD with a password of at least 8 characters",
                ))
            }
        },
    };
    let advertise_url = layer
        .advertise_url
        .clone()
        .filter(|s| !s.is_empty())
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &advertise_url {
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', '@']));
        if !ok {
            return Err(key_err(
                "advertise_url",
                "must be an http:// or https:// URL with a host and an optional port, and no path",
            ));
        }
    }
    let ca = layer
        .cluster_ca
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from);
    if let Some(path) = &ca {
        if !path.is_file() {
            return Err(key_err("cluster_ca", "must name a readable PEM file"));
        }
    }
    Ok(ClusterConfig {
        node_id,
        lease,
        drain_timeout,
        operator,
        advertise_url,
        ca,
    })
}
