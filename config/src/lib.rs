//! Patchbay's one typed configuration.
//!
//! Sources, lowest to highest precedence: built-in defaults, a TOML file
//! (`--config FILE` or `PATCHBAY_CONFIG`), `PATCHBAY_*` environment variables,
//! command-line flags. Every key has the same name in all three forms:
//! `http_listen` in TOML, `PATCHBAY_HTTP_LISTEN` in the environment,
//! `--http-listen` on the command line.
//!
//! Loading is a pure function of the arguments and the environment
//! ([`Config::load`]) so every rule is unit-tested without touching the process.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

mod addresses;
mod cli;
mod cluster;
mod keys;
mod recordings;
mod sip;
pub use addresses::{Addresses, HttpTls};
pub use cli::Cli;
pub use cluster::ClusterConfig;
use keys::{env_name, Layer, OTHER_ENV, SCALAR_KEYS};
use recordings::recordings_s3;
pub use recordings::RecordingsS3;
pub use sip::{SipEdge, SipHop, SipRegistration, SipTls, SipTransport, SipTrunk, SrtpMode};

/// The default account, usable only while every listener is on loopback.
pub const DEFAULT_ACCOUNT: &str = "dev";
const DEFAULT_USER: &str = "dev";
const DEFAULT_PASSWORD: &str = "dev";

/// Longest account id: tokens carry it and must stay under 180 characters so
/// they fit a 256-character `User-to-User` value next to a Voice call id.
pub const MAX_ACCOUNT_ID_LEN: usize = 10;

/// A configuration error: always names the key at fault, fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "unknown environment variable {0} (see `patchbay --help` for the known PATCHBAY_* keys)"
    )]
    UnknownEnv(String),
    #[error("{0}")]
    Cli(String),
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.into(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One API account: its id (the `{accountId}` of every path) and its HTTP Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub id: String,
    pub user: String,
    pub password: String,
}

impl Account {
    /// Whether these are the built-in, publicly known credentials.
    pub fn is_default(&self) -> bool {
        self.user == DEFAULT_USER && self.password == DEFAULT_PASSWORD
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The built web console (`console/dist`), served at `/console/`; None: no console.
    pub console_dir: Option<PathBuf>,
    /// A PostgreSQL database for the durable state (`postgres://user@host/db`); unset:
    /// the embedded SQLite store in `data_dir`.
    pub database_url: Option<String>,
    /// This node in a cluster (used with `database_url`).
    pub cluster: ClusterConfig,
    pub token_secret: Option<String>,
    pub session_ttl: Duration,
    pub token_ttl: Duration,
    pub log_format: LogFormat,
    pub log: String,
    pub accounts: Vec<Account>,
    pub sip_listen: SocketAddr,
    /// Bound for RTP (advertised unless `public_ip` is set).
    pub media_ip: IpAddr,
    /// Advertised instead of the bound addresses (SIP SDP, Contact, Via; the browsers'
    /// ICE candidate), behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// HTTPS and WSS on `http_listen`.
    pub http_tls: Option<HttpTls>,
    pub rtp_ports: (u16, u16),
    pub rtp_timeout: Duration,
    /// SIP over TCP: connections at once, in all and from one IP address, and how long
    /// one may stay idle.
    pub sip_tcp_max_connections: usize,
    pub sip_tcp_max_per_source: usize,
    pub sip_tcp_idle_timeout: Duration,
    /// SIP server transactions at once from one IP address; more get 503.
    pub sip_max_transactions_per_source: usize,
    /// HTTP: a request's headers must arrive within this (also the keep-alive idle limit).
    pub http_header_timeout: Duration,
    /// HTTP: a request's body must arrive within this after its headers.
    pub http_body_timeout: Duration,
    /// HTTP connections (WebSockets included) at once, and from one IP address.
    pub http_max_connections: usize,
    pub http_max_per_source: usize,
    pub sip_stream_alias: String,
    pub webrtc_listen: SocketAddr,
    /// HMAC-SHA256 key for the `X-Patchbay-Signature` header of webhooks.
    pub webhook_secret: Option<String>,
    /// Exceptions to the webhook egress policy: comma-separated CIDRs and host names.
    pub webhook_allow: String,
    /// The trunk, outbound proxy, TLS, SRTP and trunk pings.
    pub sip: SipEdge,
    /// Where recordings' files are written (default `data_dir/recordings`).
    pub recordings_dir: PathBuf,
    /// A recording stops by itself after this long, or at this size (all its files).
    pub recording_max_duration: Duration,
    /// A stream participant's dropped WebSocket is opened again for this long.
    pub stream_retry_for: Duration,
    pub recording_max_mb: usize,
    /// Finished recordings (record and local files) are deleted this long after they end.
    pub recording_retention: Duration,
    /// S3-compatible object storage for finished recordings (None: local files only).
    pub recordings_s3: Option<RecordingsS3>,
}

impl Config {
    /// Load from the process's arguments and environment.
    pub fn from_process() -> Result<Config, ConfigError> {
        Config::load(std::env::args_os(), std::env::vars())
    }

