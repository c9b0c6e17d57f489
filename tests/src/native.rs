//! An independent v3 device client (aiortc, `tests/python/v3_client.py`) that behaves
//! like Bandwidth's Android and iOS SDKs (it never answers `PING`), run as a process
//! whose one-line-per-second JSON status the tests read.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{workspace, Gateway};

/// The client, its stdout lines collected on a thread.
pub struct NativeClient {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    /// The client's stderr and the gateway's log, shown when a wait fails.
    errors: PathBuf,
    gateway_log: PathBuf,
}

impl NativeClient {
    pub fn start(g: &Gateway, token: &str, unique_id: &str, seconds: u32) -> NativeClient {
        let args = [
            g.ws_base(),
            token.to_string(),
            unique_id.to_string(),
            "bot".to_string(),
            seconds.to_string(),
        ];
        NativeClient::script(g, "v3_client.py", &args, unique_id)
    }

    /// Any script of `tests/python` that prints one JSON object per line (`name` names
    /// its stderr file in the gateway's scratch directory).
    pub fn script(g: &Gateway, script: &str, args: &[String], name: &str) -> NativeClient {
        let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
        let errors_path = g.scratch().join(format!("{name}.err"));
        let errors = std::fs::File::create(&errors_path).expect("stderr file");
        let mut child = crate::own_group(&mut Command::new(python))
            .arg(workspace().join("tests/python").join(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(errors)
            .spawn()
            .expect("run the Python peer (scripts/test installs aiortc and pylibsrtp)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        NativeClient {
            child,
            lines,
            errors: errors_path,
            gateway_log: g.log_path(),
        }
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait (bounded) until a status line satisfies `f`.
    pub async fn wait_until(&self, limit: Duration, what: &str, f: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + limit;
        while !self.lines().iter().any(&f) {
            if Instant::now() >= deadline {
                // The client's account of its tasks and threads, on its stderr.
                self.signal("USR1");
                std::thread::sleep(Duration::from_millis(500));
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}\nthe client's stderr:\n{}\nthe gateway's log:\n{}",
                self.lines(),
                std::fs::read_to_string(&self.errors).unwrap_or_default(),
                std::fs::read_to_string(&self.gateway_log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("route=/metrics"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.signal("CONT");
        crate::kill_group(&mut self.child);
    }
}
