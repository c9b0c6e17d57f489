//! The HTTP listener under a slowloris attack from one address: connections over the
//! per-source cap are refused at once, the admitted ones are closed by the header
//! timeout, a trickled body gets 408, and a client from another address is served
//! all along.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use patchbay_tests::Gateway;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const BYSTANDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

async fn connect_from(source: IpAddr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket
        .connect(SocketAddr::new(ATTACKER, port))
        .await
        .unwrap()
}

/// Send a request's headers one byte every 300 ms, never finishing; returns how long
/// the server kept the connection open.
async fn slowloris(port: u16) -> Duration {
    let start = Instant::now();
    let mut s = connect_from(ATTACKER, port).await;
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    let mut buf = [0u8; 256];
    for byte in b"X-Slow: ".iter().cycle() {
        tokio::select! {
            r = s.read(&mut buf) => {
                // Closed (0), reset, or an error response then closed: the server gave up.
                if matches!(r, Ok(0) | Err(_)) {
                    return start.elapsed();
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if s.write_all(&[*byte]).await.is_err() {
                    return start.elapsed();
                }
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_other_clients_are_served() {
    let g = Gateway::start_with(
        &[],
        &[
            ("PATCHBAY_HTTP_HEADER_TIMEOUT", "2s"),
            ("PATCHBAY_HTTP_BODY_TIMEOUT", "2s"),
            ("PATCHBAY_HTTP_MAX_PER_SOURCE", "100"),
        ],
    )
    .await;
    let port = g.port;
    // 150 slow connections from one address: 100 admitted, 50 over the cap.
    let attack: Vec<_> = (0..150).map(|_| tokio::spawn(slowloris(port))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Meanwhile another client is served normally.
    let bystander = reqwest::Client::builder()
        .local_address(BYSTANDER)
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = bystander
            .post(format!("{}/v1/accounts/dev/sessions", g.base()))
            .basic_auth("dev", Some("dev"))
            .json(&serde_json::json!({"tag": "during the attack"}))
            .send()
            .await
            .expect("bystander request");
        assert_eq!(r.status(), 200);
    }

    let mut held = Vec::new();
    for a in attack {
        held.push(a.await.unwrap());
    }
    held.sort();
    // The refused ones were closed at once, the others after the 2 s header timeout:
    // none stayed open.
    let quick = held
        .iter()
        .filter(|d| **d < Duration::from_millis(1500))
        .count();
    assert!(
        quick >= 50,
        "refused connections: {quick} closed early ({held:?})"
    );
    assert!(
        held.iter().all(|d| *d < Duration::from_secs(10)),
        "a slow connection stayed open: {held:?}"
    );
    assert!(g.metric("patchbay_http_connections_refused_total").await >= 50.0);
    assert!(g.metric("patchbay_http_header_timeouts_total").await >= 95.0);

    // A body trickled after complete headers: 408 with the JSON error body.
    let mut s = connect_from(BYSTANDER, port).await;
    s.write_all(
        b"POST /v1/accounts/dev/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"ta",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to a trickled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not arrive"),
        "{body}"
    );
    assert!(body["requestId"].is_string(), "{body}");
    assert_eq!(g.metric("patchbay_http_body_timeouts_total").await, 1.0);

    // The attacker's address is served again once its connections are gone.
    let r = reqwest::get(format!("{}/health", g.base())).await.unwrap();
    assert_eq!(r.status(), 200);
    // Only the connection asking for /metrics is left (idle ones close after 2 s).
    g.wait_metric("patchbay_http_connections", 1.0).await;
}

/// A WebSocket keeps its connection slot for as long as it lives (its HTTP connection
/// ended with the upgrade): devices count toward the caps like any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_toward_the_connection_caps() {
    use patchbay_tests::ws::{connect, rpc};
    let g = Gateway::start_with(&[], &[("PATCHBAY_HTTP_MAX_PER_SOURCE", "3")]).await;
    let bystander = reqwest::Client::builder()
        .local_address(BYSTANDER)
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: String, body: serde_json::Value| {
        let request = bystander
            .request(method, format!("{}/v1/accounts/dev{path}", g.base()))
            .basic_auth("dev", Some("dev"))
            .json(&body);
        async move {
            let r = request.send().await.expect("bystander request");
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let s = call(
        reqwest::Method::POST,
        "/sessions".into(),
        serde_json::json!({}),
    )
    .await;
    let s = s["id"].as_str().unwrap().to_string();
    let mut devices = Vec::new();
    for i in 0..3 {
        let p = call(
            reqwest::Method::POST,
            "/participants".into(),
            serde_json::json!({}),
        )
        .await;
        let id = p["participant"]["id"].as_str().unwrap();
        call(
            reqwest::Method::PUT,
            format!("/sessions/{s}/participants/{id}"),
            serde_json::json!({"sessionId": s}),
        )
        .await;
        let mut ws = connect(&g, p["token"].as_str().unwrap(), &format!("dev-{i}")).await;
        rpc(&mut ws, serde_json::json!(1), "ping", serde_json::json!({})).await;
        devices.push(ws);
    }
    // Three devices from 127.0.0.1 hold its three slots: a fourth connection is refused.
    let refused = reqwest::Client::new()
        .get(format!("{}/health", g.base()))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a fourth connection was served: {refused:?}"
    );
    // One device goes: there is room again.
    drop(devices.pop());
    let mut served = false;
    for _ in 0..50 {
        if let Ok(r) = reqwest::Client::new()
            .get(format!("{}/health", g.base()))
            .send()
            .await
        {
            served = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no room after a device left");
    let refused_total = g
        .metric_via(&bystander, "patchbay_http_connections_refused_total")
        .await;
    assert!(refused_total >= 1.0, "{refused_total}");
}
