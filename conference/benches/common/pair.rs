//! An in-process pair of str0m peers on fake time, for the str0m bench and the test of
//! its two send paths (`conference/tests/write_now.rs` includes this file).
//!
//! Ours (ICE lite, stats once a second, as `negotiation::new_rtc`) offers a subscribing
//! connection with N send-only m-lines of one kind and a data channel (as the SDK's);
//! the other answers as a browser would. A frame is written into the next m-line either
//! as the session core did before issue 26 (`Writer::write`, then a timeout and
//! `poll_output` until a future timeout) or as it does now (`Writer::write_now`, the
//! drive only when it queued).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt, WriteNow};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// How a frame is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `Writer::write` and a drive.
    Queued,
    /// `Writer::write_now`, a drive only if it queued.
    Now,
}

pub struct Pair {
    pub ours: Rtc,
    pub theirs: Rtc,
    ours_addr: SocketAddr,
    theirs_addr: SocketAddr,
    pub now: Instant,
    pub mids: Vec<Mid>,
    pub pt: Pt,
    kind: MediaKind,
    next: usize,
    rtp_time: u64,
    /// Datagrams ours sent since the last `settle`, for the other peer.
    pub sent: Vec<Vec<u8>>,
    /// Events ours produced while driven (raw packets among them, if enabled).
    pub events: Vec<Event>,
    /// Events the other peer produced (the media it received).
    pub received: Vec<Event>,
    pub polls: u64,
    pub timeouts: u64,
    pub frames: u64,
    /// Frames `write_now` sent at once.
    pub frames_now: u64,
    /// Our peer's next timeout.
    next_timeout: Instant,
}

