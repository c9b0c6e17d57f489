//! Startup in phases, each one fallible with the configuration key to blame: the
//! store and the conference, the media (WebRTC, webhooks, recordings), the SIP
//! gateway, the HTTP application.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use patchbay_api::cluster::{ClusterApi, NodeInfo};
use patchbay_api::recording_callbacks::RecordingCallbacks;
use patchbay_api::server::{HttpLimits, HttpServerMetrics};
use patchbay_api::{Accounts, AppState, Metrics};
use patchbay_conference::inbound::{InboundRouter, InboundRules};
use patchbay_conference::media::hold_music::HoldMusic;
use patchbay_conference::media::webrtc::WebRtcTransport;
use patchbay_conference::recording::{self, RecordingWriter};
use patchbay_conference::store::{Cluster, SqlStore};
use patchbay_conference::{system_clock, Conference, Options, RecordingOptions};
use patchbay_config::Config;
use patchbay_outbound::egress::EgressPolicy;
use patchbay_outbound::hops::Hops;
use patchbay_outbound::webhooks::inbound::InboundWebhook;
use patchbay_outbound::webhooks::{WebhookOptions, Webhooks};
use patchbay_sip::metrics::SipMetrics;
use patchbay_sip::{InboundRoute, SipConfig, SipGateway, TcpLimits, TlsFiles, TlsServer};

use crate::cluster;

/// A database URL fit for a log line: any password replaced by `***`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// What this node says about itself in its heartbeat and in `GET /v1/cluster`.
pub fn node_info(config: &Config, placed: Arc<std::sync::OnceLock<Arc<Conference>>>) -> NodeInfo {
    // Peers are told the advertised addresses (public_ip behind 1:1 NAT); the HTTP URL
    // is for the other nodes' relays.
    let addresses = config.addresses();
    let fixed = serde_json::json!({
        "httpUrl": http_url(config),
        "sipUri": addresses.sip_uri(),
        "webrtcAddress": addresses.webrtc_advertised().to_string(),
        "mediaIp": config.media_ip.to_string(),
        "publicIp": config.public_ip.map(|ip| ip.to_string()),
    });
    Arc::new(move || {
        let mut v = fixed.clone();
        if let Some(c) = placed.get() {
            let (sessions, participants) = c.counts();
            v["sessions"] = serde_json::json!(sessions);
            v["participants"] = serde_json::json!(participants);
            v["mediaSessions"] = serde_json::json!(c.media().active());
            v["ownedSessions"] = serde_json::json!(c.owned_sessions());
            v["draining"] = serde_json::json!(c.is_draining());
        }
        v
    })
}

/// The URL other nodes reach this one's HTTP listener at (what its heartbeat and its
/// proofs name).
fn http_url(config: &Config) -> String {
    config.cluster.advertise_url.clone().unwrap_or_else(|| {
        let scheme = if config.http_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", config.http_listen)
    })
}

/// The data directory must exist (created if missing) and be writable.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let err = |e: std::io::Error| {
        anyhow::anyhow!("config key `data_dir`: cannot use {}: {e}", dir.display())
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".patchbay-write-check");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// Phase 1: the store (SQLite, or PostgreSQL and the cluster), the conference loaded
/// from it, and this node's part of the cluster.
pub async fn open_conference(
    config: &Config,
    node_id: &str,
    info: &NodeInfo,
    placed: Arc<std::sync::OnceLock<Arc<Conference>>>,
) -> anyhow::Result<Arc<Conference>> {
    let (store, joined) = match &config.database_url {
        Some(url) => {
            if !url.contains("sslmode=verify-full") {
                tracing::warn!("database_url does not ask for sslmode=verify-full: the link to PostgreSQL (participant data, the change feed) is not verified; see docs/cluster.md");
            }
            let context = || {
                format!(
                    "config key `database_url`: cannot open the store at {}",
                    without_password(url)
                )
            };
            let store = SqlStore::postgres(url, node_id)
                .await
                .with_context(context)?;
            let joined = cluster::join(url, node_id, config.cluster.lease, info)
                .await
                .with_context(context)?;
            (store, Some(joined))
        }
        None => {
            let db = config.data_dir.join("patchbay.db");
            let store = SqlStore::sqlite(&db).await.with_context(|| {
                format!(
                    "config key `data_dir`: cannot open the store {}",
                    db.display()
                )
            })?;
            (store, None)
        }
    };
    let conference = Arc::new(
        Conference::open(
            Arc::new(store),
            Options {
                session_ttl: config.session_ttl,
                token_ttl: config.token_ttl,
                token_secret: config.token_secret.clone(),
                clock: system_clock(),
                sip_stream_alias: config.sip_stream_alias.clone(),
                cluster: joined.clone().map(|c| c as Arc<dyn Cluster>),
                lease: config.cluster.lease,
            },
        )
        .await
        .context("loading state from the store")?,
    );
    let _ = placed.set(conference.clone());
    // Calls and devices follow their participant between sessions (and the lobby).
    conference.route_media();
    if let Some(joined) = joined {
        cluster::run(
            conference.clone(),
            joined,
            config.cluster.lease,
            info.clone(),
        );
    }
    Ok(conference)
}

