//! What one forwarded frame costs inside str0m, against the number of m-lines of the
//! connection it is written into (issue 26: measure first).
//!
//! `cargo bench -p patchbay-conference --bench str0m_pair`
//!
//! An in-process pair of str0m peers on fake time: ours (ICE lite, stats once a second,
//! as `negotiation::new_rtc`) offers a subscribing connection with N send-only Opus
//! m-lines and a data channel (as the SDK's); the other answers as a browser would.
//! Each iteration writes one 20 ms Opus frame into the next m-line with the frame-level
//! `Writer::write` and runs our peer until it waits, as the session core's drive does
//! (a timeout first, then `poll_output` until a future timeout). Only that is timed;
//! the datagrams then reach the other peer, whose answers (RTCP, consent) come back,
//! untimed. Fake time moves 20 ms / N per frame: every m-line carries 50 frames a
//! second, as a subscriber to N publishers receives.
//!
//! Printed at the end: the cost per frame at 1, 5, 19 and 50 m-lines, and each against
//! one m-line (if str0m's cost per frame did not depend on the connection's other
//! streams, every ratio would be about 1), with the polls and timeouts per frame.

mod common;
use common::mean_ns;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The criterion group these benches are saved under.
const GROUP: &str = "str0m_forward_one_frame";

const M_LINES: [usize; 4] = [1, 5, 19, 50];

struct Pair {
    ours: Rtc,
    theirs: Rtc,
    ours_addr: SocketAddr,
    theirs_addr: SocketAddr,
    now: Instant,
    mids: Vec<Mid>,
    pt: Pt,
    next: usize,
    rtp_time: u64,
    /// Datagrams ours sent in the last timed drive, for the other peer.
    sent: Vec<Vec<u8>>,
    polls: u64,
    timeouts: u64,
    frames: u64,
}

/// Run a peer until it waits; its datagrams go into `out`. Returns its next timeout.
fn run(rtc: &mut Rtc, out: &mut Vec<Vec<u8>>) -> Instant {
    loop {
        match rtc.poll_output().expect("poll") {
            Output::Timeout(t) => return t,
            Output::Transmit(t) => out.push(t.contents.into()),
            Output::Event(_) => {}
        }
    }
}

fn deliver(rtc: &mut Rtc, now: Instant, from: SocketAddr, to: SocketAddr, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        if let Ok(r) = Receive::new(Protocol::Udp, from, to, d) {
            let _ = rtc.handle_input(Input::Receive(now, r));
        }
    }
}

impl Pair {
    fn new(m_lines: usize) -> Pair {
        let now = Instant::now();
        let ours_addr: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let theirs_addr: SocketAddr = "10.0.0.2:6000".parse().expect("addr");
        let mut ours = Rtc::builder()
            .set_ice_lite(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let mut theirs = Rtc::builder().build(now);
        ours.add_local_candidate(Candidate::host(ours_addr, "udp").expect("candidate"));
        theirs.add_local_candidate(Candidate::host(theirs_addr, "udp").expect("candidate"));
        let mut change = ours.sdp_api();
        let mids: Vec<Mid> = (0..m_lines)
            .map(|i| {
                change.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some(format!("stream-{i}")),
                    Some(format!("track-{i}")),
                    None,
                )
            })
            .collect();
        change.add_channel("__heartbeat__".into());
        let (offer, pending) = change.apply().expect("offer");
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("offer");
        let answer = theirs.sdp_api().accept_offer(offer).expect("answer");
        ours.sdp_api()
            .accept_answer(pending, answer)
            .expect("accept");
        let mut pair = Pair {
            ours,
            theirs,
            ours_addr,
            theirs_addr,
            now,
            mids,
            pt: Pt::from(0),
            next: 0,
            rtp_time: 0,
            sent: Vec::new(),
            polls: 0,
            timeouts: 0,
            frames: 0,
        };
        // ICE, DTLS and SCTP on fake time, until media can be written.
        for _ in 0..10_000 {
            pair.exchange();
            let ready = pair.ours.is_connected()
                && pair
                    .ours
                    .writer(pair.mids[0])
                    .is_some_and(|w| w.payload_params().any(|p| p.spec().codec == Codec::Opus));
            if ready {
                break;
            }
        }
        let w = pair.ours.writer(pair.mids[0]).expect("connected");
        pair.pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("opus")
            .pt();
        pair
    }

