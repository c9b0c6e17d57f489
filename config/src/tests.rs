//! The configuration layers, keys and their refusals.

use super::*;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut all = vec!["patchbay"];
    all.extend_from_slice(args);
    Config::load(all, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn sip_trunk_and_its_credentials() {
    let c = Config::from_toml(
        "sip_trunk = \"sip:127.0.0.1:5090;transport=udp\"\nsip_trunk_user = \"u\"\nsip_trunk_password = \"p\"\nwebhook_secret = \"k\"",
    )
    .unwrap();
    let t = c.sip.trunk.unwrap();
    assert_eq!(t.hop.addr, "127.0.0.1:5090".parse().unwrap());
    assert_eq!(t.hop.transport, SipTransport::Udp);
    assert_eq!(
        (t.user.as_deref(), t.password.as_deref()),
        (Some("u"), Some("p"))
    );
    assert_eq!(c.webhook_secret.as_deref(), Some("k"));
    let c = Config::from_toml("sip_trunk = \"sip:127.0.0.1\"").unwrap();
    assert_eq!(c.sip.trunk.unwrap().hop.addr.port(), 5060);
    assert!(Config::from_toml("").unwrap().sip.trunk.is_none());
    for (uri, port, transport) in [
        ("sip:127.0.0.1;transport=tcp", 5060, SipTransport::Tcp),
        ("sip:127.0.0.1;transport=TLS", 5061, SipTransport::Tls),
        ("sips:127.0.0.1:5071", 5071, SipTransport::Tls),
        ("sip:[::1]:5070;lr;transport=udp", 5070, SipTransport::Udp),
    ] {
        let c = Config::from_toml(&format!("sip_trunk = \"{uri}\"")).unwrap();
        let hop = c.sip.trunk.unwrap().hop;
        assert_eq!((hop.addr.port(), hop.transport), (port, transport), "{uri}");
    }
    for bad in [
        "sip_trunk = \"http://x\"",
        "sip_trunk = \"sip:127.0.0.1:99999\"",
        "sip_trunk = \"sip:127.0.0.1;transport=sctp\"",
        "sip_trunk = \"sips:127.0.0.1;transport=tcp\"",
        "sip_trunk = \"sip:127.0.0.1\"\nsip_trunk_user = \"u\"",
    ] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("sip_trunk"), "{bad}: {e}");
    }
}

#[test]
fn sip_tls_srtp_proxy_and_pings() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.sip.srtp, SrtpMode::Off);
    assert!(c.sip.tls.is_none() && c.sip.outbound_proxy.is_none());
    assert_eq!(c.sip.trunk_ping_interval, Duration::from_secs(30));
    let dir = std::env::temp_dir().join(format!("patchbay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let c = load(
        &[
            "--sip-tls-listen",
            "127.0.0.1:5061",
            "--sip-tls-cert",
            cert.to_str().unwrap(),
            "--sip-srtp",
            "require",
            "--sip-trunk",
            "sip:127.0.0.1:5090",
        ],
        &[
            ("PATCHBAY_SIP_TLS_KEY", key.to_str().unwrap()),
            (
                "PATCHBAY_SIP_OUTBOUND_PROXY",
                "sip:127.0.0.1:5070;transport=tcp;lr",
            ),
            ("PATCHBAY_SIP_TRUNK_PING_INTERVAL", "0"),
        ],
    )
    .unwrap();
    let tls = c.sip.tls.unwrap();
    assert_eq!((tls.listen.port(), tls.key), (5061, key.clone()));
    assert_eq!(c.sip.srtp, SrtpMode::Require);
    assert_eq!(c.sip.outbound_proxy.unwrap().transport, SipTransport::Tcp);
    assert_eq!(c.sip.trunk_ping_interval, Duration::ZERO);
    for (bad, key_name) in [
        ("sip_tls_listen = \"127.0.0.1:5061\"", "sip_tls_listen"),
        ("sip_tls_cert = \"/nonexistent.pem\"", "sip_tls_cert"),
        ("sip_srtp = \"maybe\"", "sip_srtp"),
        (
            "sip_outbound_proxy = \"sip:127.0.0.1\"",
            "sip_outbound_proxy",
        ),
    ] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains(key_name), "{bad}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn http_limits() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(
        (
            c.http_header_timeout,
            c.http_body_timeout,
            c.http_max_connections,
            c.http_max_per_source
        ),
        (Duration::from_secs(10), Duration::from_secs(30), 4096, 256)
    );
    let c = load(
        &["--http-header-timeout", "2s", "--http-max-per-source", "3"],
        &[
            ("PATCHBAY_HTTP_MAX_CONNECTIONS", "9"),
            ("PATCHBAY_HTTP_BODY_TIMEOUT", "1m"),
        ],
    )
    .unwrap();
    assert_eq!(
        (
            c.http_header_timeout,
            c.http_body_timeout,
            c.http_max_connections,
            c.http_max_per_source
        ),
        (Duration::from_secs(2), Duration::from_secs(60), 9, 3)
    );
    for bad in ["http_max_connections = 0", "http_header_timeout = \"soon\""] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("http_"), "{bad}: {e}");
    }
}