/// The HTTP listener's socket (bound early: a taken port fails the start).
pub async fn bind_http(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| {
            format!(
                "config key `http_listen`: cannot listen on {}",
                config.http_listen
            )
        })
}

/// What the media side runs besides the sessions.
pub struct Media {
    pub webrtc: Arc<WebRtcTransport>,
    pub egress: Arc<EgressPolicy>,
    pub webhooks: Webhooks,
    pub recordings: RecordingWriter,
}

/// Phase 2: the WebRTC transport, the webhook outbox, recordings (and their uploads),
/// music on hold; the dialogs the last run left are ended.
pub async fn start_media(config: &Config, conference: &Arc<Conference>) -> anyhow::Result<Media> {
    let webrtc = WebRtcTransport::bind(config.webrtc_listen, config.public_ip)
        .await
        .with_context(|| {
            format!(
                "config key `webrtc_listen`: cannot bind {}",
                config.webrtc_listen
            )
        })?;
    conference.media().set_webrtc(webrtc.clone());
    let egress = Arc::new(
        EgressPolicy::parse(&config.webhook_allow)
            .map_err(|e| anyhow::anyhow!("config key `webhook_allow`: {e}"))?,
    );
    let webhooks = Webhooks::start(
        conference.clone(),
        WebhookOptions {
            secret: config.webhook_secret.clone(),
            egress: egress.clone(),
            cluster_lease: config.cluster.lease,
            ..WebhookOptions::default()
        },
    );
    conference
        .media()
        .set_event_sink(Arc::new(webhooks.clone()));
    let callbacks = RecordingCallbacks(webhooks.clone());
    let recordings =
        RecordingWriter::start(config.recordings_dir.clone(), Arc::new(callbacks.clone()))
            .with_context(|| {
                format!(
                    "config key `recordings_dir`: cannot use {}",
                    config.recordings_dir.display()
                )
            })?;
    conference.media().set_recording_writer(recordings.clone());
    let interrupted = conference
        .enable_recordings(RecordingOptions {
            dir: config.recordings_dir.clone(),
            max_active_per_session: recording::MAX_ACTIVE_PER_SESSION,
            max_per_session: recording::MAX_PER_SESSION,
            max_bytes: config.recording_max_mb as u64 * 1024 * 1024,
            max_duration: config.recording_max_duration,
            retention: config.recording_retention,
        })
        .await
        .context("closing the recordings the last run left open")?;
    for r in interrupted {
        callbacks.recording_done(r);
    }
    if let Some(s3) = &config.recordings_s3 {
        let uploader = recording::upload::Uploader::start(
            &recording::upload::S3Options {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                prefix: s3.prefix.clone(),
            },
            config.recordings_dir.clone(),
            conference.clone(),
        )
        .map_err(|e| anyhow::anyhow!("config keys `recordings_s3_*`: {e}"))?;
        conference.enable_uploads(uploader);
    }

    conference.recover_dialogs();
    if let Some(path) = &config.sip.music_on_hold {
        let music = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| HoldMusic::from_wav(&b))
            .map_err(|e| {
                anyhow::anyhow!("config key `sip_music_on_hold`: {}: {e}", path.display())
            })?;
        conference.media().set_hold_music(Arc::new(music));
    }
    Ok(Media {
        webrtc,
        egress,
        webhooks,
        recordings,
    })
}

/// Phase 3: the SIP gateway (UDP, TCP, TLS listeners; registrations; the trunk).
pub async fn start_sip(
    config: &Config,
    conference: &Arc<Conference>,
    egress: &Arc<EgressPolicy>,
    sip_metrics: SipMetrics,
) -> anyhow::Result<SipGateway> {
    let sip_config = SipConfig {
        listen: config.sip_listen,
        media_ip: config.media_ip,
        public_ip: config.public_ip,
        rtp_ports: config.rtp_ports,
        rtp_timeout: config.rtp_timeout,
        tcp: TcpLimits {
            max_connections: config.sip_tcp_max_connections,
            max_per_source: config.sip_tcp_max_per_source,
            idle_timeout: config.sip_tcp_idle_timeout,
        },
        max_transactions_per_source: config.sip_max_transactions_per_source,
        trunk: config.sip.trunk.clone(),
        tls: config.sip.tls.clone(),
        tls_ca: config.sip.tls_ca.clone(),
        outbound_proxy: config.sip.outbound_proxy.clone(),
        trunk_ping_interval: config.sip.trunk_ping_interval,
        registrations: config.sip.registrations.clone(),
        music_on_hold: config.sip.music_on_hold.is_some(),
        transfer_targets: config.sip.transfer_targets.clone(),
        inbound: inbound_rules(config, egress, conference)?,
        srtp: config.sip.srtp,
    };
    let context = || {
        format!(
            "SIP: cannot start on sip_listen {} (or sip_tls_listen with its sip_tls_cert/sip_tls_key, or sip_tls_ca)",
            config.sip_listen
        )
    };
    SipGateway::start(sip_config, conference.clone(), sip_metrics)
        .await
        .with_context(context)
}

