//! Harness for end-to-end tests: runs the real `patchbay` binary on free
//! loopback ports with its own data directory, and talks to it over real HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub mod baresip;
pub mod bots;
pub mod browser;
pub mod cluster;
pub mod dialing;
pub mod hearing;
pub mod hooks;
pub mod kamailio;
pub mod media;
pub mod nat;
pub mod native;
pub mod postgres;
pub mod rawsip;
pub mod recordings;
pub mod s3;
pub mod sipp;
pub mod stunnel;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Path of the `patchbay` binary, built once per test process
/// (`PATCHBAY_BIN` overrides, e.g. to test a release build).
pub fn patchbay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("PATCHBAY_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "patchbay-gateway", "--bin", "patchbay"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building patchbay failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target"));
        target.join("debug").join("patchbay")
    })
    .clone()
}

/// A free TCP port on loopback.
/// Put `cmd`'s process in a group of its own, so that [`kill_group`] ends what it forks
/// too (Kamailio's workers, a browser's renderers), even when a test fails.
pub fn own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// End the process group `child` leads (see [`own_group`]): SIGTERM to `child` first,
/// so that it reaps what it forked (a worker that outlives its parent is never reaped
/// here, init does not), then, after at most 2 s, SIGKILL to whatever of the group is
/// left; `child` reaped.
pub fn kill_group(child: &mut Child) {
    let signal = |sig: &str, target: String| {
        let _ = Command::new("kill")
            .args([sig, "--", &target])
            .stderr(Stdio::null())
            .status();
    };
    if matches!(child.try_wait(), Ok(None)) {
        signal("-TERM", child.id().to_string());
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    signal("-KILL", format!("-{}", child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

/// A port for a server a test starts (free for TCP and UDP now; outside the kernel's
/// ephemeral range, so no client socket takes it before the server binds it).
pub fn free_port() -> u16 {
    sipp::free_udp_ports(1)
}

/// A running gateway.
pub struct Gateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub sip_port: u16,
    pub webrtc_port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where the data directory is, when not in the scratch directory.
    data: Option<PathBuf>,
    restarts: u32,
    port_retries: u32,
    /// The HTTP listener speaks TLS (the test CA's `server.pem`).
    https: bool,
}

impl Gateway {
    /// Start with the defaults (account `dev`/`dev`/`dev`).
    pub async fn start() -> Gateway {
        Gateway::start_with(&[], &[]).await
    }

    /// Start with extra CLI flags and environment variables.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::start_in(None, args, env, false).await
    }

    /// Start with its data directory at `data` (e.g. on a small tmpfs).
    pub async fn start_with_data(data: &Path) -> Gateway {
        Gateway::start_in(Some(data.to_path_buf()), &[], &[], false).await
    }

    async fn start_in(
        data: Option<PathBuf>,
        args: &[&str],
        env: &[(&str, &str)],
        https: bool,
    ) -> Gateway {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The suite's PostgreSQL pass: every gateway on a database of its own (kept across
        // its restarts), unless the test picks its store (a data directory of its own is
        // a test of the embedded store).
        let on_postgres = std::env::var("PATCHBAY_TEST_STORE").as_deref() == Ok("postgres");
        if on_postgres && data.is_none() && !env.iter().any(|(k, _)| k == "PATCHBAY_DATABASE_URL") {
            env.push(("PATCHBAY_DATABASE_URL".into(), postgres::database()));
        }
        // A store in PostgreSQL needs the token secret from the configuration: the same
        // for every node of a test cluster.
        let has = |k: &str| env.iter().any(|(key, _)| key == k);
        if has("PATCHBAY_DATABASE_URL")
            && !has("PATCHBAY_TOKEN_SECRET")
            && !args.contains(&"--token-secret")
        {
            env.push((
                "PATCHBAY_TOKEN_SECRET".into(),
                "test-cluster-token-secret-0123456789".into(),
            ));
        }
        let mut g = Gateway {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            sip_port: sipp::free_udp_ports(1),
            webrtc_port: sipp::free_udp_ports(1),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            data,
            restarts: 0,
            port_retries: 0,
            https,
        };
        g.spawn().await;
        g
    }

    /// Start as on a cloud VM behind 1:1 NAT: bound to its "private" address
    /// (127.0.0.1), advertising `public_ip` (see [`nat::Nat`] for the NAT itself).
    pub async fn start_behind_nat(public_ip: &str, args: &[&str]) -> Gateway {
        let mut all = vec!["--public-ip", public_ip];
        all.extend_from_slice(args);
        Gateway::start_with(&all, &[]).await
    }

    /// Start with HTTPS and WSS on the HTTP listener (`tests/data/tls/server.pem`, for
    /// `127.0.0.1`, signed by the test CA `ca.pem` that [`Gateway::client`] trusts).
    pub async fn start_https(args: &[&str]) -> Gateway {
        Gateway::start_https_with(args, &[]).await
    }

    /// Like [`Gateway::start_https`], with environment variables too.
    pub async fn start_https_with(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let tls = workspace().join("tests/data/tls");
        let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut all = vec!["--http-tls-cert", &cert, "--http-tls-key", &key];
        all.extend_from_slice(args);
        Gateway::start_in(None, &all, env, true).await
    }

    /// An HTTP client for this gateway (trusting the test CA when it speaks HTTPS).
    pub fn client(&self) -> reqwest::Client {
        if !self.https {
            return reqwest::Client::new();
        }
        let pem = std::fs::read(workspace().join("tests/data/tls/ca.pem")).expect("test CA");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("test CA PEM"))
            .build()
            .expect("HTTPS client")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// The scratch directory of this gateway (config files, logs).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The device signaling base (`ws://` or `wss://`), as the SDK's `websocketUrl`.
    pub fn ws_base(&self) -> String {
        let scheme = if self.https { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Whether the HTTP listener speaks TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("patchbay-{}.log", self.restarts))
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(patchbay_bin());
        cmd.arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--sip-listen")
            .arg(format!("127.0.0.1:{}", self.sip_port))
            .arg("--webrtc-listen")
            .arg(format!("127.0.0.1:{}", self.webrtc_port))
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // The suite's HTTP receivers listen on loopback, which webhooks may not reach
            // by default; a test's own env wins.
            .env("PATCHBAY_WEBHOOK_ALLOW", "127.0.0.1")
            // sipp trunks play scripts and cannot answer OPTIONS pings in the middle of
            // one; the trunk-health test turns them on.
            .env("PATCHBAY_SIP_TRUNK_PING_INTERVAL", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn patchbay"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = self.client();
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.base())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // Another test took one of our ports between probing and binding: new ports.
                if self.log().contains("Address already in use") && self.port_retries < 5 {
                    self.port_retries += 1;
                    self.port = free_port();
                    self.sip_port = sipp::free_udp_ports(1);
                    self.webrtc_port = sipp::free_udp_ports(1);
                    self.child = None;
                    return Box::pin(self.spawn()).await;
                }
                panic!("patchbay exited during startup ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "patchbay did not become healthy:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The current process's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log without the lines of the tests' own `/metrics` polling (a wait of 10 s
    /// writes 500 of them, and a failure's report would show nothing else).
    pub fn log_without_polls(&self) -> String {
        self.log()
            .lines()
            .filter(|l| !l.contains("route=/metrics"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Set (or change) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Start again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill9();
        self.restarts += 1;
        self.spawn().await;
    }

    /// The status of `GET /ready` (502 when nothing answered).
    pub async fn ready(&self) -> reqwest::StatusCode {
        self.client()
            .get(format!("{}/ready", self.base()))
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
    }

    /// Current value of a metric line starting with `name` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_via(&self.client(), name).await
    }

    /// Like [`Gateway::metric`], asking through `client` (e.g. one bound to another
    /// loopback address while 127.0.0.1 is at its connection cap).
    pub async fn metric_via(&self, client: &reqwest::Client, name: &str) -> f64 {
        let text = client
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Wait until browsers' media frames received reach `frames` (at most `limit`): a
    /// browser publishes. Panics with `what` and the log otherwise.
    pub async fn wait_browser_media(&self, frames: f64, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while self.metric("patchbay_webrtc_media_in_total").await < frames {
            assert!(
                Instant::now() < deadline,
                "{what}:\n{}",
                self.log_without_polls()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until `metric` reaches `value` (at most 10 s).
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name).await;
            if v == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {v}, wanted {value}:\n{}",
                self.log_without_polls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An API client with the default `dev` credentials.
    pub fn api(&self) -> Api {
        let mut api = Api::new(&self.base(), "dev", "dev", "dev");
        api.client = self.client();
        api
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal client of the REST API for assertions on raw status and JSON.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
    pub account: String,
    user: String,
    password: String,
}

/// A response: status and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

impl Api {
    pub fn new(base: &str, account: &str, user: &str, password: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: base.to_string(),
            account: account.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// Same server and credentials, another account id in paths.
    pub fn with_account(&self, account: &str) -> Api {
        let mut a = self.clone();
        a.account = account.to_string();
        a
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/accounts/{}{}", self.base, self.account, path)
    }

    /// Send a request to `/v1/accounts/{account}{path}` with an optional raw body;
    /// `None` when no response arrived (connection refused or reset).
    pub async fn try_raw(&self, method: Method, path: &str, body: Option<&str>) -> Option<Resp> {
        let mut rb = self
            .client
            .request(method, self.url(path))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.ok()?;
        let status = r.status();
        let text = r.text().await.ok()?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Some(Resp { status, body, text })
    }

    /// GET `/v1/accounts/{account}{path}` as bytes: status, content type, body.
    pub async fn bytes(&self, path: &str) -> (StatusCode, String, Vec<u8>) {
        let r = self
            .client
            .get(self.url(path))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .expect("no response from patchbay");
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.bytes().await.expect("body").to_vec();
        (status, content_type, body)
    }

    pub async fn raw(&self, method: Method, path: &str, body: Option<&str>) -> Resp {
        self.try_raw(method, path, body)
            .await
            .expect("no response from patchbay")
    }

    pub async fn try_call(&self, method: Method, path: &str, body: Option<Value>) -> Option<Resp> {
        let text = body.map(|b| b.to_string());
        self.try_raw(method, path, text.as_deref()).await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.try_call(method, path, body)
            .await
            .expect("no response from patchbay")
    }

    /// Create a participant; returns (id, token). Panics unless 200.
    pub async fn participant(&self, body: Value) -> (String, String) {
        let r = self.call(Method::POST, "/participants", Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (
            r.body["participant"]["id"]
                .as_str()
                .expect("id")
                .to_string(),
            r.body["token"].as_str().expect("token").to_string(),
        )
    }

    /// Create a session; returns its id. Panics unless 200.
    pub async fn session(&self, tag: Option<&str>) -> String {
        let body = tag.map(|t| serde_json::json!({ "tag": t }));
        let r = self.call(Method::POST, "/sessions", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Replace a member's subscriptions; panics unless 204.
    pub async fn subscribe(&self, session: &str, participant: &str, subs: Value) {
        let r = self
            .call(
                Method::PUT,
                &format!("/sessions/{session}/participants/{participant}/subscriptions"),
                Some(subs),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }

    /// Add to a session; panics unless 204.
    pub async fn add(&self, session: &str, participant: &str, subs: Option<Value>) {
        let r = self
            .call(
                Method::PUT,
                &format!("/sessions/{session}/participants/{participant}"),
                subs,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }

    /// Remove from a session; panics unless 204.
    pub async fn remove(&self, session: &str, participant: &str) {
        let r = self
            .call(
                Method::DELETE,
                &format!("/sessions/{session}/participants/{participant}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }

    /// A new session with one new participant that may publish audio, subscribed to
    /// the whole session: (session, participant, token).
    pub async fn audio_member(&self) -> (String, String, String) {
        let s = self.session(None).await;
        let (p, token) = self
            .participant(serde_json::json!({"publishPermissions": ["AUDIO"]}))
            .await;
        self.add(&s, &p, Some(serde_json::json!({"sessionId": s})))
            .await;
        (s, p, token)
    }

    /// A new session with one new participant (`body`) in it: (session, participant, token).
    pub async fn member(&self, body: Value) -> (String, String, String) {
        let s = self.session(None).await;
        let (p, token) = self.participant(body).await;
        self.add(&s, &p, None).await;
        (s, p, token)
    }
}

/// Assert an error body of the `{error, requestId}` shape with the given status.
pub fn assert_error(r: &Resp, status: StatusCode, contains: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let error = r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {}", r.text));
    assert!(
        error.contains(contains),
        "error `{error}` does not mention `{contains}`"
    );
    let rid = r.body["requestId"].as_str().expect("requestId");
    uuid::Uuid::parse_str(rid).expect("requestId is a UUID");
}

/// A WebSocket client of the device signaling endpoint.
pub mod ws {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    use super::Gateway;

    pub type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Open `/v3/?token=…&uniqueId=…` as the browser SDK does.
    pub async fn connect(g: &Gateway, token: &str, unique_id: &str) -> Socket {
        open(
            g,
            &format!("/v3/?token={token}&client=browser&sdkVersion=test&uniqueId={unique_id}"),
        )
        .await
    }

    /// Open `/v2/?token=…&sdkVersion=…&uniqueId=…` as the browser SDK's v2 code does.
    pub async fn connect_v2(g: &Gateway, token: &str, unique_id: &str) -> Socket {
        open(
            g,
            &format!("/v2/?token={token}&sdkVersion=test&uniqueId={unique_id}"),
        )
        .await
    }

    /// Open `path_and_query` on `g` (`ws://`, or `wss://` trusting the test CA).
    pub async fn open(g: &Gateway, path_and_query: &str) -> Socket {
        let url = format!("{}{path_and_query}", g.ws_base());
        let connector = g.is_https().then(|| {
            let ca = super::workspace().join("tests/data/tls/ca.pem");
            tokio_tungstenite::Connector::Rustls(
                patchbay_tls::client_config(Some(&ca)).expect("test CA"),
            )
        });
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
                .await
                .expect("websocket connect");
        socket
    }

    /// The next message within 5 s: `Ok(text)` or `Err((close code, reason))`.
    pub async fn next(socket: &mut Socket) -> Result<String, (u16, String)> {
        next_within(socket, Duration::from_secs(5)).await
    }

    /// The next message within `limit`: `Ok(text)` or `Err((close code, reason))`.
    pub async fn next_within(
        socket: &mut Socket,
        limit: Duration,
    ) -> Result<String, (u16, String)> {
        loop {
            let msg = tokio::time::timeout(limit, socket.next())
                .await
                .expect("no message in time");
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Close(Some(f)))) => {
                    return Err((f.code.into(), f.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) | None => return Err((1005, String::new())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err((1006, e.to_string())),
            }
        }
    }

    /// Send a JSON-RPC request and return the reply.
    pub async fn rpc(socket: &mut Socket, id: Value, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
        socket
            .send(Message::Text(req.to_string().into()))
            .await
            .expect("send");
        let text = next(socket).await.expect("reply");
        serde_json::from_str(&text).expect("JSON reply")
    }

    /// The token is accepted: the socket stays open and `setMediaPreferences` is answered.
    pub async fn assert_token_accepted(g: &Gateway, token: &str) {
        let mut s = connect(g, token, &uuid::Uuid::new_v4().to_string()).await;
        let reply = rpc(
            &mut s,
            json!(1),
            "setMediaPreferences",
            json!({"protocol": "WEBRTC"}),
        )
        .await;
        assert_eq!(reply, json!({"jsonrpc": "2.0", "result": {}, "id": 1}));
    }
}