#[test]
fn sip_tcp_limits() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(
        (
            c.sip_tcp_max_connections,
            c.sip_tcp_max_per_source,
            c.sip_tcp_idle_timeout
        ),
        (1024, 64, Duration::from_secs(120))
    );
    let c = Config::from_toml(
        "sip_tcp_max_connections = 10\nsip_tcp_max_per_source = \"3\"\nsip_tcp_idle_timeout = \"2s\"",
    )
    .unwrap();
    assert_eq!(
        (
            c.sip_tcp_max_connections,
            c.sip_tcp_max_per_source,
            c.sip_tcp_idle_timeout
        ),
        (10, 3, Duration::from_secs(2))
    );
    assert_eq!(
        load(&[], &[]).unwrap().sip_max_transactions_per_source,
        1000
    );
    let c = load(&["--sip-max-transactions-per-source", "7"], &[]).unwrap();
    assert_eq!(c.sip_max_transactions_per_source, 7);
    let c = load(
        &["--sip-tcp-max-per-source", "5"],
        &[("PATCHBAY_SIP_TCP_MAX_CONNECTIONS", "7")],
    )
    .unwrap();
    assert_eq!(
        (c.sip_tcp_max_connections, c.sip_tcp_max_per_source),
        (7, 5)
    );
    for bad in [
        "sip_tcp_max_connections = 0",
        "sip_tcp_max_per_source = \"many\"",
    ] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("sip_tcp_max"), "{bad}: {e}");
    }
}

#[test]
fn defaults_run_on_loopback() {
    let c = load(&[], &[]).expect("defaults load");
    assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("./patchbay-data"));
    assert_eq!(c.session_ttl, Duration::from_secs(9 * 3600));
    assert_eq!(c.accounts.len(), 1);
    assert_eq!(c.accounts[0].id, "dev");
    assert!(c.accounts[0].is_default());
    assert_eq!(c.log_format, LogFormat::Text);
}