    /// Load from explicit arguments (the first is the program name) and environment.
    /// Exits the process for `--help`/`--version` as clap does.
    pub fn load<A, I, E>(args: A, env: E) -> Result<Config, ConfigError>
    where
        A: IntoIterator<Item = I>,
        I: Into<std::ffi::OsString> + Clone,
        E: IntoIterator<Item = (String, String)>,
    {
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    e.exit()
                }
                _ => {
                    let text = e.to_string();
                    let first = text
                        .lines()
                        .next()
                        .unwrap_or("invalid arguments")
                        .to_string();
                    return Err(ConfigError::Cli(first));
                }
            },
        };
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("PATCHBAY_"))
            .collect();
        for (k, _) in &env {
            let known = OTHER_ENV.contains(&k.as_str())
                || SCALAR_KEYS.iter().any(|key| env_name(key) == *k);
            if !known {
                return Err(ConfigError::UnknownEnv(k.clone()));
            }
        }
        let env_get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());

        let file_path = cli
            .config
            .clone()
            .or_else(|| env_get("PATCHBAY_CONFIG").map(PathBuf::from));
        let file_layer = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                parse_toml(&text).map_err(|message| ConfigError::File {
                    path: path.display().to_string(),
                    message,
                })?
            }
            None => Layer::default(),
        };

        let env_accounts = match (
            env_get("PATCHBAY_ACCOUNT_ID"),
            env_get("PATCHBAY_API_USER"),
            env_get("PATCHBAY_API_PASSWORD"),
        ) {
            (None, None, None) => None,
            (Some(id), Some(user), Some(password)) => Some(vec![Account { id, user, password }]),
            _ => {
                return Err(key_err(
                    "accounts",
                    "PATCHBAY_ACCOUNT_ID, PATCHBAY_API_USER and PATCHBAY_API_PASSWORD must be set together",
                ))
            }
        };
        let env_layer = Layer {
            accounts: env_accounts,
            ..Layer::from_env(&env_get)
        };

        let cli_accounts = if cli.account.is_empty() {
            None
        } else {
            let mut accounts = Vec::new();
            for spec in &cli.account {
                let mut parts = spec.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(id), Some(user), Some(password)) => accounts.push(Account {
                        id: id.to_string(),
                        user: user.to_string(),
                        password: password.to_string(),
                    }),
                    _ => return Err(key_err("accounts", "--account takes ID:USER:PASSWORD")),
                }
            }
            Some(accounts)
        };
        let cli_layer = Layer {
            accounts: cli_accounts,
            ..Layer::from_cli(&cli)
        };

        Config::validate(file_layer.merge(env_layer).merge(cli_layer))
    }

    /// Parse a TOML document alone (defaults below it), for tests and tooling.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let layer = parse_toml(text).map_err(|message| ConfigError::File {
            path: "<inline>".into(),
            message,
        })?;
        Config::validate(layer)
    }

    fn validate(layer: Layer) -> Result<Config, ConfigError> {
        let sip = sip::validate(&layer)?;
        let cluster = cluster::validate(&layer)?;
        let (addresses, http_tls) = addresses::validate(&layer)?;
        let recordings_s3 = recordings_s3(&layer)?;
        let http_listen_text = layer.http_listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let http_listen: SocketAddr = http_listen_text.parse().map_err(|_| {
            key_err(
                "http_listen",
                format!("`{http_listen_text}` is not an IP:port socket address"),
            )
        })?;

        let data_dir = PathBuf::from(
            layer
                .data_dir
                .clone()
                .unwrap_or_else(|| "./patchbay-data".into()),
        );
        if data_dir.as_os_str().is_empty() {
            return Err(key_err("data_dir", "must not be empty"));
        }

        let recordings_dir = match layer.recordings_dir.as_deref() {
            None | Some("") => data_dir.join("recordings"),
            Some(d) => PathBuf::from(d),
        };
        let recording_max_duration = parse_duration(
            "recording_max_duration",
            layer.recording_max_duration.as_deref(),
            "4h",
        )?;
        let stream_retry_for =
            parse_duration("stream_retry_for", layer.stream_retry_for.as_deref(), "30s")?;
        let recording_retention = parse_duration(
            "recording_retention",
            layer.recording_retention.as_deref(),
            "30d",
        )?;
        let recording_max_mb =
            parse_count("recording_max_mb", layer.recording_max_mb.as_deref(), 2048)?;

        let console_dir = match layer.console_dir.as_deref() {
            None => Some(PathBuf::from("./console/dist")),
            Some("") => None,
            Some(d) => Some(PathBuf::from(d)),
        };

        let database_url = layer.database_url.filter(|u| !u.is_empty());
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(key_err(
                    "database_url",
                    "must be a PostgreSQL URL (postgres://user@host:port/database)",
                ));
            }
        }

        let token_secret = layer.token_secret;
        if let Some(secret) = &token_secret {
            if secret.len() < 16 {
                return Err(key_err("token_secret", "must be at least 16 characters"));
            }
        }
        if database_url.is_some() && token_secret.is_none() {
            // Never read from the database: anyone on that path could mint tokens, and
            // it also keys the requests between nodes (docs/cluster.md).
            return Err(key_err(
                "token_secret",
                "is required with database_url: every node of a cluster is given the same one in its configuration (it is never stored in the database)",
            ));
        }

        let session_ttl = parse_duration("session_ttl", layer.session_ttl.as_deref(), "9h")?;
        let token_ttl = parse_duration("token_ttl", layer.token_ttl.as_deref(), "24h")?;

        let log_format = match layer.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(key_err(
                    "log_format",
                    format!("`{other}` is not one of: text, json"),
                ))
            }
        };
        let log = layer.log.unwrap_or_else(|| "info".into());

        let accounts = layer.accounts.unwrap_or_else(|| {
            vec![Account {
                id: DEFAULT_ACCOUNT.into(),
                user: DEFAULT_USER.into(),
                password: DEFAULT_PASSWORD.into(),
            }]
        });
        if accounts.is_empty() {
            return Err(key_err("accounts", "at least one account is needed"));
        }
        let mut ids = HashSet::new();
        let mut users = HashSet::new();
        for a in &accounts {
            if a.id.is_empty()
                || a.id.len() > MAX_ACCOUNT_ID_LEN
                || !a
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(key_err(
                    "accounts",
                    format!(
                        "account id `{}` must be 1-{MAX_ACCOUNT_ID_LEN} characters of A-Z a-z 0-9 - _",
                        a.id
                    ),
                ));
            }
            if a.user.is_empty() || a.user.contains(':') {
                return Err(key_err(
                    "accounts",
                    format!("account `{}`: user must be non-empty and have no ':'", a.id),
                ));
            }
            if a.password.is_empty() {
                return Err(key_err(
                    "accounts",
                    format!("account `{}`: password must be non-empty", a.id),
                ));
            }
            if !ids.insert(a.id.clone()) {
                return Err(key_err(
                    "accounts",
                    format!("account id `{}` appears twice", a.id),
                ));
            }
            if !users.insert(a.user.clone()) {
                return Err(key_err(
                    "accounts",
                    format!("user `{}` appears twice", a.user),
                ));
            }
        }

        let ports_text = layer.rtp_ports.unwrap_or_else(|| "20000-29999".into());
        let rtp_ports = ports_text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| a < b && b - a >= 3)
            .ok_or_else(|| {
                key_err(
                    "rtp_ports",
                    format!("`{ports_text}` is not a range LOW-HIGH of at least 4 ports"),
                )
            })?;
        // Whole numbers (at least 1) and durations: the key's name is its field's.
        macro_rules! count {
            ($f:ident, $default:expr) => {
                parse_count(stringify!($f), layer.$f.as_deref(), $default)?
            };
        }
        macro_rules! duration {
            ($f:ident, $default:expr) => {
                parse_duration(stringify!($f), layer.$f.as_deref(), $default)?
            };
        }
        let rtp_timeout = duration!(rtp_timeout, "60s");
        let sip_tcp_max_connections = count!(sip_tcp_max_connections, 1024);
        let sip_tcp_max_per_source = count!(sip_tcp_max_per_source, 64);
        let sip_tcp_idle_timeout = duration!(sip_tcp_idle_timeout, "120s");
        let sip_max_transactions_per_source = count!(sip_max_transactions_per_source, 1000);
        let http_header_timeout = duration!(http_header_timeout, "10s");
        let http_body_timeout = duration!(http_body_timeout, "30s");
        let http_max_connections = count!(http_max_connections, 4096);
        let http_max_per_source = count!(http_max_per_source, 256);
        let sip_stream_alias = layer.sip_stream_alias.unwrap_or_else(|| "phone".into());
        if sip_stream_alias.is_empty() || sip_stream_alias.chars().count() > 50 {
            return Err(key_err("sip_stream_alias", "must be 1-50 characters"));
        }

        let webhook_secret = layer.webhook_secret.filter(|s| !s.is_empty());
        let webhook_allow = layer.webhook_allow.clone().unwrap_or_default();
        let config = Config {
            webhook_secret,
            webhook_allow,
            sip,
            sip_listen: addresses.sip_listen,
            media_ip: addresses.media_ip,
            public_ip: addresses.public_ip,
            http_tls,
            rtp_ports,
            rtp_timeout,
            sip_tcp_max_connections,
            sip_tcp_max_per_source,
            sip_tcp_idle_timeout,
            sip_max_transactions_per_source,
            http_header_timeout,
            http_body_timeout,
            http_max_connections,
            http_max_per_source,
            sip_stream_alias,
            webrtc_listen: addresses.webrtc_listen,
            http_listen,
            data_dir,
            recordings_dir,
            recording_max_duration,
            recording_max_mb,
            recording_retention,
            recordings_s3,
            stream_retry_for,
            console_dir,
            database_url,
            cluster,
            token_secret,
            session_ttl,
            token_ttl,
            log_format,
            log,
            accounts,
        };
        config.check_default_credentials()?;
        Ok(config)
    }

    /// The bound and advertised addresses.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            sip_listen: self.sip_listen,
            media_ip: self.media_ip,
            public_ip: self.public_ip,
            webrtc_listen: self.webrtc_listen,
        }
    }

    /// The built-in `dev`/`dev` credentials are public: refuse them on any
    /// listener another machine could reach.
    fn check_default_credentials(&self) -> Result<(), ConfigError> {
        if self.accounts.iter().any(Account::is_default) && !is_loopback(self.http_listen.ip()) {
            return Err(key_err(
                "accounts",
                format!(
                    "refusing to serve the default dev/dev credentials on non-loopback http_listen {}; \
                     set your own account (PATCHBAY_ACCOUNT_ID, PATCHBAY_API_USER, PATCHBAY_API_PASSWORD)",
                    self.http_listen
                ),
            ));
        }
        Ok(())
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn parse_toml(text: &str) -> Result<Layer, String> {
    toml::from_str::<Layer>(text).map_err(|e| e.message().replace('\n', " "))
}

/// `9h`, `30m`, `1h 30m`, `45s` (humantime) or a bare number of seconds.
/// A count of at least 1.
fn parse_count(key: &str, text: Option<&str>, default: usize) -> Result<usize, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => t
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| key_err(key, format!("`{t}` is not a whole number of at least 1"))),
    }
}

fn parse_duration(key: &str, text: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    let text = text.unwrap_or(default).trim();
    let d = if let Ok(secs) = text.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(text).map_err(|e| {
            key_err(
                key,
                format!("`{text}` is not a duration like 9h, 30m or 45s ({e})"),
            )
        })?
    };
    if d.is_zero() {
        return Err(key_err(key, "must be greater than zero"));
    }
    Ok(d)
}

/// `sip:host[:port][;transport=udp|tcp]` → (host, resolved address, tcp).
#[cfg(test)]
mod readme_tests;
#[cfg(test)]
mod tests;
