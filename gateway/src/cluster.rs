//! A node of a cluster: its id, its heartbeat, and the task that follows the change
//! feed (on each notification, and every second in case one was lost).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use patchbay_api::cluster::NodeInfo;
use patchbay_conference::store::{Cluster, PgCluster};
use patchbay_conference::Conference;
use patchbay_config::Config;

/// How often a node writes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often the feed is read when no notification came.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// The configured node id, or the one kept in the data directory (`node-id`), made
/// once as `HOSTNAME-XXXXXX`: a node is its data, not its port, so a restart on other
/// ports is the same node (it finds its outbox and calls at once).
pub fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.cluster.node_id {
        return Ok(id.clone());
    }
    let file = config.data_dir.join("node-id");
    if let Ok(kept) = std::fs::read_to_string(&file) {
        let kept = kept.trim();
        let valid = !kept.is_empty()
            && kept.len() <= 64
            && kept
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        anyhow::ensure!(
            valid,
            "{} does not hold a node id (1-64 letters, digits, '-', '_', '.')",
            file.display()
        );
        return Ok(kept.to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(50)
        .collect();
    // A per-process random suffix (std's randomly keyed hasher; uniqueness, not secrecy).
    let suffix = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::process::id(),
    );
    let id = format!("{host}-{:06x}", suffix & 0xff_ffff);
    std::fs::write(&file, format!("{id}\n"))
        .with_context(|| format!("keeping this node's id in {}", file.display()))?;
    Ok(id)
}

/// Connect this node to the cluster and write its first heartbeat (refused while
/// another live process has the same node id).
pub async fn join(
    url: &str,
    node: &str,
    lease: Duration,
    info: &NodeInfo,
) -> anyhow::Result<Arc<PgCluster>> {
    let cluster = PgCluster::connect(url, node, lease)
        .await
        .context("connecting to the cluster's database")?;
    cluster
        .heartbeat(info().to_string())
        .await
        .context("registering this node")?;
    Ok(Arc::new(cluster))
}

/// Beat every [`HEARTBEAT_EVERY`], renew session leases three times per lease, and
/// catch up with the feed at each notification and every [`RESYNC_EVERY`].
pub fn run(conference: Arc<Conference>, cluster: Arc<PgCluster>, lease: Duration, info: NodeInfo) {
    let beating = cluster.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = beating.heartbeat(info().to_string()).await {
                tracing::error!(error = %e, "cluster heartbeat failed");
            }
        }
    });
    let watched = conference.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 10);
        loop {
            tick.tick().await;
            watched.expire_unconfirmed();
        }
    });
    let owning = conference.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        loop {
            tick.tick().await;
            if let Err(e) = owning.keep_ownership().await {
                tracing::error!(error = %e, "renewing session leases failed");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cluster.changed() => {}
                _ = tokio::time::sleep(RESYNC_EVERY) => {}
            }
            if let Err(e) = conference.sync().await {
                tracing::warn!(error = %e, "catching up with the cluster's changes");
            }
        }
    });
}

/// A graceful stop of a cluster node (`SIGTERM`), while it still serves HTTP: it takes
/// no new session and says so at once in its heartbeat; sessions without SIP calls move
/// to other nodes right away (their devices connect again and are placed elsewhere, the
/// leases released once their events are stored), and each session whose calls all end
/// moves the same way; after `timeout` the rest end with the process. Without another
/// live node, nothing moves: the sessions end with the process at once.
pub async fn drain(
    conference: Arc<Conference>,
    webhooks: patchbay_outbound::webhooks::Webhooks,
    info: NodeInfo,
    timeout: Duration,
    lease: Duration,
) {
    let Some(cluster) = conference.cluster() else {
        return;
    };
    if timeout.is_zero() {
        return;
    }
    // Alone (one node on PostgreSQL, or the last one up), there is nowhere to move to:
    // the sessions end with the process, as on one node.
    let others = match cluster.nodes(lease).await {
        Ok(nodes) => nodes
            .iter()
            .filter(|n| n.id != cluster.node())
            .filter(|n| {
                let v: serde_json::Value = serde_json::from_str(&n.info).unwrap_or_default();
                !v["draining"].as_bool().unwrap_or(false)
            })
            .count(),
        Err(e) => {
            tracing::warn!(error = %e, "listing the cluster's nodes to drain to");
            0
        }
    };
    if others == 0 {
        tracing::info!("no other live node to move the sessions to: they end with the process");
        return;
    }
    conference.start_draining();
    if let Err(e) = cluster.heartbeat(info().to_string()).await {
        tracing::warn!(error = %e, "announcing the drain failed (the next heartbeat will)");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if conference.move_sessions_without_calls() > 0 {
            // The ended media's events reach the outbox, are stored under the leases,
            // then the leases go.
            tokio::time::sleep(Duration::from_millis(100)).await;
            webhooks.flush(Duration::from_secs(2)).await;
            if let Err(e) = conference.release_ended().await {
                tracing::warn!(error = %e, "releasing the leases of moved sessions");
            }
        }
        let left = conference.media().active();
        if left == 0 {
            tracing::info!("drained: every session moved or ended");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                sessions = left,
                "drain timeout: the remaining calls end now"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
