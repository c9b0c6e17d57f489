//! Every scalar key of the configuration declared once: from the one list at the end of
//! this file the macro makes the layer each source fills (the TOML file, the
//! environment, the command line), its merge, and [`SCALAR_KEYS`], which the
//! environment is checked against and the README's table is tested against
//! (`readme_tests.rs`). A key's validation and default live where its value is used
//! (`lib.rs`, `sip.rs`, `recordings.rs`, `cluster.rs`, `addresses.rs`); its flag and
//! help in `cli.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cli::Cli;
use crate::{sip, Account};

macro_rules! config_keys {
    ($( $(#[$m:meta])* $f:ident ),* $(,)?) => {
        /// Every scalar key, in TOML spelling.
        pub(crate) const SCALAR_KEYS: &[&str] = &[$(stringify!($f)),*];

        /// One source's view of the keys: every field optional, unknown keys refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Layer {
            $( $(#[$m])* pub(crate) $f: Option<String>, )*
            pub(crate) accounts: Option<Vec<Account>>,
            pub(crate) sip_registrations: Option<Vec<sip::RegistrationToml>>,
            pub(crate) sip_inbound_numbers: Option<BTreeMap<String, String>>,
        }

        impl Layer {
            /// Overlay `top` on `self`: every key `top` sets wins.
            pub(crate) fn merge(mut self, top: Layer) -> Layer {
                $( if top.$f.is_some() { self.$f = top.$f; } )*
                if top.accounts.is_some() {
                    self.accounts = top.accounts;
                }
                if top.sip_registrations.is_some() {
                    self.sip_registrations = top.sip_registrations;
                }
                if top.sip_inbound_numbers.is_some() {
                    self.sip_inbound_numbers = top.sip_inbound_numbers;
                }
                self
            }

            /// The keys set in the environment (`PATCHBAY_` and the key in capitals).
            pub(crate) fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Layer {
                Layer {
                    $( $f: get(&env_name(stringify!($f))), )*
                    ..Layer::default()
                }
            }

            /// The keys given on the command line.
            pub(crate) fn from_cli(cli: &Cli) -> Layer {
                Layer {
                    $( $f: cli.$f.clone(), )*
                    ..Layer::default()
                }
            }
        }
    };
}

/// Keys that are TOML tables (set in the file only).
#[cfg(test)]
pub(crate) const TABLE_KEYS: &[&str] = &["accounts", "sip_registrations", "sip_inbound_numbers"];

/// The environment variable of a key.
pub(crate) fn env_name(key: &str) -> String {
    format!("PATCHBAY_{}", key.to_ascii_uppercase())
}

/// Environment variables that are not one key each.
pub(crate) const OTHER_ENV: &[&str] = &[
    "PATCHBAY_CONFIG",
    "PATCHBAY_ACCOUNT_ID",
    "PATCHBAY_API_USER",
    "PATCHBAY_API_PASSWORD",
];

/// A count given as a TOML number or as text.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }
    Ok(Option::<NumberOrText>::deserialize(d)?.map(|v| match v {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(t) => t,
    }))
}

config_keys!(
    http_listen,
    data_dir,
    recordings_dir,
    recording_max_duration,
    stream_retry_for,
    #[serde(default, deserialize_with = "number_or_text")]
    recording_max_mb,
    recording_retention,
    recordings_s3_endpoint,
    recordings_s3_bucket,
    recordings_s3_region,
    recordings_s3_access_key_id,
    recordings_s3_secret_access_key,
    recordings_s3_prefix,
    console_dir,
    database_url,
    node_id,
    cluster_lease,
    drain_timeout,
    operator,
    advertise_url,
    cluster_ca,
    token_secret,
    session_ttl,
    token_ttl,
    log_format,
    log,
    sip_listen,
    media_ip,
    public_ip,
    http_tls_cert,
    http_tls_key,
    rtp_ports,
    rtp_timeout,
    #[serde(default, deserialize_with = "number_or_text")]
    sip_tcp_max_connections,
    #[serde(default, deserialize_with = "number_or_text")]
    sip_tcp_max_per_source,
    sip_tcp_idle_timeout,
    #[serde(default, deserialize_with = "number_or_text")]
    sip_max_transactions_per_source,
    http_header_timeout,
    http_body_timeout,
    #[serde(default, deserialize_with = "number_or_text")]
    http_max_connections,
    #[serde(default, deserialize_with = "number_or_text")]
    http_max_per_source,
    sip_stream_alias,
    webrtc_listen,
    webhook_secret,
    webhook_allow,
    sip_trunk,
    sip_trunk_user,
    sip_trunk_password,
    sip_tls_listen,
    sip_tls_cert,
    sip_tls_key,
    sip_tls_ca,
    sip_outbound_proxy,
    sip_srtp,
    sip_trunk_ping_interval,
    sip_inbound_url,
    sip_music_on_hold,
    sip_transfer_targets,
);
