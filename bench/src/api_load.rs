//! Control-API load generator: durable participant creation + add-to-session.
//!
//! Each of `--concurrency` workers loops: `POST …/participants`, then
//! `PUT …/sessions/{s}/participants/{p}`; every 20 participants it opens a new
//! session (sessions hold 20). Before that, the same client hammers
//! `GET /health` for the same time as a baseline: the HTTP ceiling of this
//! machine with this client, so the figures can be read as a ratio.
//! Prints a human summary and one JSON line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use reqwest::{Client, Method};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Gateway base URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    #[arg(long, default_value = "dev")]
    account: String,
    #[arg(long, default_value = "dev")]
    user: String,
    #[arg(long, default_value = "dev")]
    password: String,
    /// Concurrent workers (each one keep-alive connection)
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load per phase
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Default)]
struct Stats {
    create: Option<Histogram<u64>>,
    add: Option<Histogram<u64>>,
    health: Option<Histogram<u64>>,
    errors: u64,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

struct Worker {
    client: Client,
    args: Arc<Args>,
}

impl Worker {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(Duration, Value)> {
        let url = format!(
            "{}/v1/accounts/{}{}",
            self.args.base, self.args.account, path
        );
        let mut rb = self
            .client
            .request(method, url)
            .basic_auth(&self.args.user, Some(&self.args.password));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let t = Instant::now();
        let r = rb.send().await?;
        let status = r.status();
        let bytes = r.bytes().await?;
        let elapsed = t.elapsed();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((elapsed, v))
    }

    async fn session(&self) -> anyhow::Result<String> {
        let (_, v) = self
            .send(Method::POST, "/sessions", Some(json!({"tag": "bench"})))
            .await?;
        Ok(v["id"].as_str().context("session id")?.to_string())
    }

    async fn run_api(self, stop: Arc<AtomicBool>, stats: Arc<Mutex<Stats>>) {
        let (mut create, mut add, mut errors) = (hist(), hist(), 0u64);
        let mut session = match self.session().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("session: {e}");
                stats.lock().expect("stats").errors += 1;
                return;
            }
        };
        let mut members = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = json!({"publishPermissions": ["AUDIO"], "tag": "bench"});
            let pid = match self.send(Method::POST, "/participants", Some(body)).await {
                Ok((d, v)) => {
                    let _ = create.record(d.as_micros() as u64);
                    v["participant"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("create: {e}");
                    continue;
                }
            };
            let path = format!("/sessions/{session}/participants/{pid}");
            match self
                .send(Method::PUT, &path, Some(json!({"sessionId": session})))
                .await
            {
                Ok((d, _)) => {
                    let _ = add.record(d.as_micros() as u64);
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("add: {e}");
                }
            }
            members += 1;
            if members == 20 {
                members = 0;
                match self.session().await {
                    Ok(s) => session = s,
                    Err(_) => errors += 1,
                }
            }
        }
        let mut s = stats.lock().expect("stats");
        s.create.get_or_insert_with(hist).add(&create).ok();
        s.add.get_or_insert_with(hist).add(&add).ok();
        s.errors += errors;
    }

    async fn run_health(self, stop: Arc<AtomicBool>, stats: Arc<Mutex<Stats>>) {
        let mut h = hist();
        let url = format!("{}/health", self.args.base);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match self.client.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    let _ = h.record(t.elapsed().as_micros() as u64);
                }
                _ => stats.lock().expect("stats").errors += 1,
            }
        }
        stats
            .lock()
            .expect("stats")
            .health
            .get_or_insert_with(hist)
            .add(&h)
            .ok();
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn phase<F, Fut>(args: &Arc<Args>, stats: &Arc<Mutex<Stats>>, f: F) -> f64
where
    F: Fn(Worker, Arc<AtomicBool>, Arc<Mutex<Stats>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..args.concurrency {
        let w = Worker {
            client: Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client"),
            args: args.clone(),
        };
        tasks.push(tokio::spawn(f(w, stop.clone(), stats.clone())));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let stats = Arc::new(Mutex::new(Stats::default()));

    let health_secs = phase(&args, &stats, |w, s, st| w.run_health(s, st)).await;
    let api_secs = phase(&args, &stats, |w, s, st| w.run_api(s, st)).await;

    let s = stats.lock().expect("stats");
    let (Some(create), Some(add), Some(health)) = (&s.create, &s.add, &s.health) else {
        bail!("no samples");
    };
    let create_rate = create.len() as f64 / api_secs;
    let add_rate = add.len() as f64 / api_secs;
    let health_rate = health.len() as f64 / health_secs;
    println!(
        "concurrency {} | {:.0} s per phase | errors {}",
        args.concurrency, args.seconds, s.errors
    );
    println!(
        "baseline GET /health        {:>8.0} req/s   p50 {:>6.2} ms  p99 {:>6.2} ms",
        health_rate,
        ms(health, 0.5),
        ms(health, 0.99)
    );
    println!(
        "create participant (durable) {:>8.0} /s      p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        create_rate,
        ms(create, 0.5),
        ms(create, 0.99),
        create.max() as f64 / 1000.0
    );
    println!(
        "add to session (durable)     {:>8.0} /s      p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        add_rate,
        ms(add, 0.5),
        ms(add, 0.99),
        add.max() as f64 / 1000.0
    );
    println!(
        "durable writes/s (create+add) {:>7.0}  = {:.2}x the /health baseline request rate",
        create_rate + add_rate,
        (create_rate + add_rate) / health_rate
    );
    println!(
        "{}",
        json!({
            "concurrency": args.concurrency,
            "errors": s.errors,
            "health_rps": health_rate.round(),
            "create_per_s": create_rate.round(),
            "create_p50_ms": ms(create, 0.5), "create_p99_ms": ms(create, 0.99),
            "add_per_s": add_rate.round(),
            "add_p50_ms": ms(add, 0.5), "add_p99_ms": ms(add, 0.99),
        })
    );
    Ok(())
}
