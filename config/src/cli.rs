//! The command line: one flag per key (its doc names the TOML key and the
//! environment variable), parsed by clap.

use std::path::PathBuf;

use clap::Parser;

/// Patchbay: self-hosted SIP <-> WebRTC conferencing gateway, wire-compatible with Bandwidth WebRTC.
///
/// Every option is also a TOML key (the name in brackets) and a PATCHBAY_* environment
/// variable. Precedence: defaults < TOML file < environment < command line.
#[derive(Debug, Parser)]
#[command(name = "patchbay", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file [env: PATCHBAY_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// [http_listen, PATCHBAY_HTTP_LISTEN] REST API + WebSocket listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// [data_dir, PATCHBAY_DATA_DIR] Directory of the SQLite store [default: ./patchbay-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,

    /// [recordings_dir, PATCHBAY_RECORDINGS_DIR] Directory of recordings' files, one directory per recording with its manifest.json [default: data_dir/recordings]
    #[arg(long, value_name = "DIR")]
    pub recordings_dir: Option<String>,
    /// [recording_max_duration, PATCHBAY_RECORDING_MAX_DURATION] A recording stops by itself after this long (reason `limit`) [default: 4h]
    #[arg(long, value_name = "DURATION")]
    pub recording_max_duration: Option<String>,
    /// [stream_retry_for, PATCHBAY_STREAM_RETRY_FOR] A stream participant's bot whose WebSocket dropped is connected again (with backoff) for this long, then the participant gets onLeave [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub stream_retry_for: Option<String>,
    /// [recording_max_mb, PATCHBAY_RECORDING_MAX_MB] A recording stops by itself once its files hold this many MB (reason `limit`) [default: 2048]
    #[arg(long, value_name = "MB")]
    pub recording_max_mb: Option<String>,
    /// [recording_retention, PATCHBAY_RECORDING_RETENTION] Finished recordings (their records and local files) are deleted this long after they end; one whose upload is still pending is kept until it is uploaded [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub recording_retention: Option<String>,
    /// [recordings_s3_bucket, PATCHBAY_RECORDINGS_S3_BUCKET] Copy finished recordings to this bucket of S3-compatible storage (kept locally too) [default: none]
    #[arg(long, value_name = "BUCKET")]
    pub recordings_s3_bucket: Option<String>,
    /// [recordings_s3_endpoint, PATCHBAY_RECORDINGS_S3_ENDPOINT] The S3-compatible service, e.g. https://minio.example:9000 (path-style requests) [default: AWS S3]
    #[arg(long, value_name = "URL")]
    pub recordings_s3_endpoint: Option<String>,
    /// [recordings_s3_region, PATCHBAY_RECORDINGS_S3_REGION] The bucket's region [default: AWS_REGION, else us-east-1]
    #[arg(long, value_name = "REGION")]
    pub recordings_s3_region: Option<String>,
    /// [recordings_s3_access_key_id, PATCHBAY_RECORDINGS_S3_ACCESS_KEY_ID] Access key (with the secret below) [default: AWS_ACCESS_KEY_ID]
    #[arg(long, value_name = "KEY")]
    pub recordings_s3_access_key_id: Option<String>,
    /// [recordings_s3_secret_access_key, PATCHBAY_RECORDINGS_S3_SECRET_ACCESS_KEY] Secret key [default: AWS_SECRET_ACCESS_KEY]
    #[arg(long, value_name = "SECRET")]
    pub recordings_s3_secret_access_key: Option<String>,
    /// [recordings_s3_prefix, PATCHBAY_RECORDINGS_S3_PREFIX] Key prefix: PREFIX/ACCOUNT/SESSION/RECORDING/FILE [default: recordings/]
    #[arg(long, value_name = "PREFIX")]
    pub recordings_s3_prefix: Option<String>,
    /// [console_dir, PATCHBAY_CONSOLE_DIR] Directory of the built web console, served at /console/ (empty: no console) [default: ./console/dist]
    #[arg(long, value_name = "DIR")]
    pub console_dir: Option<String>,

    /// [database_url, PATCHBAY_DATABASE_URL] PostgreSQL database for the durable state, e.g. postgres://patchbay@127.0.0.1/patchbay [default: the embedded SQLite store in data_dir]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// [node_id, PATCHBAY_NODE_ID] This node's name in a cluster (with database_url): stable across restarts, unique among the nodes [default: HOSTNAME-XXXXXX, made once and kept in data_dir/node-id]
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,

    /// [cluster_lease, PATCHBAY_CLUSTER_LEASE] A node silent this long is dead: live nodes take over its undelivered webhooks and end its devices and calls [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub cluster_lease: Option<String>,

    /// [drain_timeout, PATCHBAY_DRAIN_TIMEOUT] In a cluster, how long a stopping node waits for its SIP calls to end (browser-only sessions move to other nodes at once) before ending the rest [default: 25s]
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,

    /// [operator, PATCHBAY_OPERATOR] Operator credentials USER:PASSWORD (Basic auth) for GET /v1/cluster [default: none: /v1/cluster is refused]
    #[arg(long, value_name = "USER:PASSWORD")]
    pub operator: Option<String>,

    /// [advertise_url, PATCHBAY_ADVERTISE_URL] In a cluster, the URL other nodes reach this node's HTTP listener at (https://node1.example:8443; its certificate must name that host) [default: http(s)://HTTP_LISTEN]
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,

    /// [cluster_ca, PATCHBAY_CLUSTER_CA] In a cluster, the CAs (PEM file) trusted for HTTPS to other nodes [default: the Web PKI roots]
    #[arg(long, value_name = "FILE")]
    pub cluster_ca: Option<String>,

    /// [token_secret, PATCHBAY_TOKEN_SECRET] HS256 secret for participant tokens, and (in a cluster) the key of the requests between nodes; required with database_url [default: generated on first start and kept in the embedded store]
    #[arg(long, value_name = "SECRET")]
    pub token_secret: Option<String>,

    /// [session_ttl, PATCHBAY_SESSION_TTL] Sessions are deleted this long after creation, e.g. 9h, 30m, 45s [default: 9h]
    #[arg(long, value_name = "DURATION")]
    pub session_ttl: Option<String>,

    /// [token_ttl, PATCHBAY_TOKEN_TTL] Lifetime of a participant token [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub token_ttl: Option<String>,

    /// [log_format, PATCHBAY_LOG_FORMAT] text or json [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// [log, PATCHBAY_LOG] Log filter in tracing's EnvFilter syntax [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// [sip_listen, PATCHBAY_SIP_LISTEN] SIP listen address, UDP and TCP [default: 127.0.0.1:5060]
    #[arg(long, value_name = "ADDR")]
    pub sip_listen: Option<String>,

    /// [media_ip, PATCHBAY_MEDIA_IP] Address bound for RTP, and advertised in SIP Contact and SDP unless public_ip is set [default: the sip_listen IP]
    #[arg(long, value_name = "IP")]
    pub media_ip: Option<String>,

    /// [public_ip, PATCHBAY_PUBLIC_IP] Address advertised instead of the bound ones (SIP SDP c=, Contact, Via; the browsers' ICE candidate) behind 1:1 NAT [default: none]
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<String>,

    /// [http_tls_cert, PATCHBAY_HTTP_TLS_CERT] PEM certificate chain: serve HTTPS and WSS on http_listen (read again on SIGHUP) [default: none, plain HTTP]
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert: Option<String>,

    /// [http_tls_key, PATCHBAY_HTTP_TLS_KEY] PEM private key of http_tls_cert [default: none]
    #[arg(long, value_name = "FILE")]
    pub http_tls_key: Option<String>,

    /// [rtp_ports, PATCHBAY_RTP_PORTS] UDP port range for SIP legs' RTP/RTCP, LOW-HIGH [default: 20000-29999]
    #[arg(long, value_name = "LOW-HIGH")]
    pub rtp_ports: Option<String>,

    /// [rtp_timeout, PATCHBAY_RTP_TIMEOUT] Hang up a SIP leg after this long without any RTP or RTCP [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub rtp_timeout: Option<String>,

    /// [sip_tcp_max_connections, PATCHBAY_SIP_TCP_MAX_CONNECTIONS] SIP TCP connections at once; more are refused [default: 1024]
    #[arg(long, value_name = "N")]
    pub sip_tcp_max_connections: Option<String>,

    /// [sip_tcp_max_per_source, PATCHBAY_SIP_TCP_MAX_PER_SOURCE] SIP TCP connections at once from one IP address [default: 64]
    #[arg(long, value_name = "N")]
    pub sip_tcp_max_per_source: Option<String>,

    /// [sip_tcp_idle_timeout, PATCHBAY_SIP_TCP_IDLE_TIMEOUT] Close a SIP TCP connection after this long without a byte [default: 120s]
    #[arg(long, value_name = "DURATION")]
    pub sip_tcp_idle_timeout: Option<String>,

    /// [sip_max_transactions_per_source, PATCHBAY_SIP_MAX_TRANSACTIONS_PER_SOURCE] SIP server transactions at once from one IP address; a new request over it gets 503 with Retry-After [default: 1000]
    #[arg(long, value_name = "N")]
    pub sip_max_transactions_per_source: Option<String>,

    /// [http_header_timeout, PATCHBAY_HTTP_HEADER_TIMEOUT] An HTTP request's headers must arrive within this; also how long an idle keep-alive connection stays [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub http_header_timeout: Option<String>,

    /// [http_body_timeout, PATCHBAY_HTTP_BODY_TIMEOUT] An HTTP request's body must arrive within this after its headers, or the request gets 408 [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub http_body_timeout: Option<String>,

    /// [http_max_connections, PATCHBAY_HTTP_MAX_CONNECTIONS] HTTP connections at once, WebSockets included; more are refused [default: 4096]
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<String>,

    /// [http_max_per_source, PATCHBAY_HTTP_MAX_PER_SOURCE] HTTP connections at once from one IP address [default: 256]
    #[arg(long, value_name = "N")]
    pub http_max_per_source: Option<String>,

    /// [sip_stream_alias, PATCHBAY_SIP_STREAM_ALIAS] Stream alias of SIP callers' audio (for alias-level subscriptions) [default: phone]
    #[arg(long, value_name = "ALIAS")]
    pub sip_stream_alias: Option<String>,

    /// [webrtc_listen, PATCHBAY_WEBRTC_LISTEN] The one UDP address of all WebRTC media (ICE-lite host candidate unless public_ip is set) [default: 127.0.0.1:30000]
    #[arg(long, value_name = "ADDR")]
    pub webrtc_listen: Option<String>,

    /// [webhook_secret, PATCHBAY_WEBHOOK_SECRET] Sign webhook bodies: header X-Patchbay-Signature: sha256=HMAC-SHA256(secret, body) in hex [default: unsigned]
    #[arg(long, value_name = "SECRET")]
    pub webhook_secret: Option<String>,

    /// [webhook_allow, PATCHBAY_WEBHOOK_ALLOW] Webhook destinations allowed although not public: comma-separated CIDRs and host names, e.g. 10.0.0.0/8,hooks.internal [default: none: loopback, private, link-local and other non-public addresses are refused]
    #[arg(long, value_name = "LIST")]
    pub webhook_allow: Option<String>,

    /// [sip_trunk, PATCHBAY_SIP_TRUNK] SIP trunk for dialogs (outbound calls), e.g. sip:127.0.0.1:5090;transport=udp [default: none: dialogs are refused]
    #[arg(long, value_name = "SIP-URI")]
    pub sip_trunk: Option<String>,

    /// [sip_trunk_user, PATCHBAY_SIP_TRUNK_USER] Digest user name for the trunk's 401/407 challenges [default: none]
    #[arg(long, value_name = "USER")]
    pub sip_trunk_user: Option<String>,

    /// [sip_trunk_password, PATCHBAY_SIP_TRUNK_PASSWORD] Digest password for the trunk [default: none]
    #[arg(long, value_name = "PASSWORD")]
    pub sip_trunk_password: Option<String>,

    /// [sip_outbound_proxy, PATCHBAY_SIP_OUTBOUND_PROXY] Send dialogs through this proxy (a loose route), e.g. sip:proxy.example:5060;transport=tcp [default: none]
    #[arg(long, value_name = "SIP-URI")]
    pub sip_outbound_proxy: Option<String>,

    /// [sip_tls_listen, PATCHBAY_SIP_TLS_LISTEN] SIP over TLS listen address, e.g. 0.0.0.0:5061 [default: off]
    #[arg(long, value_name = "ADDR")]
    pub sip_tls_listen: Option<String>,

    /// [sip_tls_cert, PATCHBAY_SIP_TLS_CERT] PEM certificate chain of the TLS listener (read again on SIGHUP) [default: none]
    #[arg(long, value_name = "FILE")]
    pub sip_tls_cert: Option<String>,

    /// [sip_tls_key, PATCHBAY_SIP_TLS_KEY] PEM private key of the TLS listener (read again on SIGHUP) [default: none]
    #[arg(long, value_name = "FILE")]
    pub sip_tls_key: Option<String>,

    /// [sip_tls_ca, PATCHBAY_SIP_TLS_CA] PEM CA certificates trusted for TLS trunks and proxies [default: the Web PKI roots]
    #[arg(long, value_name = "FILE")]
    pub sip_tls_ca: Option<String>,

    /// [sip_srtp, PATCHBAY_SIP_SRTP] SRTP (SDES) on SIP legs: off, offer (dialogs offer it) or require (plain RTP gets 488) [default: off]
    #[arg(long, value_name = "MODE")]
    pub sip_srtp: Option<String>,

    /// [sip_trunk_ping_interval, PATCHBAY_SIP_TRUNK_PING_INTERVAL] OPTIONS to the trunk this often, 0 to never [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub sip_trunk_ping_interval: Option<String>,

    /// [sip_inbound_url, PATCHBAY_SIP_INBOUND_URL] Calls without a token are offered to this URL (POST), which answers with the participant's token; without it they get 403 [default: none]
    #[arg(long, value_name = "URL")]
    pub sip_inbound_url: Option<String>,

    /// [sip_music_on_hold, PATCHBAY_SIP_MUSIC_ON_HOLD] WAV file (16-bit PCM mono, 8, 16 or 48 kHz) that SIP calls held through the API hear, looped [default: none: held calls hear nothing]
    #[arg(long, value_name = "FILE")]
    pub sip_music_on_hold: Option<String>,

    /// [sip_transfer_targets, PATCHBAY_SIP_TRANSFER_TARGETS] Where a phone's REFER may transfer its call, through the trunk: comma-separated prefixes of the target's user part (`+1`, `2`), or `*` for any [default: none: phones' REFERs are refused with 403]
    #[arg(long, value_name = "PREFIXES")]
    pub sip_transfer_targets: Option<String>,

    /// [accounts] API account as ID:USER:PASSWORD (repeatable; replaces the configured list).
    /// TOML: [[accounts]] id/user/password. Env for one account: PATCHBAY_ACCOUNT_ID,
    /// PATCHBAY_API_USER, PATCHBAY_API_PASSWORD [default: dev:dev:dev, loopback only]
    #[arg(long, value_name = "ID:USER:PASSWORD")]
    pub account: Vec<String>,
}
