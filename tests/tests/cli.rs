//! The binary's configuration surface: --help, refusals with one-line errors naming the key.

use std::process::Command;

use patchbay_tests::{free_port, patchbay_bin, Gateway};

/// Run patchbay expecting it to refuse to start; returns its stderr.
fn refuses(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(patchbay_bin());
    if !args.contains(&"--data-dir") {
        cmd.args(["--data-dir", dir.path().join("d").to_str().unwrap()]);
    }
    let out = cmd
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run patchbay");
    assert!(
        !out.status.success(),
        "patchbay started with {args:?} {env:?}"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn help_documents_every_key() {
    let out = Command::new(patchbay_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "PATCHBAY_CONFIG",
        "http_listen",
        "PATCHBAY_HTTP_LISTEN",
        "data_dir",
        "PATCHBAY_DATA_DIR",
        "token_secret",
        "PATCHBAY_TOKEN_SECRET",
        "session_ttl",
        "PATCHBAY_SESSION_TTL",
        "token_ttl",
        "log_format",
        "PATCHBAY_LOG",
        "accounts",
        "PATCHBAY_ACCOUNT_ID",
        "PATCHBAY_API_USER",
        "PATCHBAY_API_PASSWORD",
        "sip_listen",
        "PATCHBAY_SIP_LISTEN",
        "media_ip",
        "PATCHBAY_MEDIA_IP",
        "rtp_ports",
        "PATCHBAY_RTP_PORTS",
        "rtp_timeout",
        "PATCHBAY_RTP_TIMEOUT",
        "sip_stream_alias",
        "PATCHBAY_SIP_STREAM_ALIAS",
    ] {
        assert!(help.contains(key), "--help does not mention {key}:\n{help}");
    }
}

#[test]
fn default_credentials_are_refused_off_loopback() {
    let port = free_port();
    let err = refuses(&["--http-listen", &format!("0.0.0.0:{port}")], &[]);
    assert!(err.contains("accounts") && err.contains("dev/dev"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "http_listen = \"127.0.0.1:1\"\nsesion_ttl = \"1h\"\n",
    )
    .unwrap();
    let err = refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("sesion_ttl"), "{err}");

    let err = refuses(&[], &[("PATCHBAY_HTTP_LISTEN", "nowhere")]);
    assert!(err.contains("http_listen"), "{err}");
    let err = refuses(&[], &[("PATCHBAY_FROBNICATE", "1")]);
    assert!(err.contains("PATCHBAY_FROBNICATE"), "{err}");
    let err = refuses(&["--session-ttl", "forever"], &[]);
    assert!(err.contains("session_ttl"), "{err}");
    let err = refuses(&["--config", "/nonexistent/patchbay.toml"], &[]);
    assert!(err.contains("/nonexistent/patchbay.toml"), "{err}");
    // The inbound rule's URL goes through the webhook egress policy.
    let err = refuses(&["--sip-inbound-url", "http://127.0.0.1:9/inbound"], &[]);
    assert!(
        err.contains("sip_inbound_url") && err.contains("webhook_allow"),
        "{err}"
    );
}

#[test]
fn unusable_data_dir_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let port = free_port();
    let err = refuses(
        &[
            "--http-listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            file.join("sub").to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("data_dir"), "{err}");
}

#[tokio::test]
async fn address_in_use_names_the_key() {
    let g = Gateway::start().await;
    let err = refuses(&["--http-listen", &format!("127.0.0.1:{}", g.port)], &[]);
    assert!(err.contains("http_listen"), "{err}");
}

#[tokio::test]
async fn env_account_replaces_the_default() {
    let g = Gateway::start_with(
        &[],
        &[
            ("PATCHBAY_ACCOUNT_ID", "acme"),
            ("PATCHBAY_API_USER", "ops"),
            ("PATCHBAY_API_PASSWORD", "pw-123"),
        ],
    )
    .await;
    let acme = patchbay_tests::Api::new(&g.base(), "acme", "ops", "pw-123");
    acme.session(None).await;
    let r = g.api().call(reqwest::Method::POST, "/sessions", None).await;
    assert_eq!(r.status, reqwest::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_node_is_its_data_directory_not_its_port() {
    let mut g = Gateway::start_with(&["--operator", "ops:ops-secret"], &[]).await;
    let node = |g: &Gateway| {
        let (client, url) = (g.client(), format!("{}/v1/cluster", g.base()));
        async move {
            let r = client
                .get(url)
                .basic_auth("ops", Some("ops-secret"))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["nodeId"].as_str().unwrap().to_string()
        }
    };
    let first = node(&g).await;
    let kept = std::fs::read_to_string(g.data_dir().join("node-id")).unwrap();
    assert_eq!(kept.trim(), first);
    // Restarted on other ports (as when one was taken), it is the same node.
    g.kill9();
    g.port = free_port();
    g.restart().await;
    assert_eq!(node(&g).await, first);
    // A configured node_id wins.
    let named =
        Gateway::start_with(&["--operator", "ops:ops-secret", "--node-id", "n-7"], &[]).await;
    assert_eq!(node(&named).await, "n-7");
}
