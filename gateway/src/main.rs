//! `patchbay`: wiring, startup, graceful shutdown. Nothing else: the phases of the
//! start are in `startup.rs`.

mod cluster;
mod startup;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use patchbay_api::server::{serve, HttpServerMetrics};
use patchbay_conference::media::session::HangupReason;
use patchbay_conference::Conference;
use patchbay_config::{Config, LogFormat};
use patchbay_sip::metrics::SipMetrics;
use patchbay_sip::{SipGateway, TlsServer};

fn main() -> ExitCode {
    let config = match Config::from_process() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("patchbay: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patchbay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("patchbay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    startup::prepare_data_dir(&config.data_dir)?;
    let node_id = cluster::node_id(&config)?;
    let placed = Arc::default();
    let info = startup::node_info(&config, Arc::clone(&placed));
    let conference = startup::open_conference(&config, &node_id, &info, placed).await?;
    let listener = startup::bind_http(&config).await?;
    let media = startup::start_media(&config, &conference).await?;
    let webrtc_task = tokio::spawn(media.webrtc.clone().run());
    let sip_metrics = SipMetrics::default();
    let sip = startup::start_sip(&config, &conference, &media.egress, sip_metrics.clone()).await?;
    let http_tls = startup::http_tls(&config)?;
    tokio::spawn(reload_on_sighup(
        sip.tls_server(),
        http_tls.clone(),
        sip_metrics.clone(),
    ));
    let http_metrics = HttpServerMetrics::default();
    let metrics = (&sip_metrics, &http_metrics);
    let state = startup::app_state(
        &config,
        &conference,
        &media.webhooks,
        &node_id,
        &info,
        metrics,
    )?;
    let (console, limits) = (state.console.clone(), state.limits);
    // Stream participants' bots (voice bots).
    patchbay_api::streams::start(state.clone(), config.stream_retry_for);
    let sweeper = startup::sweep(conference.clone());
    startup::log_started(&config, &sip, &media);

    serve(
        listener,
        patchbay_api::router(state),
        limits,
        http_metrics,
        http_tls,
        {
            let (conference, webhooks) = (conference.clone(), media.webhooks.clone());
            let (timeout, lease) = (config.cluster.drain_timeout, config.cluster.lease);
            async move {
                shutdown_signal().await;
                console.stop();
                // In a cluster the node keeps serving while its sessions move away.
                cluster::drain(conference, webhooks, info, timeout, lease).await;
            }
        },
    )
    .await;

    sweeper.abort();
    stop(conference, media, webrtc_task, sip).await?;
    tracing::info!("patchbay stopped");
    Ok(())
}

/// The last phase: every session's media ends, recordings and callbacks are flushed,
/// leases released, the SIP gateway says BYE, the store is flushed.
async fn stop(
    conference: Arc<Conference>,
    media: startup::Media,
    webrtc_task: tokio::task::JoinHandle<()>,
    sip: SipGateway,
) -> anyhow::Result<()> {
    let startup::Media {
        webhooks,
        recordings,
        ..
    } = media;
    // Every session's media ends: SIP legs get their BYE, devices are closed (their
    // onLeave callbacks are stored, to be delivered after a restart if not before).
    conference.media().end_all(HangupReason::Shutdown);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Recordings are closed (files, manifests) and reported before the outbox's flush.
    let _ = tokio::task::spawn_blocking(move || recordings.flush(Duration::from_secs(5))).await;
    webhooks.flush(Duration::from_secs(2)).await;
    // In a cluster, the sessions this node owned can be taken by others right away.
    if let Err(e) = conference.release_all().await {
        tracing::warn!(error = %e, "releasing session leases");
    }
    webrtc_task.abort();
    sip.shutdown().await;
    conference.close().await.context("flushing the store")?;
    Ok(())
}

/// SIGHUP: read the TLS certificates and keys again (the HTTP listener's and the SIP
/// TLS listener's): renewed certificates take effect for new connections without a
/// restart; a bad pair leaves the old one in use. Without TLS it is logged and ignored
/// (never the default action, which would end the process).
async fn reload_on_sighup(sip: Option<TlsServer>, http: Option<TlsServer>, metrics: SipMetrics) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    while hup.recv().await.is_some() {
        if sip.is_none() && http.is_none() {
            tracing::info!("SIGHUP: nothing to reload (no sip_tls_listen, no http_tls_cert)");
            continue;
        }
        if let Some(tls) = &sip {
            match tls.reload() {
                Ok(()) => {
                    metrics.sip_tls_reloads.inc();
                    tracing::info!("SIGHUP: SIP TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: SIP TLS certificate not reloaded, the old one stays")
                }
            }
        }
        if let Some(tls) = &http {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: HTTPS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: HTTPS certificate not reloaded, the old one stays")
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