/// Run a peer until it waits; its datagrams go into `out`, its events into `events`.
/// Returns its next timeout.
fn run(rtc: &mut Rtc, out: &mut Vec<Vec<u8>>, events: &mut Vec<Event>) -> Instant {
    loop {
        match rtc.poll_output().expect("poll") {
            Output::Timeout(t) => return t,
            Output::Transmit(t) => out.push(t.contents.into()),
            Output::Event(e) => events.push(e),
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
    /// A connected pair starting at `now` whose m-lines are of `kind` (Opus or VP8).
    /// `config` adds to our peer's configuration.
    pub fn new(
        now: Instant,
        m_lines: usize,
        kind: MediaKind,
        config: impl FnOnce(RtcConfig) -> RtcConfig,
    ) -> Pair {
        let ours_addr: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let theirs_addr: SocketAddr = "10.0.0.2:6000".parse().expect("addr");
        let mut ours = config(
            Rtc::builder()
                .set_ice_lite(true)
                .set_stats_interval(Some(Duration::from_secs(1))),
        )
        .build(now);
        let mut theirs = Rtc::builder().build(now);
        ours.add_local_candidate(Candidate::host(ours_addr, "udp").expect("candidate"));
        theirs.add_local_candidate(Candidate::host(theirs_addr, "udp").expect("candidate"));
        let mut change = ours.sdp_api();
        let mids: Vec<Mid> = (0..m_lines)
            .map(|i| {
                change.add_media(
                    kind,
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
        let codec = if kind == MediaKind::Audio {
            Codec::Opus
        } else {
            Codec::Vp8
        };
        let mut pair = Pair {
            ours,
            theirs,
            ours_addr,
            theirs_addr,
            now,
            mids,
            pt: Pt::from(0),
            kind,
            next: 0,
            rtp_time: 0,
            sent: Vec::new(),
            events: Vec::new(),
            received: Vec::new(),
            polls: 0,
            timeouts: 0,
            frames: 0,
            frames_now: 0,
            next_timeout: now,
        };
        // ICE, DTLS and SCTP on fake time, until media can be written.
        for _ in 0..10_000 {
            pair.exchange();
            let ready = pair.ours.is_connected()
                && pair
                    .ours
                    .writer(pair.mids[0])
                    .is_some_and(|w| w.payload_params().any(|p| p.spec().codec == codec));
            if ready {
                break;
            }
        }
        let w = pair.ours.writer(pair.mids[0]).expect("connected");
        pair.pt = w
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .expect("codec negotiated")
            .pt();
        pair.events.clear();
        pair.received.clear();
        pair
    }

    /// Both peers run, each one's datagrams reach the other; time moves to the earlier
    /// timeout (at most 5 ms on).
    pub fn exchange(&mut self) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = self.ours.handle_input(Input::Timeout(self.now));
        let _ = self.theirs.handle_input(Input::Timeout(self.now));
        let ta = run(&mut self.ours, &mut a, &mut self.events);
        let tb = run(&mut self.theirs, &mut b, &mut self.received);
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

    /// One frame written into the next m-line by `path`, and our peer run until it
    /// waits if it has to (what the session core does per forwarded frame). Fake time
    /// moves 20 ms / N per frame: every m-line carries 50 frames a second. Returns what
    /// `write_now` said (`Queued` for the queued path).
    pub fn forward(&mut self, data: &Arc<[u8]>, path: Path) -> WriteNow {
        let mid = self.mids[self.next % self.mids.len()];
        self.next += 1;
        let m = self.mids.len() as u32;
        self.now += Duration::from_micros(20_000 / u64::from(m));
        if self.next.is_multiple_of(self.mids.len()) {
            self.rtp_time += if self.kind == MediaKind::Audio {
                960
            } else {
                1800
            };
        }
        let Some(w) = self.ours.writer(mid) else {
            return WriteNow::Queued;
        };
        let rate = if self.kind == MediaKind::Audio {
            str0m::media::Frequency::FORTY_EIGHT_KHZ
        } else {
            str0m::media::Frequency::NINETY_KHZ
        };
        let time = MediaTime::new(self.rtp_time, rate);
        self.frames += 1;
        let said = match path {
            Path::Queued => {
                let _ = w.write(self.pt, self.now, time, data.clone());
                WriteNow::Queued
            }
            Path::Now => {
                let sent = &mut self.sent;
                let transmit = |t: str0m::net::Transmit| sent.push(t.contents.into());
                let said = w
                    .write_now(self.now, self.pt, self.now, time, data.clone(), transmit)
                    .unwrap_or(WriteNow::Queued);
                if let WriteNow::Sent(_) = said {
                    self.frames_now += 1;
                    // No drive for it; the connection's own timers when due.
                    if self.next_timeout <= self.now {
                        self.poll_until_wait(true);
                    }
                    return said;
                }
                said
            }
        };
        self.poll_until_wait(true);
        said
    }

    /// Drive our peer as the session core does: a timeout, then poll until it waits.
    pub fn drive(&mut self) {
        self.poll_until_wait(true);
    }

    /// Poll our peer until it waits, without a timeout (events and transmits a
    /// `write_now` left, such as raw packets).
    pub fn drain(&mut self) {
        self.poll_until_wait(false);
    }

    /// As `drive_pc`: a timeout first (if `timeout`), then poll; a timeout already due
    /// runs once.
    fn poll_until_wait(&mut self, timeout: bool) {
        if timeout {
            let _ = self.ours.handle_input(Input::Timeout(self.now));
            self.timeouts += 1;
        }
        let mut ran = timeout;
        loop {
            self.polls += 1;
            match self.ours.poll_output() {
                Ok(Output::Timeout(t)) if t <= self.now && !ran => {
                    ran = true;
                    self.timeouts += 1;
                    let _ = self.ours.handle_input(Input::Timeout(self.now));
                }
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Err(_) => break,
                Ok(Output::Transmit(t)) => self.sent.push(t.contents.into()),
                Ok(Output::Event(e)) => self.events.push(e),
            }
        }
    }

    /// The other peer hears what was sent and answers; ours runs on its answer (as the
    /// session core drives a connection with input).
    pub fn settle(&mut self) {
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
        run(&mut self.theirs, &mut back, &mut self.received);
        deliver(
            &mut self.ours,
            self.now,
            self.theirs_addr,
            self.ours_addr,
            &back,
        );
        self.sent = sent;
        self.sent.clear();
        self.poll_until_wait(false);
    }
}
