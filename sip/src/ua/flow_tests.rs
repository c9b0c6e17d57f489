//! The user agent's call flows through its sans-IO core, with fake time: a phone's or
//! trunk's messages go in as inputs, what the core queues for its shell comes out, the
//! control plane's questions are answered when a test says so, and timers fire only
//! when a test moves the clock. Each flow is what a peer would observe on the wire.

use std::collections::{BTreeMap, VecDeque};

use patchbay_conference::calls::CallCommand;
use patchbay_conference::dialogs::{DialCommand, DialogData};
use patchbay_conference::inbound::InboundRules;
use patchbay_conference::NewParticipant;
use uuid::Uuid;

use super::*;

mod calls;
mod dialogs;
mod registering;
mod transfers;

/// Where the phone (or the proxy in front of it) sends from.
const PHONE: &str = "127.0.0.1:5070";
/// The trunk dialogs go to.
const TRUNK: &str = "127.0.0.1:5080";

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\na=sendrecv\r\n";

/// One message the core queued for sending.
struct Sent {
    to: Peer,
    text: String,
}

impl Sent {
    /// The status code of a response (none for a request).
    fn status(&self) -> Option<u16> {
        let rest = self.text.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    fn method(&self) -> Option<&str> {
        if self.text.starts_with("SIP/2.0") {
            return None;
        }
        self.text.split(' ').next()
    }

    /// The first value of header `name` (case-insensitive).
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.headers(name).next()
    }

    fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).filter_map(move |line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The Request-URI of a request.
    fn uri(&self) -> Option<&str> {
        self.text.split(' ').nth(1)
    }

    fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }

    /// `tag=` of the To header.
    fn to_tag(&self) -> Option<String> {
        let to = self.header("To")?;
        let (_, tag) = to.split_once("tag=")?;
        Some(tag.split(';').next()?.trim().to_string())
    }
}

/// A user agent core with a real conference (SQLite in a temporary directory) and a
/// test's clock.
struct Harness {
    ua: Ua,
    now: Instant,
    conference: Arc<Conference>,
    sent: VecDeque<Sent>,
    connects: Vec<(ConnId, SipHop, bool)>,
    asks: Vec<Ask>,
    /// Dialogs the conference asks the SIP side to place (its dialer).
    dials: mpsc::UnboundedReceiver<DialCommand>,
    /// Legs whose media ended (their session's verdicts arrive from its actor).
    media_ended: mpsc::UnboundedReceiver<(LegId, MediaEnd)>,
    _dir: tempfile::TempDir,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A configuration on loopback, nothing optional on.
fn config() -> SipConfig {
    SipConfig {
        listen: addr("127.0.0.1:5060"),
        media_ip: "127.0.0.1".parse().expect("ip"),
        public_ip: None,
        rtp_ports: (20000, 60000),
        rtp_timeout: Duration::from_secs(30),
        trunk: None,
        tcp: TcpLimits::default(),
        max_transactions_per_source: 64,
        tls: None,
        tls_ca: None,
        outbound_proxy: None,
        trunk_ping_interval: Duration::ZERO,
        srtp: SrtpMode::Off,
        registrations: Vec::new(),
        inbound: None,
        music_on_hold: false,
        transfer_targets: Vec::new(),
    }
}

/// The trunk at [`TRUNK`] over `transport`.
fn trunk(transport: SipTransport) -> SipTrunk {
    SipTrunk {
        hop: SipHop {
            host: "127.0.0.1".into(),
            port: 5080,
            addr: addr(TRUNK),
            transport,
        },
        user: None,
        password: None,
    }
}

impl Harness {
    async fn new(tweak: impl FnOnce(&mut SipConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let conference = patchbay_conference::testing::sqlite_conference(dir.path()).await;
        let mut config = config();
        tweak(&mut config);
        let (dialer, dials) = mpsc::unbounded_channel();
        conference.set_dialer(dialer);
        let (ended, media_ended) = mpsc::unbounded_channel();
        let metrics = SipMetrics::default();
        let legs = RtpPorts {
            ports: PortAllocator::new(config.rtp_ports.0, config.rtp_ports.1),
            media_ip: config.media_ip,
            timeout: config.rtp_timeout,
            ended,
            metrics: metrics.clone(),
        };
        let parts = Parts {
            conference: conference.clone(),
            metrics,
            legs: Box::new(legs),
            conn_ids: ConnIds::default(),
            tls_client: false,
            tls_port: None,
        };
        let now = Instant::now();
        let mut h = Harness {
            ua: Ua::new(config, parts, now),
            now,
            conference,
            sent: VecDeque::new(),
            connects: Vec::new(),
            asks: Vec::new(),
            dials,
            media_ended,
            _dir: dir,
        };
        h.advance(Duration::ZERO);
        h
    }

    /// A harness and a participant in a session: its id and token.
    async fn with_member(tweak: impl FnOnce(&mut SipConfig)) -> (Harness, Uuid, String) {
        let h = Harness::new(tweak).await;
        let (participant, _, token) = h.member().await;
        (h, participant, token)
    }

    /// A participant in a new session: its id, the session's, and its token.
    async fn member(&self) -> (Uuid, Uuid, String) {
        let c = &self.conference;
        let (p, token) = c
            .create_participant("acct", NewParticipant::default())
            .await
            .expect("participant");
        let s = c.create_session("acct", None).await.expect("session");
        c.add_participant_to_session("acct", s.id, p.id, None)
            .await
            .expect("member");
        (p.id, s.id, token)
    }

    fn input(&mut self, input: Input) {
        self.ua.handle(self.now, input);
        self.collect();
    }

    /// A datagram from `from`.
    fn datagram(&mut self, from: &str, text: &str) {
        self.input(Input::Datagram(Bytes::from(text.to_string()), addr(from)));
    }

    /// What the core queued: sends (which must parse), connections, questions.
    fn collect(&mut self) {
        while let Some(out) = self.ua.poll_output() {
            match out {
                Out::Send(to, bytes) => {
                    let text = String::from_utf8(bytes.to_vec()).expect("SIP is text");
                    if !text.trim().is_empty() {
                        parse_datagram(bytes, &Limits::datagram()).expect("what we send parses");
                    }
                    self.sent.push_back(Sent { to, text });
                }
                Out::Connect { id, hop, tls } => self.connects.push((id, hop, tls)),
                Out::Ask(ask) => self.asks.push(ask),
            }
        }
    }

    /// Move the clock by `by`, firing each timer at its time.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.ua.next_deadline().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.ua.handle_timeout(self.now);
            self.collect();
        }
        self.now = until;
    }

