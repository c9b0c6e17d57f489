//! A voice bot server for the stream participant tests (`tests/python/bot.py`, aiohttp,
//! written from Twilio's and Bandwidth's published message examples), run as a process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::media::now_epoch;
use crate::sipp::free_udp_ports;

/// The bot server, killed when dropped.
pub struct Bot {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Bot {
    pub fn start(dir: &Path, args: &[&str]) -> Bot {
        Bot::start_on(dir, free_udp_ports(1), args)
    }

    /// On a given port (a bot that comes back where it was).
    pub fn start_on(dir: &Path, port: u16, args: &[&str]) -> Bot {
        let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = dir.join(format!("bot-{port}-{}", now_epoch()));
        std::fs::create_dir_all(&dir).expect("bot dir");
        let mut child = Command::new(python)
            .arg(crate::workspace().join("tests/python/bot.py"))
            .arg(port.to_string())
            .arg(&dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the bot (scripts/test installs aiohttp)");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "listening", "the bot did not start");
        Bot { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/bot", self.port)
    }

    /// Stream `n`'s report (written when its stream stops) and what the bot heard.
    pub async fn report(&self, n: usize) -> (Value, Vec<i16>) {
        let json = self.dir.join(format!("stream-{n}.json"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !json.exists() {
            assert!(Instant::now() < deadline, "no report of stream {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report: Value =
            serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON");
        let pcm = std::fs::read(self.dir.join(format!("stream-{n}.pcm")))
            .expect("pcm")
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        (report, pcm)
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The report's events named `name`.
pub fn events<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["events"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["event"] == name).collect())
        .unwrap_or_default()
}

impl Bot {
    /// A stream participant for this bot (`stream`: the `mediaStream` fields but `url`):
    /// its id.
    pub async fn participant(&self, api: &crate::Api, stream: Value) -> String {
        let mut stream = stream;
        stream["url"] = Value::from(self.url());
        let body = serde_json::json!({"publishPermissions": ["AUDIO"], "mediaStream": stream});
        api.participant(body).await.0
    }
}

/// A participant that publishes audio, in `session` hearing all of it: (id, token).
pub async fn member(api: &crate::Api, session: &str) -> (String, String) {
    let (id, token) = api
        .participant(serde_json::json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(
        session,
        &id,
        Some(serde_json::json!({"sessionId": session})),
    )
    .await;
    (id, token)
}

/// A participant's entry among a media view's listeners (`GET …/sessions/{id}/media`).
pub fn listener(media: &Value, participant: &str) -> Value {
    media["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["participantId"] == participant))
        .cloned()
        .unwrap_or_default()
}