#[test]
fn precedence_file_env_cli() {
    let dir = std::env::temp_dir().join(format!("pb-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        "http_listen = \"127.0.0.1:1111\"\ndata_dir = \"/from-file\"\nsession_ttl = \"1h\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c = load(&["--config", f], &[]).unwrap();
    assert_eq!(c.http_listen.port(), 1111);
    assert_eq!(c.session_ttl, Duration::from_secs(3600));

    let c = load(
        &["--config", f],
        &[
            ("PATCHBAY_HTTP_LISTEN", "127.0.0.1:2222"),
            ("PATCHBAY_DATA_DIR", "/from-env"),
        ],
    )
    .unwrap();
    assert_eq!(c.http_listen.port(), 2222);
    assert_eq!(c.data_dir, PathBuf::from("/from-env"));

    let c = load(
        &["--config", f, "--http-listen", "127.0.0.1:3333"],
        &[("PATCHBAY_HTTP_LISTEN", "127.0.0.1:2222")],
    )
    .unwrap();
    assert_eq!(c.http_listen.port(), 3333);
    assert_eq!(c.data_dir, PathBuf::from("/from-file"));

    // PATCHBAY_CONFIG names the file when --config is absent.
    let c = load(&[], &[("PATCHBAY_CONFIG", f)]).unwrap();
    assert_eq!(c.http_listen.port(), 1111);
}

#[test]
fn unknown_keys_are_named() {
    let e = Config::from_toml("http_listen = \"127.0.0.1:1\"\nhttp_lisen = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("http_lisen"), "{e}");
    let e = load(&[], &[("PATCHBAY_HTTP_LISTN", "x")]).unwrap_err();
    assert!(e.to_string().contains("PATCHBAY_HTTP_LISTN"), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn bad_values_name_their_key() {
    let e = load(&["--http-listen", "localhost"], &[]).unwrap_err();
    assert!(e.to_string().contains("http_listen"), "{e}");
    let e = load(&[], &[("PATCHBAY_SESSION_TTL", "soon")]).unwrap_err();
    assert!(e.to_string().contains("session_ttl"), "{e}");
    let e = load(&[], &[("PATCHBAY_LOG_FORMAT", "xml")]).unwrap_err();
    assert!(e.to_string().contains("log_format"), "{e}");
    let e = load(&["--token-secret", "short"], &[]).unwrap_err();
    assert!(e.to_string().contains("token_secret"), "{e}");
    let e = load(&[], &[("PATCHBAY_DATABASE_URL", "postgres://pb@db/pb")]).unwrap_err();
    assert!(
        e.to_string().contains("token_secret") && e.to_string().contains("database_url"),
        "{e}"
    );
    for bad in ["ftp://n1", "https://n1/path", "https://", "n1:8443"] {
        let e = load(&["--advertise-url", bad], &[]).unwrap_err();
        assert!(e.to_string().contains("advertise_url"), "{bad}: {e}");
    }
    let c = load(&["--advertise-url", "https://n1.example:8443/"], &[]).unwrap();
    assert_eq!(
        c.cluster.advertise_url.as_deref(),
        Some("https://n1.example:8443")
    );
    let e = load(&["--cluster-ca", "/nonexistent/ca.pem"], &[]).unwrap_err();
    assert!(e.to_string().contains("cluster_ca"), "{e}");
    let e = load(&[], &[("PATCHBAY_ACCOUNT_ID", "a")]).unwrap_err();
    assert!(e.to_string().contains("accounts"), "{e}");
    let e = load(&["--account", "this-is-far-too-long:u:p"], &[]).unwrap_err();
    assert!(e.to_string().contains("accounts"), "{e}");
}

#[test]
fn sip_keys() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(c.sip_listen, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(c.media_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(c.rtp_ports, (20000, 29999));
    assert_eq!(c.rtp_timeout, Duration::from_secs(60));
    let c = load(
        &[
            "--sip-listen",
            "127.0.0.2:5070",
            "--rtp-ports",
            "30002-30100",
        ],
        &[("PATCHBAY_RTP_TIMEOUT", "5s")],
    )
    .unwrap();
    assert_eq!(c.media_ip, "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(c.rtp_ports, (30002, 30100));
    assert_eq!(c.rtp_timeout, Duration::from_secs(5));
    let e = load(&["--sip-listen", "0.0.0.0:5060"], &[]).unwrap_err();
    assert!(e.to_string().contains("media_ip"), "{e}");
    let e = load(&["--rtp-ports", "30000"], &[]).unwrap_err();
    assert!(e.to_string().contains("rtp_ports"), "{e}");
    let e = load(&["--rtp-ports", "300-200"], &[]).unwrap_err();
    assert!(e.to_string().contains("rtp_ports"), "{e}");
    let e = load(&[], &[("PATCHBAY_MEDIA_IP", "host")]).unwrap_err();
    assert!(e.to_string().contains("media_ip"), "{e}");
}

#[test]
fn public_ip_is_advertised_while_wildcards_are_bound() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(c.public_ip, None);
    assert_eq!(c.addresses().sip_uri(), "sip:127.0.0.1:5060");
    // A cloud VM behind 1:1 NAT: bind everything, advertise the public address.
    let c = load(
        &[
            "--sip-listen",
            "0.0.0.0:5060",
            "--webrtc-listen",
            "0.0.0.0:30000",
        ],
        &[("PATCHBAY_PUBLIC_IP", "203.0.113.7")],
    )
    .unwrap();
    assert_eq!(c.media_ip, "0.0.0.0".parse::<IpAddr>().unwrap());
    let a = c.addresses();
    assert_eq!(a.advertised_ip(), "203.0.113.7".parse::<IpAddr>().unwrap());
    assert_eq!(a.sip_uri(), "sip:203.0.113.7:5060");
    assert_eq!(a.webrtc_advertised(), "203.0.113.7:30000".parse().unwrap());
    let c = load(
        &["--public-ip", "2001:db8::7", "--sip-listen", "[::]:5070"],
        &[],
    )
    .unwrap();
    assert_eq!(c.addresses().sip_uri(), "sip:[2001:db8::7]:5070");
    // Without it, wildcards are refused, naming the key and the way out.
    for (args, key) in [
        (&["--webrtc-listen", "0.0.0.0:30000"][..], "webrtc_listen"),
        (&["--media-ip", "0.0.0.0"][..], "media_ip"),
    ] {
        let e = load(args, &[]).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("public_ip"), "{e}");
    }
    for bad in ["0.0.0.0", "example.com"] {
        let e = load(&["--public-ip", bad], &[]).unwrap_err();
        assert!(e.to_string().contains("public_ip"), "{e}");
    }
}

#[test]
fn https_needs_a_certificate_and_its_key() {
    let tls = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/tls");
    let (cert, key) = (format!("{tls}/server.pem"), format!("{tls}/server.key"));
    let (cert, key) = (cert.as_str(), key.as_str());
    assert_eq!(load(&[], &[]).unwrap().http_tls, None);
    let c = load(&["--http-tls-cert", cert, "--http-tls-key", key], &[]).unwrap();
    assert_eq!(
        c.http_tls,
        Some(HttpTls {
            cert: cert.into(),
            key: key.into()
        })
    );
    let e = load(&["--http-tls-cert", cert], &[]).unwrap_err();
    assert!(e.to_string().contains("http_tls_key"), "{e}");
    let e = load(&[], &[("PATCHBAY_HTTP_TLS_KEY", key)]).unwrap_err();
    assert!(e.to_string().contains("http_tls_cert"), "{e}");
    let e = load(
        &["--http-tls-cert", "/nonexistent", "--http-tls-key", key],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("http_tls_cert"), "{e}");
}

#[test]
fn durations() {
    let c = load(&["--session-ttl", "90", "--token-ttl", "1h 30m"], &[]).unwrap();
    assert_eq!(c.session_ttl, Duration::from_secs(90));
    assert_eq!(c.token_ttl, Duration::from_secs(5400));
    assert!(load(&["--session-ttl", "0s"], &[]).is_err());
}

#[test]
fn default_credentials_only_on_loopback() {
    let e = load(&["--http-listen", "0.0.0.0:8080"], &[]).unwrap_err();
    assert!(e.to_string().contains("dev/dev"), "{e}");
    assert!(load(&["--http-listen", "[::1]:8080"], &[]).is_ok());
    let c = load(
        &["--http-listen", "0.0.0.0:8080"],
        &[
            ("PATCHBAY_ACCOUNT_ID", "acme"),
            ("PATCHBAY_API_USER", "acme-api"),
            ("PATCHBAY_API_PASSWORD", "s3cret-s3cret"),
        ],
    )
    .unwrap();
    assert_eq!(c.accounts[0].id, "acme");
}

#[test]
fn accounts_from_toml_and_cli() {
    let c = Config::from_toml(
        "[[accounts]]\nid = \"a\"\nuser = \"ua\"\npassword = \"pa\"\n\n[[accounts]]\nid = \"b\"\nuser = \"ub\"\npassword = \"pb\"\n",
    )
    .unwrap();
    assert_eq!(c.accounts.len(), 2);
    let e = Config::from_toml(
        "[[accounts]]\nid = \"a\"\nuser = \"u\"\npassword = \"p\"\n[[accounts]]\nid = \"a\"\nuser = \"v\"\npassword = \"p\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let c = load(&["--account", "x:ux:p:with:colons"], &[]).unwrap();
    assert_eq!(c.accounts[0].password, "p:with:colons");
}

#[test]
fn database_url_selects_postgresql_and_must_be_one() {
    assert_eq!(load(&[], &[]).unwrap().database_url, None);
    let secret = ("PATCHBAY_TOKEN_SECRET", "a-cluster-token-secret-01");
    let c = load(
        &[],
        &[
            (
                "PATCHBAY_DATABASE_URL",
                "postgres://patchbay@127.0.0.1/patchbay",
            ),
            secret,
        ],
    )
    .unwrap();
    assert_eq!(
        c.database_url.as_deref(),
        Some("postgres://patchbay@127.0.0.1/patchbay")
    );
    let c = load(&["--database-url", "postgresql://h/db"], &[secret]).unwrap();
    assert_eq!(c.database_url.as_deref(), Some("postgresql://h/db"));
    let e = load(&["--database-url", "mysql://h/db"], &[secret]).unwrap_err();
    assert!(e.to_string().contains("database_url"), "{e}");
}

#[test]
fn recordings_keys_and_their_refusals() {
    let c = Config::from_toml("data_dir = \"/d\"").unwrap();
    assert_eq!(c.recordings_dir, PathBuf::from("/d/recordings"));
    assert_eq!(c.recording_max_duration, Duration::from_secs(4 * 3600));
    assert_eq!(c.recording_max_mb, 2048);
    assert_eq!(c.recording_retention, Duration::from_secs(30 * 86_400));
    assert!(c.recordings_s3.is_none());
    let c = load(
        &[
            "--recordings-s3-bucket",
            "calls",
            "--recordings-s3-endpoint",
            "http://127.0.0.1:9000",
        ],
        &[("PATCHBAY_RECORDING_MAX_DURATION", "30m")],
    )
    .unwrap();
    let s3 = c.recordings_s3.unwrap();
    assert_eq!(
        (
            s3.bucket.as_str(),
            s3.endpoint.as_deref(),
            s3.prefix.as_str()
        ),
        ("calls", Some("http://127.0.0.1:9000"), "recordings/")
    );
    assert_eq!(c.recording_max_duration, Duration::from_secs(1800));
    for (toml, key) in [
        (
            "recordings_s3_endpoint = \"http://x\"",
            "recordings_s3_endpoint",
        ),
        (
            "recordings_s3_bucket = \"b\"\nrecordings_s3_endpoint = \"ftp://x\"",
            "recordings_s3_endpoint",
        ),
        (
            "recordings_s3_bucket = \"b\"\nrecordings_s3_access_key_id = \"k\"",
            "recordings_s3_secret_access_key",
        ),
        ("recording_max_mb = 0", "recording_max_mb"),
    ] {
        let e = Config::from_toml(toml).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

#[test]
fn stream_retry_for_from_each_layer() {
    let c = Config::from_toml("data_dir = \"/d\"").unwrap();
    assert_eq!(c.stream_retry_for, Duration::from_secs(30));
    let c = Config::from_toml("stream_retry_for = \"2m\"").unwrap();
    assert_eq!(c.stream_retry_for, Duration::from_secs(120));
    let c = load(
        &["--stream-retry-for", "5s"],
        &[("PATCHBAY_STREAM_RETRY_FOR", "9s")],
    )
    .unwrap();
    assert_eq!(c.stream_retry_for, Duration::from_secs(5));
    let e = Config::from_toml("stream_retry_for = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("stream_retry_for"), "{e}");
}

#[test]
fn sip_registrations_and_the_inbound_url() {
    let c = Config::from_toml(
        "sip_inbound_url = \"http://127.0.0.1:9/inbound\"\n\
         [[sip_registrations]]\nregistrar = \"sip:127.0.0.1:5090\"\naor = \"sip:1000@pbx.example\"\n\
         user = \"1000\"\npassword = \"pw\"\nexpires = \"5m\"\n\
         [[sip_registrations]]\nregistrar = \"sip:127.0.0.1;transport=tcp\"\naor = \"sip:1001@pbx.example\"\n",
    )
    .unwrap();
    assert_eq!(
        c.sip.inbound_url.as_deref(),
        Some("http://127.0.0.1:9/inbound")
    );
    let [a, b] = &c.sip.registrations[..] else {
        panic!("{:?}", c.sip.registrations)
    };
    assert_eq!(a.registrar.addr, "127.0.0.1:5090".parse().unwrap());
    assert_eq!(a.aor, "sip:1000@pbx.example");
    assert_eq!(
        (a.user.as_deref(), a.password.as_deref(), a.expires),
        (Some("1000"), Some("pw"), Duration::from_secs(300))
    );
    assert_eq!(b.registrar.transport, SipTransport::Tcp);
    assert_eq!(
        (b.user.as_deref(), b.expires),
        (None, Duration::from_secs(3600))
    );
    assert!(Config::from_toml("").unwrap().sip.registrations.is_empty());
    let reg = |body: &str| format!("[[sip_registrations]]\n{body}");
    for bad in [
        reg("registrar = \"http://x\"\naor = \"sip:1@x\""),
        reg("registrar = \"sip:127.0.0.1\"\naor = \"1000\""),
        reg("registrar = \"sip:127.0.0.1\"\naor = \"sip:pbx.example\""),
        reg("registrar = \"sip:127.0.0.1\"\naor = \"sip:1@x\"\nuser = \"u\""),
        reg("registrar = \"sip:127.0.0.1\"\naor = \"sip:1@x\"\nexpires = \"0s\""),
        format!(
            "{}\n{}",
            reg("registrar = \"sip:127.0.0.1\"\naor = \"sip:1@x\""),
            reg("registrar = \"sip:127.0.0.1\"\naor = \"sip:1@x\"")
        ),
    ] {
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("sip_registrations"), "{bad}: {e}");
    }
    let e = Config::from_toml(&reg(
        "registrar = \"sip:127.0.0.1\"\naor = \"sip:1@x\"\nrealm = \"r\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `realm`"), "{e}");
    let e = Config::from_toml("sip_inbound_url = \"ftp://x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sip_inbound_url"), "{e}");
}

#[test]
fn sip_transfer_targets_are_prefixes() {
    let c = Config::from_toml("sip_transfer_targets = \"+1, 2,*\"").unwrap();
    assert_eq!(c.sip.transfer_targets, ["+1", "2", "*"]);
    assert!(Config::from_toml("")
        .unwrap()
        .sip
        .transfer_targets
        .is_empty());
    let e = Config::from_toml("sip_transfer_targets = \"a@b\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sip_transfer_targets"), "{e}");
}

#[test]
fn sip_inbound_numbers_map_numbers_to_participant_ids() {
    let c = Config::from_toml(
        "[sip_inbound_numbers]
\"1000\" = \"6f9619ff-8b86-d011-b42d-00cf4fc964ff\"
         \"+15551234567\" = \"00000000-0000-4000-8000-000000000001\"
",
    )
    .unwrap();
    let numbers = &c.sip.inbound_numbers;
    assert_eq!(numbers.len(), 2);
    assert_eq!(
        numbers["1000"].to_string(),
        "6f9619ff-8b86-d011-b42d-00cf4fc964ff"
    );
    assert!(numbers.contains_key("+15551234567"));
    assert!(Config::from_toml("")
        .unwrap()
        .sip
        .inbound_numbers
        .is_empty());
    for bad in [
        "[sip_inbound_numbers]\n\"1000\" = \"not-a-uuid\"",
        "[sip_inbound_numbers]\n\"\" = \"6f9619ff-8b86-d011-b42d-00cf4fc964ff\"",
        "[sip_inbound_numbers]\n\"a b\" = \"6f9619ff-8b86-d011-b42d-00cf4fc964ff\"",
        "[sip_inbound_numbers]\n\"x@y\" = \"6f9619ff-8b86-d011-b42d-00cf4fc964ff\"",
    ] {
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("sip_inbound_numbers"), "{bad}: {e}");
    }
}