    /// Answer the control plane's questions asked so far.
    async fn answer_asks(&mut self) {
        for ask in std::mem::take(&mut self.asks) {
            if let Some(input) = ask.await {
                self.input(input);
            }
        }
    }

    /// Wait (at most 5 s) for a leg's media to end and hand the core the news.
    async fn next_media_end(&mut self) {
        let ended = tokio::time::timeout(Duration::from_secs(5), self.media_ended.recv());
        let (leg, why) = ended.await.expect("a leg ended").expect("legs");
        self.input(Input::MediaEnded(leg, why));
    }

    /// Hand the core the dialogs the conference asked for so far.
    fn dial(&mut self) {
        while let Ok(cmd) = self.dials.try_recv() {
            self.input(Input::Dial(cmd));
        }
    }

    /// Everything sent since the last call.
    fn take(&mut self) -> Vec<Sent> {
        self.sent.drain(..).collect()
    }

    /// Status codes sent since the last call (requests left out).
    fn statuses(&mut self) -> Vec<u16> {
        self.take().iter().filter_map(Sent::status).collect()
    }

    /// The one request `method` sent since the last call (anything else is dropped).
    fn request(&mut self, method: &str) -> Sent {
        let mut found: Vec<Sent> = self
            .take()
            .into_iter()
            .filter(|s| s.method() == Some(method))
            .collect();
        assert_eq!(found.len(), 1, "one {method} expected");
        found.remove(0)
    }
}

/// The request `method` among `sent` (the first).
fn find<'a>(sent: &'a [Sent], method: &str) -> &'a Sent {
    let found = sent.iter().find(|s| s.method() == Some(method));
    found.unwrap_or_else(|| panic!("a {method} among what was sent"))
}

/// An INVITE from the phone: `Call-ID` `call`, `branch`, extra header lines.
fn invite(call: &str, branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:+15550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{branch};rport\r\n\
         From: <sip:+15550001@127.0.0.1>;tag=phone\r\nTo: <sip:+15550100@127.0.0.1>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:phone@{PHONE}>\r\nMax-Forwards: 70\r\n\
         {extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

/// A request inside the phone's call `call` (our tag `tag`), with `CSeq` `cseq`.
fn in_dialog(method: &str, call: &str, tag: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:conference@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{branch}\r\n\
         From: <sip:+15550001@127.0.0.1>;tag=phone\r\nTo: <sip:+15550100@127.0.0.1>;tag={tag}\r\n\
         Call-ID: {call}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The token as the phone's `User-to-User` header line.
fn uui(token: &str) -> String {
    format!("User-to-User: {token};encoding=jwt\r\n")
}

/// The phone's call `call` answered: our To tag.
async fn answered(h: &mut Harness, call: &str, extra: &str) -> String {
    h.datagram(PHONE, &invite(call, &format!("{call}-1"), extra));
    let sent = h.take();
    let codes: Vec<u16> = sent.iter().filter_map(Sent::status).collect();
    assert_eq!(codes, [100, 200]);
    let ok = sent.last().expect("the 200");
    assert!(ok.body().contains("m=audio"), "our answer: {}", ok.text);
    let tag = ok.to_tag().expect("our tag");
    h.datagram(
        PHONE,
        &in_dialog("ACK", call, &tag, 1, &format!("{call}-ack")),
    );
    tag
}
