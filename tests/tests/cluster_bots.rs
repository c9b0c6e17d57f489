//! A voice bot in a cluster: only the node that runs the session's media opens the bot's
//! stream, whichever node was asked; when that node dies (`kill -9`), the node that
//! takes the session over opens it again.

use std::time::{Duration, Instant};

use patchbay_tests::bots::{events, member, Bot};
use patchbay_tests::cluster::{live_nodes, nodes};
use patchbay_tests::media::{tone_shares, Law};
use patchbay_tests::postgres;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::Gateway;
use serde_json::json;

/// `patchbay_streams_connected` of each node still running.
async fn connected(g: &[Gateway], alive: &[usize]) -> Vec<f64> {
    let mut out = Vec::new();
    for &i in alive {
        out.push(g[i].metric("patchbay_streams_connected").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_that_runs_the_media_opens_the_bots_stream_and_its_successor_opens_it_again() {
    let url = postgres::database();
    let mut g = nodes(&url, "3s").await;
    let (api1, api2) = (g[0].api(), g[1].api());
    let dir = g[0].scratch().to_path_buf();
    let bot = Bot::start(&dir, &["--say", "880:60.0:long"]);
    let s = api1.session(None).await;
    let (_, first_token) = member(&api1, &s).await;
    let (_, second_token) = member(&api1, &s).await;

    // The first caller reaches n1: n1 runs the session's media.
    let first = SippCall::tone("first", &dir, 440, Law::Ulaw, 60000).token(&first_token);
    let first_call = first.spawn(&g[0], &dir);
    g[0].wait_metric("patchbay_sip_calls_active", 1.0).await;

    // The bot is created and added through n2; n1 opens its stream, nobody else does.
    let bot_id = bot.participant(&api2, json!({"protocol": "twilio"})).await;
    api2.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g[0].wait_metric("patchbay_streams_connected", 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(connected(&g, &[0, 1, 2]).await, [1.0, 0.0, 0.0]);

    // n1 dies: the bot's socket drops with it (its first stream ends).
    g[0].kill9();
    drop(first_call);
    let killed = Instant::now();
    let (report, heard) = bot.report(1).await;
    let starts = events(&report, "start");
    assert_eq!(starts.len(), 1, "{report}");
    let heard_s = heard.len() as f64 / 8000.0;
    assert!(heard_s > 2.0, "the bot heard {heard_s:.2} s from n1");
    while live_nodes(&g[1]).await.iter().any(|n| n == "n1") {
        assert!(killed.elapsed() < Duration::from_secs(20), "n1 still live");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The session's lease runs out up to a lease (3 s) after n1's last heartbeat; then
    // the second caller reaches n2, which takes the session over and opens the bot's
    // stream again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let dir2 = g[1].scratch().to_path_buf();
    let second = SippCall::tone("second", &dir2, 660, Law::Ulaw, 60000).token(&second_token);
    let second_call = second.spawn(&g[1], &dir2);
    g[1].wait_metric("patchbay_sip_calls_active", 1.0).await;
    g[1].wait_metric("patchbay_streams_connected", 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(connected(&g, &[1, 2]).await, [1.0, 0.0]);

    // Removed through n3: n2 ends the stream with `stop`.
    g[2].api().remove(&s, &bot_id).await;
    let (report, heard) = bot.report(2).await;
    let names: Vec<&str> = report["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.first(), Some(&"connected"), "{report}");
    assert_eq!(names.last(), Some(&"stop"), "{report}");
    assert_eq!(
        events(&report, "start")[0]["start"]["callSid"],
        starts[0]["start"]["callSid"],
        "the same participant's stream"
    );
    // What it heard from n2 is the second caller: the median share of 660 Hz over the
    // 100 ms windows that carry sound (a long coherent sum would be broken by any
    // concealed packet's phase jump).
    let mut shares: Vec<f64> = heard
        .chunks_exact(800)
        .filter(|w| w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 800.0 > 300.0 * 300.0)
        .map(|w| tone_shares(w, &[440.0, 660.0, 880.0], 8000.0)[&660])
        .collect();
    shares.sort_by(f64::total_cmp);
    assert!(
        shares.len() >= 10,
        "the bot heard {} windows of sound from n2",
        shares.len()
    );
    let median = shares[shares.len() / 2];
    assert!(
        median > 0.6,
        "660 Hz is {median:.2} of what the bot heard from n2"
    );
    g[1].wait_metric("patchbay_streams_connected", 0.0).await;
    drop(second_call);
}