    /// Both peers run, each one's datagrams reach the other; time moves to the earlier
    /// timeout (at most 5 ms on).
    fn exchange(&mut self) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = self.ours.handle_input(Input::Timeout(self.now));
        let _ = self.theirs.handle_input(Input::Timeout(self.now));
        let ta = run(&mut self.ours, &mut a);
        let tb = run(&mut self.theirs, &mut b);
        deliver(
            &mut self.theirs,
            self.now,
            self.ours_addr,
            self.theirs_addr,
            &a,
        );
        deliver(
            &mut self.ours,
            self.now,
            self.theirs_addr,
            self.ours_addr,
            &b,
        );
        let step = ta.min(tb).saturating_duration_since(self.now);
        self.now += step.clamp(Duration::from_micros(100), Duration::from_millis(5));
    }

    /// One frame written into the next m-line, and our peer run until it waits (the
    /// timed part: what the session core does per forwarded frame).
    fn forward(&mut self, data: &Arc<[u8]>) {
        let mid = self.mids[self.next % self.mids.len()];
        self.next += 1;
        let m = self.mids.len() as u32;
        self.now += Duration::from_micros(20_000 / u64::from(m));
        if self.next.is_multiple_of(self.mids.len()) {
            self.rtp_time += 960;
        }
        let Some(w) = self.ours.writer(mid) else {
            return;
        };
        let time = MediaTime::new(self.rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        let _ = w.write(self.pt, self.now, time, data.clone());
        self.frames += 1;
        // As `drive_pc`: the timeout first, then poll; a timeout already due runs once.
        let _ = self.ours.handle_input(Input::Timeout(self.now));
        self.timeouts += 1;
        let mut ran = true;
        loop {
            self.polls += 1;
            match self.ours.poll_output() {
                Ok(Output::Timeout(t)) if t <= self.now && !ran => {
                    ran = true;
                    self.timeouts += 1;
                    let _ = self.ours.handle_input(Input::Timeout(self.now));
                }
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => self.sent.push(t.contents.into()),
                Ok(Output::Event(e)) => {
                    black_box(matches!(e, Event::Connected));
                }
            }
        }
    }

    /// The other peer hears what was sent and answers (untimed).
    fn settle(&mut self) {
        let sent = std::mem::take(&mut self.sent);
        deliver(
            &mut self.theirs,
            self.now,
            self.ours_addr,
            self.theirs_addr,
            &sent,
        );
        let _ = self.theirs.handle_input(Input::Timeout(self.now));
        let mut back = Vec::new();
        run(&mut self.theirs, &mut back);
        deliver(
            &mut self.ours,
            self.now,
            self.theirs_addr,
            self.ours_addr,
            &back,
        );
        self.sent = sent;
        self.sent.clear();
    }
}

fn bench(c: &mut Criterion) {
    let data: Arc<[u8]> = vec![0x5a; 80].into();
    let mut g = c.benchmark_group(GROUP);
    for m in M_LINES {
        let mut pair = Pair::new(m);
        g.bench_function(format!("{m}_m_lines"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    pair.forward(&data);
                    timed += t.elapsed();
                    pair.settle();
                }
                timed
            })
        });
        let f = pair.frames.max(1) as f64;
        println!(
            "{m} m-lines: {:.2} polls and {:.2} timeouts per frame ({} frames)",
            pair.polls as f64 / f,
            pair.timeouts as f64 / f,
            pair.frames
        );
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    let Some(one) = mean_ns(GROUP, "1_m_lines") else {
        return;
    };
    println!(
        "\nOne forwarded Opus frame (write + drive until it waits), by m-lines on the connection:"
    );
    for m in M_LINES {
        if let Some(ns) = mean_ns(GROUP, &format!("{m}_m_lines")) {
            println!(
                "  {m:>2} m-lines  {ns:>8.0} ns  ({:.2}x one m-line)",
                ns / one
            );
        }
    }
}
