//! What the load generators share: the gateway's REST API, its `/metrics`, a
//! process's CPU time.

use std::collections::HashMap;

use anyhow::{bail, Context};
use reqwest::{Client, Method};
use serde_json::{json, Value};

/// Where the gateway is and how to log in.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Gateway base URL (REST and signaling)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    #[arg(long, default_value = "dev")]
    pub account: String,
    #[arg(long, default_value = "dev")]
    pub user: String,
    #[arg(long, default_value = "dev")]
    pub password: String,
}

/// The control API of one account.
#[derive(Clone)]
pub struct Api {
    pub http: Client,
    base: String,
    user: String,
    password: String,
}

impl Api {
    pub fn new(t: &Target) -> Api {
        Api {
            // The gateway closes a keep-alive connection idle for `http_header_timeout`
            // (10 s); a pooled connection idle as long as a 10 s measurement would race
            // that close and fail the run.
            http: Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            base: format!("{}/v1/accounts/{}", t.base, t.account),
            user: t.user.clone(),
            password: t.password.clone(),
        }
    }

    /// One request (`body` null: none); the JSON answer, or an error naming the status.
    pub async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        let req = if body.is_null() { req } else { req.json(&body) };
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A new session's id.
    pub async fn session(&self) -> anyhow::Result<String> {
        let s = self
            .call(Method::POST, "/sessions", json!({"tag": "bench"}))
            .await?;
        Ok(s["id"].as_str().context("session id")?.to_string())
    }

    /// A participant created with `body`, added to `session` with `subscriptions` (null:
    /// none): (id, token).
    pub async fn member(
        &self,
        session: &str,
        body: Value,
        subscriptions: Value,
    ) -> anyhow::Result<(String, String)> {
        let r = self.call(Method::POST, "/participants", body).await?;
        let p = r["participant"]["id"]
            .as_str()
            .context("participant id")?
            .to_string();
        self.call(
            Method::PUT,
            &format!("/sessions/{session}/participants/{p}"),
            subscriptions,
        )
        .await?;
        Ok((p, r["token"].as_str().context("token")?.to_string()))
    }

    /// `n` participants created with `body`, in new sessions of `per_session`, each
    /// subscribed to its whole session when `subscribe_all` (else no subscriptions).
    pub async fn members(
        &self,
        n: usize,
        per_session: usize,
        body: Value,
        subscribe_all: bool,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(n);
        let mut session = String::new();
        for i in 0..n {
            if i % per_session.max(1) == 0 {
                session = self.session().await?;
            }
            let subs = if subscribe_all {
                json!({"sessionId": session})
            } else {
                Value::Null
            };
            out.push(self.member(&session, body.clone(), subs).await?);
        }
        Ok(out)
    }
}

/// Every sample line of `/metrics` at `url`: name with labels → value.
pub async fn metrics(http: &Client, url: &str) -> anyhow::Result<HashMap<String, f64>> {
    let text = http.get(url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// CPU seconds (user + system) a process has used.
pub fn proc_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .context("stat fields")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}