/// The rule for SIP calls without a token (none configured: they get 403).
fn inbound_rules(
    config: &Config,
    egress: &Arc<EgressPolicy>,
    conference: &Arc<Conference>,
) -> anyhow::Result<Option<InboundRoute>> {
    let application = match &config.sip.inbound_url {
        None => None,
        Some(url) => Some(Arc::new(
            InboundWebhook::new(url, config.webhook_secret.clone(), egress.clone())
                .map_err(|e| anyhow::anyhow!("config key `sip_inbound_url`: {e}"))?,
        ) as Arc<dyn InboundRouter>),
    };
    if application.is_none() && config.sip.inbound_numbers.is_empty() {
        return Ok(None);
    }
    Ok(Some(InboundRoute(Arc::new(InboundRules::new(
        config.sip.inbound_numbers.clone(),
        application,
        conference.clone(),
    )))))
}

/// The HTTPS listener's certificate, if `http_tls_cert` is set.
pub fn http_tls(config: &Config) -> anyhow::Result<Option<TlsServer>> {
    Ok(match &config.http_tls {
        Some(t) => Some(
            TlsServer::new(TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
            })
            .map_err(|e| anyhow::anyhow!("config keys `http_tls_cert`/`http_tls_key`: {e}"))?,
        ),
        None => None,
    })
}

/// Phase 4: the HTTP application's state (accounts, metrics, the cluster view and its
/// authenticated hops, the console).
pub fn app_state(
    config: &Config,
    conference: &Arc<Conference>,
    webhooks: &Webhooks,
    node_id: &str,
    info: &NodeInfo,
    metrics: (&SipMetrics, &HttpServerMetrics),
) -> anyhow::Result<AppState> {
    let (sip_metrics, http_metrics) = metrics;
    let limits = HttpLimits {
        header_timeout: config.http_header_timeout,
        body_timeout: config.http_body_timeout,
        max_connections: config.http_max_connections,
        max_per_source: config.http_max_per_source,
        ..HttpLimits::default()
    };
    match &config.console_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            tracing::info!(dir = %dir.display(), "web console at /console/");
        }
        Some(dir) => {
            tracing::warn!(dir = %dir.display(), "the web console is not built there (./scripts/run builds it): /console/ answers 503")
        }
        None => tracing::info!("no web console (console_dir is empty)"),
    }
    // In a cluster, requests between nodes are authenticated both ways (outbound/src/hops.rs).
    let hops = match (&config.database_url, &config.token_secret) {
        (Some(_), Some(secret)) => Some(Arc::new(
            Hops::new(
                node_id,
                &http_url(config),
                secret,
                config.cluster.ca.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("config key `cluster_ca`: {e}"))?,
        )),
        _ => None,
    };
    Ok(AppState {
        conference: conference.clone(),
        accounts: Arc::new(Accounts::new(
            config
                .accounts
                .iter()
                .map(|a| (a.id.clone(), a.user.clone(), a.password.clone())),
        )),
        metrics: Arc::new(Metrics::with(|r| {
            sip_metrics.register(r);
            http_metrics.register(r);
        })),
        webhooks: webhooks.clone(),
        limits,
        http_metrics: http_metrics.clone(),
        cluster: ClusterApi {
            operator: config.cluster.operator.as_ref().map(|(user, password)| {
                Arc::new(Accounts::new([(
                    "operator".to_string(),
                    user.clone(),
                    password.clone(),
                )]))
            }),
            lease: config.cluster.lease,
            node_id: node_id.to_string(),
            info: info.clone(),
            hops,
        },
        console: patchbay_api::console::Console::new(config.console_dir.clone()),
        churn: Default::default(),
        handovers: Default::default(),
    })
}

/// Sessions expire and recordings past their retention go, in the background.
pub fn sweep(conference: Arc<Conference>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for round in 0u64.. {
            tick.tick().await;
            if let Err(e) = conference.expire_sessions().await {
                tracing::error!(error = %e, "session expiry failed");
            }
            if round % 5 == 0 {
                if let Err(e) = conference.sweep_recordings().await {
                    tracing::error!(error = %e, "recording retention failed");
                }
            }
        }
    })
}

/// The start, in one line.
pub fn log_started(config: &Config, sip: &SipGateway, media: &Media) {
    tracing::info!(
        http = %config.http_listen,
        https = config.http_tls.is_some(),
        sip = %sip.local,
        sip_tls = ?sip.tls_local,
        webrtc = %media.webrtc.local_addr(),
        media_ip = %config.media_ip,
        public_ip = ?config.public_ip,
        data_dir = %config.data_dir.display(),
        store = %config.database_url.as_deref().map_or_else(|| "sqlite".to_string(), without_password),
        accounts = ?config.accounts.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        version = env!("CARGO_PKG_VERSION"),
        "patchbay started"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        use super::without_password as w;
        assert_eq!(
            w("postgres://pb:s3cret@db:5432/pb"),
            "postgres://pb:***@db:5432/pb"
        );
        assert_eq!(w("postgres://pb@db/pb"), "postgres://pb@db/pb");
        assert_eq!(w("postgres://db/pb"), "postgres://db/pb");
    }
}
