//! A real HTTP receiver for webhook tests: records every POST (path, headers, JSON
//! body) and answers as told — 200, another status, a redirect to itself, a hang —
//! per path; it can also go down (connection refused) and come back on its port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How to answer requests to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// 307 to the same URL, forever.
    Redirect,
    /// Never answer.
    Hang,
    /// Answer 200 (with the path's JSON body, if any) after this many milliseconds.
    Late(u64),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub raw: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    hits: Vec<Hit>,
    answers: HashMap<String, Answer>,
    /// JSON bodies answered with 200 instead of an empty one, per path.
    bodies: HashMap<String, String>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut r = Receiver {
            port,
            shared: Arc::default(),
            task: None,
        };
        r.serve(listener);
        r
    }

    /// The URL of `path` (e.g. `/cb/alice`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer requests to `path` this way from now on (default: 200).
    pub fn answer(&self, path: &str, a: Answer) {
        self.lock().answers.insert(path.to_string(), a);
    }

    /// Answer requests to `path` with 200 and this JSON body.
    pub fn answer_json(&self, path: &str, body: &Value) {
        self.lock()
            .bodies
            .insert(path.to_string(), body.to_string());
    }

    /// Stop listening: connections are refused until [`Self::up`].
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn up(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("re-bind {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.lock().hits.clone()
    }

    /// The bodies that got a 2xx at `path`, in order.
    pub fn delivered(&self, path: &str) -> Vec<Value> {
        self.lock()
            .hits
            .iter()
            .filter(|h| h.path == path && (200..300).contains(&h.status))
            .map(|h| h.body.clone())
            .collect()
    }

    /// Wait until `f(hits)` holds (panics after `limit`).
    pub async fn wait_for(&self, limit: Duration, what: &str, f: impl Fn(&[Hit]) -> bool) {
        let end = Instant::now() + limit;
        loop {
            if f(&self.hits()) {
                return;
            }
            if Instant::now() > end {
                panic!(
                    "{what}: not within {limit:?}; got {:#?}",
                    self.hits()
                        .iter()
                        .map(|h| (&h.path, h.status, &h.body))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = self.shared.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, shared.clone()));
            }
        }));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// Serve HTTP/1.1 requests on one connection (keep-alive).
async fn connection(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut buf = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let (answer, json_body) = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            (
                s.answers.get(&path).copied().unwrap_or(Answer::Status(200)),
                s.bodies.get(&path).cloned(),
            )
        };
        let status = match answer {
            Answer::Status(s) => s,
            Answer::Redirect => 307,
            Answer::Hang => 0,
            Answer::Late(_) => 200,
        };
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hits
            .push(Hit {
                path: path.clone(),
                headers,
                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                raw,
                status,
                at: Instant::now(),
            });
        if let Answer::Late(ms) = answer {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let response = match answer {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Answer::Redirect => format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {path}\r\ncontent-length: 0\r\n\r\n"
            ),
            Answer::Status(_) | Answer::Late(_) => match &json_body {
                Some(b) if status == 200 => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                    b.len()
                ),
                _ => format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n"),
            },
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
