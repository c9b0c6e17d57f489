//! The user agent: one task owns the sipx transaction layer, the calls (our
//! UAS dialogs) and the timers; transport tasks feed it messages.
//!
//! Inbound INVITEs authenticate by the `User-to-User` token, negotiate SDP,
//! start the leg's RTP and join the session's media actor. Strictness the
//! stack leaves to us is here: 400 (with a best-effort reply to unparseable
//! requests whose headers can still be read), 405, 406, 415, 416, 420, 481,
//! 501 with `Allow`, 505. Tokens and whole messages are never logged above
//! `debug`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use patchbay_conference::events::DeviceOwner;
use patchbay_conference::media::session::{LegId, LegMedia, SessionHandle, SessionInput};
use patchbay_conference::{Conference, JoinError};
use sipx_sip::headers::{Address, To};
use sipx_sip::transaction::{Dispatch, ServerState};
use sipx_sip::{
    parse_datagram, validate_request, HeaderName, Limits, Message, Method, Output, Reliability,
    Request, RequestBuilder, ResponseBuilder, Scheme, StatusCode, StreamParser, Timer, Timers,
    TransactionKey, TransactionLayer, TuEvent, Uri,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::SipMetrics;
use crate::rtp::{self, LegStart, MediaEnd, PortAllocator, RtpLeg};
use crate::sdp::{self, Negotiated};
use crate::uui;

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";
const SERVER: &str = "patchbay";
/// Largest datagram we read.
const MAX_DATAGRAM: usize = 65_535;

/// SIP gateway settings.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: SocketAddr,
    /// Address advertised in Contact and SDP, and bound for RTP.
    pub media_ip: IpAddr,
    pub rtp_ports: (u16, u16),
    pub rtp_timeout: Duration,
    /// Where dialogs (outbound calls) go; none: dialogs are refused.
    pub trunk: Option<Trunk>,
    pub tcp: TcpLimits,
    /// Server transactions at once from one IP address (more get 503).
    pub max_transactions_per_source: usize,
}

/// What one peer, or all of them, may hold of the SIP TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_per_source: 64,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp(ConnId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    transport: Transport,
    addr: SocketAddr,
}

impl Peer {
    fn reliability(&self) -> Reliability {
        match self.transport {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp(_) => Reliability::Reliable,
        }
    }
}

enum Input {
    Datagram(Bytes, SocketAddr),
    Stream(Box<Message>, Peer),
    TcpOpened(ConnId, mpsc::UnboundedSender<Bytes>),
    TcpClosed(ConnId),
    Dial(patchbay_conference::dialogs::DialCommand),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
enum TimerKind {
    Tx(TransactionKey, Timer),
    /// Retransmit the 2xx of a call until its ACK (RFC 3261 §13.3.1.4).
    Retransmit2xx(String),
}

struct Call {
    leg: LegId,
    /// Whose call it is (its `onConnect`/`onLeave` go to the owner's `callbackUrl`).
    owner: DeviceOwner,
    peer: Peer,
    call_id: String,
    local_tag: String,
    /// Their address (the INVITE's From, with their tag) and ours (its To, with our tag).
    remote_addr: Bytes,
    local_addr: Bytes,
    remote_target: Uri,
    route_set: Vec<Bytes>,
    local_cseq: u32,
    confirmed: bool,
    ok_bytes: Bytes,
    ok_sent_at: Instant,
    ok_interval: Duration,
    late_offer: bool,
    offer: Option<sdp::Sdp>,
    negotiated: Option<Negotiated>,
    sdp_session_id: u64,
    sdp_version: u64,
    session: SessionHandle,
    rtp: RtpLeg,
}

impl Call {
    /// Put negotiated media into effect: the leg's RTP endpoint, then its session
    /// (joined the first time, updated after).
    fn apply(&mut self, n: Negotiated) {
        self.rtp.sink.configure(
            n.remote,
            n.direction.we_send(),
            n.payload_type,
            n.event_payload_type,
            n.codec.rtp_clock(),
        );
        self.rtp.set_expecting(n.direction.we_receive());
        let media = leg_media(&n);
        let input = if self.negotiated.is_some() {
            SessionInput::Update {
                leg: self.leg,
                media,
            }
        } else {
            SessionInput::Join {
                leg: self.leg,
                owner: self.owner.clone(),
                call_id: self.call_id.as_str().into(),
                media,
                sink: self.rtp.sink.clone(),
            }
        };
        self.session.send(input);
        self.negotiated = Some(n);
    }
}

struct Ua {
    config: SipConfig,
    conference: Arc<Conference>,
    metrics: SipMetrics,
    layer: TransactionLayer,
    timers_cfg: Timers,
    udp: Arc<UdpSocket>,
    tcp: HashMap<ConnId, mpsc::UnboundedSender<Bytes>>,
    tx_peers: HashMap<TransactionKey, Peer>,
    /// Server transactions per source address, under a cap.
    admission: admission::TxAdmission,
    timers: BTreeMap<(Instant, u64), TimerKind>,
    tx_timers: HashMap<(TransactionKey, Timer), (Instant, u64)>,
    timer_seq: u64,
    calls: HashMap<String, Call>,
    legs: HashMap<LegId, String>,
    ports: PortAllocator,
    media_tx: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    /// Dialogs (outbound calls).
    trunk: Option<Trunk>,
    outgoing: HashMap<String, uac::Outgoing>,
    client_invites: HashMap<TransactionKey, String>,
    dialog_calls: HashMap<uuid::Uuid, String>,
    call_dialogs: HashMap<String, uuid::Uuid>,
    /// The ACK of each answered outbound call, for 2xx retransmissions.
    acks: HashMap<String, (Bytes, Peer)>,
}

mod admission;
#[cfg(test)]
mod fuzz_tests;
mod tcp;
mod uac;
pub use uac::Trunk;

static NEXT_LEG: AtomicU64 = AtomicU64::new(1);

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn hn(name: &'static str) -> HeaderName {
    HeaderName::parse(&Bytes::from_static(name.as_bytes()))
}

/// Values of every header called `name` (case-insensitive, any spelling sipx knows).
fn header_values<'a>(req: &'a Request, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    req.headers
        .iter()
        .filter(move |h| h.name().canonical().eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| h.raw_value())
}

fn first_value(req: &Request, name: &str) -> Option<String> {
    header_values(req, name)
        .next()
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
}

/// A stateless 400 for a request that did not parse, from whatever header lines can be read.
fn crude_400(raw: &[u8]) -> Option<Bytes> {
    crude_response(raw, "400 Bad Request")
}

/// A response with `status` (code and reason) to the request at the start of `raw`,
/// built from its raw header lines (for requests the parser refused).
fn crude_response(raw: &[u8], status: &str) -> Option<Bytes> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let start = lines.next()?;
    if start.starts_with("SIP/") || start.split_whitespace().count() < 2 {
        return None;
    }
    let mut out = format!("SIP/2.0 {status}\r\n");
    let mut has_via = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(name.as_str(), "via" | "v") {
            has_via = true;
        }
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !has_via {
        return None;
    }
    out.push_str("Server: patchbay\r\nContent-Length: 0\r\n\r\n");
    // Lines copied from a broken request may not make a valid response: send none then.
    let out = Bytes::from(out);
    matches!(
        parse_datagram(out.clone(), &Limits::datagram()),
        Ok(Message::Response(_))
    )
    .then_some(out)
}

/// The response `(status, reason, extra headers)` a request gets before any
/// processing, if it is one we refuse.
/// Status, reason and extra headers of a request refused before processing.
type Refusal = (u16, &'static str, Vec<(&'static str, String)>);

fn precheck(req: &Request) -> Option<Refusal> {
    let findings = validate_request(req);
    // A missing Max-Forwards is repairable (RFC 2543 peers, RFC 4475 inv2543): accept it.
    if let Some(f) = findings.iter().find(|f| !f.is_repairable()) {
        let status = f.status();
        let reason = if status == 505 {
            "Version Not Supported"
        } else {
            "Bad Request"
        };
        return Some((status, reason, vec![]));
    }
    if !req.version.is_supported() {
        return Some((505, "Version Not Supported", vec![]));
    }
    if !matches!(req.uri.scheme(), Scheme::Sip | Scheme::Sips) {
        return Some((416, "Unsupported URI Scheme", vec![]));
    }
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let required: Vec<String> = header_values(req, "Require")
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        if !required.is_empty() {
            return Some((
                420,
                "Bad Extension",
                vec![("Unsupported", required.join(", "))],
            ));
        }
    }
    match &req.method {
        Method::Other(_) => return Some((501, "Not Implemented", vec![("Allow", ALLOW.into())])),
        Method::Invite | Method::Ack | Method::Bye | Method::Cancel | Method::Options => {}
        _ => return Some((405, "Method Not Allowed", vec![("Allow", ALLOW.into())])),
    }
    if req.method == Method::Invite {
        if !req.body().is_empty() {
            let ct = first_value(req, "Content-Type")
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !ct.starts_with("application/sdp") {
                return Some((
                    415,
                    "Unsupported Media Type",
                    vec![("Accept", "application/sdp".into())],
                ));
            }
            let ce = first_value(req, "Content-Encoding")
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !ce.is_empty() && ce != "identity" {
                return Some((
                    415,
                    "Unsupported Media Type",
                    vec![("Accept-Encoding", "identity".into())],
                ));
            }
        }
        if let Some(accept) = first_value(req, "Accept") {
            let ok = accept.split(',').any(|t| {
                let t = t
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                t == "application/sdp" || t == "application/*" || t == "*/*" || t.is_empty()
            });
            if !ok {
                return Some((
                    406,
                    "Not Acceptable",
                    vec![("Accept", "application/sdp".into())],
                ));
            }
        }
    }
    None
}

impl Ua {
    fn local_contact(&self, peer: &Peer) -> String {
        let t = match peer.transport {
            Transport::Udp => "udp",
            Transport::Tcp(_) => "tcp",
        };
        let host = match self.config.media_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        format!(
            "<sip:patchbay@{host}:{};transport={t}>",
            self.config.listen.port()
        )
    }

    fn send_bytes(&self, bytes: &[u8], peer: &Peer) {
        match peer.transport {
            Transport::Udp => {
                let _ = self.udp.try_send_to(bytes, peer.addr);
            }
            Transport::Tcp(id) => {
                if let Some(tx) = self.tcp.get(&id) {
                    let _ = tx.send(Bytes::copy_from_slice(bytes));
                }
            }
        }
    }

    fn send_message(&self, m: &Message, peer: &Peer) {
        let bytes = m.to_bytes();
        self.send_bytes(&bytes, peer);
    }

    // ---- timers ----

    fn schedule(&mut self, at: Instant, kind: TimerKind) -> (Instant, u64) {
        self.timer_seq += 1;
        let id = (at, self.timer_seq);
        self.timers.insert(id, kind);
        id
    }

    fn set_tx_timer(&mut self, key: TransactionKey, timer: Timer, after: Duration) {
        self.clear_tx_timer(&key, timer);
        let id = self.schedule(Instant::now() + after, TimerKind::Tx(key.clone(), timer));
        self.tx_timers.insert((key, timer), id);
    }

    fn clear_tx_timer(&mut self, key: &TransactionKey, timer: Timer) {
        if let Some(id) = self.tx_timers.remove(&(key.clone(), timer)) {
            self.timers.remove(&id);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let kind = entry.remove();
            match kind {
                TimerKind::Tx(key, timer) => {
                    self.tx_timers.remove(&(key.clone(), timer));
                    let outputs = self.layer.on_timer(&key, timer);
                    self.run_outputs(&key, outputs);
                }
                TimerKind::Retransmit2xx(call_id) => self.retransmit_2xx(&call_id),
            }
        }
    }

    // ---- transaction outputs ----

    fn run_outputs(&mut self, key: &TransactionKey, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send(m) => {
                    if let Some(peer) = self.tx_peers.get(key).copied() {
                        self.send_message(&m, &peer);
                    }
                }
                Output::SetTimer { timer, after } => self.set_tx_timer(key.clone(), timer, after),
                Output::ClearTimer(timer) => self.clear_tx_timer(key, timer),
                Output::ToTu(ev) => self.on_tu(key, *ev),
                Output::Terminated(_) => {
                    self.tx_peers.remove(key);
                    self.admission.closed(key);
                    self.client_invites.remove(key);
                    for t in Timer::ALL {
                        self.clear_tx_timer(key, t);
                    }
                }
                _ => {}
            }
        }
    }

    /// Answer a request inside its server transaction.
    fn respond(&mut self, key: &TransactionKey, req: &Request, reply: Reply<'_>) {
        let Some(resp) = build_response(req, reply) else {
            return;
        };
        let outputs = self.layer.send_response(key, resp);
        self.run_outputs(key, outputs);
    }

    // ---- inbound ----

    fn on_datagram(&mut self, bytes: Bytes, from: SocketAddr) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive CRLFs
        }
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
        };
        match parse_datagram(bytes.clone(), &Limits::datagram()) {
            Ok(m) => self.on_message(m, peer),
            Err(e) => {
                self.metrics.sip_parse_errors.inc();
                tracing::debug!(%from, error = %e, "unparseable SIP datagram");
                if let Some(reply) = crude_400(&bytes) {
                    self.send_bytes(&reply, &peer);
                }
            }
        }
    }

    fn on_message(&mut self, m: Message, peer: Peer) {
        self.metrics.sip_messages_received.inc();
        if let Message::Request(req) = &m {
            if let Some((code, reason, headers)) = precheck(req) {
                self.metrics.sip_invalid_requests.inc();
                tracing::debug!(from = %peer.addr, code, "request refused before processing");
                if req.method != Method::Ack {
                    let tag = random_token();
                    match build_response(req, Reply::new(code, reason).tag(&tag).headers(&headers))
                    {
                        Some(resp) => self.send_message(&Message::Response(resp), &peer),
                        // Core headers missing (RFC 4475 insuf): answer from what can be read.
                        None => {
                            if let Some(reply) =
                                crude_400(&Message::Request(req.clone()).to_bytes())
                            {
                                self.send_bytes(&reply, &peer);
                            }
                        }
                    }
                }
                return;
            }
            if self.over_transaction_cap(req, &peer) {
                return;
            }
        }
        let reliability = peer.reliability();
        let request = matches!(m, Message::Request(_));
        match self.layer.receive(m, reliability) {
            Dispatch::Created { key, outputs } => {
                if request {
                    self.admission.opened(key.clone(), peer.addr.ip());
                }
                self.tx_peers.insert(key.clone(), peer);
                self.run_outputs(&key, outputs);
            }
            Dispatch::Matched { key, outputs } => self.run_outputs(&key, outputs),
            Dispatch::Unmatched(m) => match *m {
                Message::Request(req) if req.method == Method::Ack => self.on_ack(&req),
                Message::Request(req) => {
                    // No transaction key (e.g. a bare magic-cookie branch): refuse statelessly.
                    self.metrics.sip_invalid_requests.inc();
                    let tag = random_token();
                    if let Some(resp) =
                        build_response(&req, Reply::new(400, "Bad Request").tag(&tag))
                    {
                        self.send_message(&Message::Response(resp), &peer);
                    }
                }
                Message::Response(_) => {} // stray response: dropped
            },
        }
    }

    /// A request that would open a server transaction while its source holds as many as
    /// it may: answered 503 with Retry-After, statelessly (nothing is kept), and counted.
    fn over_transaction_cap(&mut self, req: &Request, peer: &Peer) -> bool {
        if req.method == Method::Ack || self.admission.has_room(peer.addr.ip()) {
            return false;
        }
        let new = TransactionKey::from_request(req)
            .is_some_and(|key| self.layer.server_state(&key).is_none());
        if !new {
            return false; // a retransmission: its transaction answers it
        }
        self.metrics.sip_transactions_refused.inc();
        tracing::debug!(from = %peer.addr, "request refused: its source holds too many transactions");
        let headers = [("Retry-After", "5".to_string())];
        let tag = random_token();
        if let Some(resp) = build_response(
            req,
            Reply::new(503, "Service Unavailable")
                .tag(&tag)
                .headers(&headers),
        ) {
            self.send_message(&Message::Response(resp), peer);
        }
        true
    }

    fn on_tu(&mut self, key: &TransactionKey, ev: TuEvent) {
        match ev {
            TuEvent::Request(req) => match req.method {
                Method::Invite => self.on_invite(key, &req),
                Method::Bye => self.on_bye(key, &req),
                Method::Cancel => self.on_cancel(key, &req),
                Method::Options => {
                    let headers = [
                        ("Allow", ALLOW.to_string()),
                        ("Accept", "application/sdp".to_string()),
                    ];
                    let tag = random_token();
                    self.respond(key, &req, Reply::new(200, "OK").tag(&tag).headers(&headers));
                }
                _ => {
                    let headers = [("Allow", ALLOW.to_string())];
                    let tag = random_token();
                    self.respond(
                        key,
                        &req,
                        Reply::new(405, "Method Not Allowed")
                            .tag(&tag)
                            .headers(&headers),
                    );
                }
            },
            TuEvent::Ack(req) => self.on_ack(&req),
            TuEvent::Timeout => self.on_invite_failed(key, "no answer from the SIP trunk"),
            TuEvent::TransportError => self.on_invite_failed(key, "the SIP trunk is unreachable"),
            // Answers to our INVITEs (dialogs); those to BYE and CANCEL need nothing.
            TuEvent::Response(r) => self.on_invite_response(key, &r),
            _ => {}
        }
    }

    fn to_tag(req: &Request) -> Option<String> {
        match req.headers.typed::<To>() {
            Some(Ok(to)) => to.tag().map(|t| String::from_utf8_lossy(t).to_string()),
            _ => None,
        }
    }

    fn call_id(req: &Request) -> String {
        first_value(req, "Call-ID").unwrap_or_default()
    }

    fn on_invite(&mut self, key: &TransactionKey, req: &Request) {
        let call_id = Self::call_id(req);
        if let Some(tag) = Self::to_tag(req) {
            if self.calls.get(&call_id).is_some_and(|c| c.local_tag == tag) {
                self.on_reinvite(key, req, &call_id);
            } else {
                self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist"));
            }
            return;
        }
        if self.calls.contains_key(&call_id) {
            // A new INVITE (not a retransmission: the transaction layer absorbs those)
            // without a To tag on a live call's Call-ID: a merged or looped request
            // (RFC 3261 §8.2.2.2). It must not touch the live call.
            tracing::info!(%call_id, "merged INVITE refused: its Call-ID belongs to a live call");
            self.metrics.sip_calls_rejected.inc();
            self.respond(
                key,
                req,
                Reply::new(482, "Loop Detected").tag(&random_token()),
            );
            return;
        }
        self.respond(key, req, Reply::new(100, "Trying"));
        let local_tag = random_token();
        let reject = |ua: &mut Ua, code: u16, reason: &str| {
            ua.metrics.sip_calls_rejected.inc();
            ua.respond(key, req, Reply::new(code, reason).tag(&local_tag));
        };
        let Some(token) = uui::jwt_token(header_values(req, "User-to-User")) else {
            tracing::info!(%call_id, "call refused: no User-to-User token");
            return reject(self, 403, "Forbidden (no participant token)");
        };
        let (participant, session) = match self.conference.join_media(&token) {
            Ok(x) => x,
            Err(JoinError::NotInSession(p)) => {
                tracing::info!(%call_id, participant_id = %p, "call refused: participant in no session");
                return reject(self, 480, "Temporarily Unavailable");
            }
            Err(e) => {
                tracing::info!(%call_id, reason = %e, "call refused");
                return reject(self, 403, "Forbidden");
            }
        };
        let offer = if req.body().is_empty() {
            None
        } else {
            match std::str::from_utf8(req.body())
                .map_err(|e| e.to_string())
                .and_then(|t| sdp::parse(t).map_err(|e| e.to_string()))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::info!(%call_id, error = %e, "call refused: bad SDP");
                    return reject(self, 400, "Bad Request (malformed SDP)");
                }
            }
        };
        let negotiated = match &offer {
            Some(o) => match sdp::negotiate(o) {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::info!(%call_id, "call refused: no common codec");
                    return reject(self, 488, "Not Acceptable Here");
                }
            },
            None => None,
        };
        let (rtp_socket, rtcp_socket) = match self.ports.bind(self.config.media_ip) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no RTP port");
                return reject(self, 503, "Service Unavailable");
            }
        };
        let leg = LegId(NEXT_LEG.fetch_add(1, Ordering::Relaxed));
        let Some(peer) = self.tx_peers.get(key).copied() else {
            return;
        };
        let rtp = match rtp::start(LegStart {
            leg,
            rtp: rtp_socket,
            rtcp: rtcp_socket,
            timeout: self.config.rtp_timeout,
            ended: self.media_tx.clone(),
            metrics: self.metrics.clone(),
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start RTP");
                return reject(self, 503, "Service Unavailable");
            }
        };
        let sdp_session_id = rand::random::<u32>() as u64;
        let body = match (&offer, &negotiated) {
            (Some(o), Some(n)) => {
                sdp::answer(o, n, self.config.media_ip, rtp.port, sdp_session_id, 1)
            }
            _ => sdp::offer(self.config.media_ip, rtp.port, sdp_session_id, 1),
        };
        let contact = self.local_contact(&peer);
        // RFC 3261 §12.1.1: every Record-Route of the request, in order, in the answer
        // (the caller's ACK, BYE and re-INVITEs then keep to the proxies' path).
        let record_route: Vec<(&str, String)> = header_values(req, "Record-Route")
            .map(|v| ("Record-Route", String::from_utf8_lossy(v).into_owned()))
            .collect();
        let mut headers = vec![("Contact", contact), ("Allow", ALLOW.to_string())];
        headers.extend(record_route);
        let Some(resp) = build_response(
            req,
            Reply::new(200, "OK")
                .tag(&local_tag)
                .headers(&headers)
                .body("application/sdp", Bytes::from(body)),
        ) else {
            return;
        };
        let ok_bytes = Message::Response(resp.clone()).to_bytes();
        let local_addr = resp
            .headers
            .get(&HeaderName::To)
            .map(|h| Bytes::copy_from_slice(h.raw_value()))
            .unwrap_or_default();
        let remote_addr = req
            .headers
            .get(&HeaderName::From)
            .map(|h| Bytes::copy_from_slice(h.raw_value()))
            .unwrap_or_default();
        let remote_target = match req
            .headers
            .get(&HeaderName::Contact)
            .map(|h| Address::parse(h.raw_value(), "Contact"))
        {
            Some(Ok(a)) => a.uri,
            _ => req.uri.clone(),
        };
        let route_set: Vec<Bytes> = header_values(req, "Record-Route")
            .map(Bytes::copy_from_slice)
            .collect();

        let outputs = self.layer.send_response(key, resp);
        self.run_outputs(key, outputs);
        self.metrics.sip_calls_accepted.inc();
        self.metrics.sip_calls_active.inc();
        tracing::info!(%call_id, %leg, participant_id = %participant.id, codec = ?negotiated.map(|n| n.codec), late_offer = negotiated.is_none(), "call answered");

        let mut call = Call {
            leg,
            owner: DeviceOwner::of(&participant),
            peer,
            call_id: call_id.clone(),
            local_tag,
            remote_addr,
            local_addr,
            remote_target,
            route_set,
            local_cseq: 0,
            confirmed: false,
            ok_bytes,
            ok_sent_at: Instant::now(),
            ok_interval: self.timers_cfg.t1,
            late_offer: negotiated.is_none(),
            offer,
            negotiated: None,
            sdp_session_id,
            sdp_version: 1,
            session,
            rtp,
        };
        if let Some(n) = negotiated {
            call.apply(n);
        }
        // Retransmit the 200 until the ACK (on UDP), give up after 64·T1.
        let first = if peer.transport == Transport::Udp {
            self.timers_cfg.t1
        } else {
            self.timers_cfg.t1 * 64
        };
        self.schedule(
            Instant::now() + first,
            TimerKind::Retransmit2xx(call_id.clone()),
        );
        self.legs.insert(leg, call_id.clone());
        self.calls.insert(call_id, call);
    }

    fn retransmit_2xx(&mut self, call_id: &str) {
        let t1 = self.timers_cfg.t1;
        let t2 = self.timers_cfg.t2;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.confirmed {
            return;
        }
        if call.ok_sent_at.elapsed() >= t1 * 64 {
            tracing::info!(call_id, "no ACK for our 200: ending the call");
            self.end_call(call_id, true);
            return;
        }
        let (bytes, peer) = (call.ok_bytes.clone(), call.peer);
        call.ok_interval = (call.ok_interval * 2).min(t2);
        let next = call.ok_interval;
        if peer.transport == Transport::Udp {
            self.send_bytes(&bytes, &peer);
        }
        self.schedule(
            Instant::now() + next,
            TimerKind::Retransmit2xx(call_id.to_string()),
        );
    }

    fn on_ack(&mut self, req: &Request) {
        let call_id = Self::call_id(req);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if Self::to_tag(req).as_deref() != Some(call.local_tag.as_str()) {
            return;
        }
        call.confirmed = true;
        if call.late_offer {
            call.late_offer = false;
            let answer = std::str::from_utf8(req.body())
                .ok()
                .and_then(|t| sdp::parse(t).ok());
            match answer.as_ref().map(sdp::negotiate) {
                Some(Ok(n)) => call.apply(n),
                _ => {
                    tracing::info!(call_id, "no usable SDP answer in the ACK: ending the call");
                    self.end_call(&call_id, true);
                }
            }
        }
    }

    fn on_reinvite(&mut self, key: &TransactionKey, req: &Request, call_id: &str) {
        let media_ip = self.config.media_ip;
        let contact = self
            .calls
            .get(call_id)
            .map(|c| self.local_contact(&c.peer))
            .unwrap_or_default();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let offer = if req.body().is_empty() {
            None
        } else {
            std::str::from_utf8(req.body())
                .ok()
                .and_then(|t| sdp::parse(t).ok())
        };
        let Some(offer) = offer else {
            if req.body().is_empty() {
                // An offerless re-INVITE: offer our current media again; the answer comes in the ACK.
                call.sdp_version += 1;
                call.late_offer = true;
                call.confirmed = false;
                let body = sdp::offer(
                    media_ip,
                    call.rtp.port,
                    call.sdp_session_id,
                    call.sdp_version,
                );
                let local_tag = call.local_tag.clone();
                let headers = [("Contact", contact)];
                return self.respond(
                    key,
                    req,
                    Reply::new(200, "OK")
                        .tag(&local_tag)
                        .headers(&headers)
                        .body("application/sdp", Bytes::from(body)),
                );
            }
            let local_tag = call.local_tag.clone();
            return self.respond(
                key,
                req,
                Reply::new(400, "Bad Request (malformed SDP)").tag(&local_tag),
            );
        };
        let n = match sdp::negotiate(&offer) {
            Ok(n) => n,
            Err(_) => {
                let local_tag = call.local_tag.clone();
                return self.respond(
                    key,
                    req,
                    Reply::new(488, "Not Acceptable Here").tag(&local_tag),
                );
            }
        };
        call.apply(n);
        tracing::info!(call_id, leg = %call.leg, direction = n.direction.as_str(), codec = ?n.codec, "call re-negotiated");
        call.sdp_version += 1;
        let body = sdp::answer(
            &offer,
            &n,
            media_ip,
            call.rtp.port,
            call.sdp_session_id,
            call.sdp_version,
        );
        call.offer = Some(offer);
        let local_tag = call.local_tag.clone();
        let headers = [("Contact", contact)];
        self.respond(
            key,
            req,
            Reply::new(200, "OK")
                .tag(&local_tag)
                .headers(&headers)
                .body("application/sdp", Bytes::from(body)),
        );
    }

    fn on_bye(&mut self, key: &TransactionKey, req: &Request) {
        let call_id = Self::call_id(req);
        let matches = self
            .calls
            .get(&call_id)
            .is_some_and(|c| Self::to_tag(req).as_deref() == Some(c.local_tag.as_str()));
        if !matches {
            return self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist"));
        }
        self.respond(key, req, Reply::new(200, "OK"));
        tracing::info!(%call_id, "caller hung up");
        self.end_call(&call_id, false);
    }

    fn on_cancel(&mut self, key: &TransactionKey, req: &Request) {
        let invite = TransactionKey::for_cancelled_invite(req);
        match invite.as_ref().and_then(|k| {
            self.layer
                .server_request(k)
                .cloned()
                .map(|r| (k.clone(), r))
        }) {
            Some((ik, invite_req)) => {
                self.respond(key, req, Reply::new(200, "OK"));
                // Our INVITE answers are immediate; if one is still open, end it with 487.
                if matches!(self.layer.server_state(&ik), Some(ServerState::Proceeding)) {
                    let tag = random_token();
                    self.respond(
                        &ik,
                        &invite_req,
                        Reply::new(487, "Request Terminated").tag(&tag),
                    );
                }
            }
            None => self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist")),
        }
    }

    /// Remove a call, leave its session, optionally sending BYE to the caller.
    fn end_call(&mut self, call_id: &str, send_bye: bool) {
        let Some(mut call) = self.calls.remove(call_id) else {
            return;
        };
        self.legs.remove(&call.leg);
        call.session.send(SessionInput::Leave { leg: call.leg });
        self.metrics.sip_calls_active.dec();
        if send_bye {
            call.local_cseq += 1;
            if let Some(bye) = self.build_bye(&call) {
                let peer = call.peer;
                if let Some((key, outputs)) = self.layer.send_request(bye, peer.reliability()) {
                    self.tx_peers.insert(key.clone(), peer);
                    self.run_outputs(&key, outputs);
                }
            }
        }
        tracing::info!(call_id, leg = %call.leg, bye = send_bye, "call ended");
        self.dialog_call_ended(call_id, send_bye);
    }

    fn build_bye(&self, call: &Call) -> Option<Request> {
        let transport = match call.peer.transport {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
        };
        let host = match self.config.media_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        let via = format!(
            "SIP/2.0/{transport} {host}:{};branch=z9hG4bK{};rport",
            self.config.listen.port(),
            random_token()
        );
        let mut b = RequestBuilder::new(Method::Bye, call.remote_target.clone())
            .header(HeaderName::Via, via)
            .ok()?
            .max_forwards(70);
        for route in &call.route_set {
            b = b.header(hn("Route"), route.clone()).ok()?;
        }
        b.header(HeaderName::From, call.local_addr.clone())
            .ok()?
            .header(HeaderName::To, call.remote_addr.clone())
            .ok()?
            .header(HeaderName::CallId, call.call_id.clone())
            .ok()?
            .cseq(call.local_cseq, &Method::Bye)
            .ok()?
            .header(hn("User-Agent"), SERVER)
            .ok()
            .map(RequestBuilder::build)
    }

    fn on_media_end(&mut self, leg: LegId, why: MediaEnd) {
        let Some(call_id) = self.legs.get(&leg).cloned() else {
            return;
        };
        match why {
            MediaEnd::RtpTimeout => {
                self.metrics.rtp_timeouts.inc();
                tracing::info!(%call_id, %leg, "no RTP within rtp_timeout: hanging up");
            }
            MediaEnd::Session(reason) => {
                tracing::info!(%call_id, %leg, ?reason, "hanging up from the session")
            }
        }
        self.end_call(&call_id, true);
    }
}

fn leg_media(n: &Negotiated) -> LegMedia {
    LegMedia {
        codec: n.codec,
        payload_type: n.payload_type,
        event_payload_type: n.event_payload_type,
        ptime_ms: n.ptime_ms,
    }
}

/// A response to build: status, reason, our To tag, extra headers, body.
struct Reply<'a> {
    code: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    headers: &'a [(&'a str, String)],
    body: Option<(&'a str, Bytes)>,
}

impl<'a> Reply<'a> {
    fn new(code: u16, reason: &'a str) -> Reply<'a> {
        Reply {
            code,
            reason,
            to_tag: None,
            headers: &[],
            body: None,
        }
    }

    fn tag(mut self, tag: &'a str) -> Reply<'a> {
        self.to_tag = Some(tag);
        self
    }

    fn headers(mut self, headers: &'a [(&'a str, String)]) -> Reply<'a> {
        self.headers = headers;
        self
    }

    fn body(mut self, content_type: &'a str, body: Bytes) -> Reply<'a> {
        self.body = Some((content_type, body));
        self
    }
}

fn build_response(req: &Request, reply: Reply<'_>) -> Option<sipx_sip::Response> {
    let Reply {
        code,
        reason,
        to_tag,
        headers,
        body,
    } = reply;
    let status = StatusCode::new(code)?;
    let mut b = ResponseBuilder::to_request(req, status, reason.to_string()).ok()?;
    if let (Some(tag), true) = (to_tag, code > 100) {
        let has_tag = matches!(req.headers.typed::<To>(), Some(Ok(t)) if t.tag().is_some());
        if let (false, Some(to)) = (has_tag, req.headers.get(&HeaderName::To)) {
            let mut tagged = to.raw_value().to_vec();
            tagged.extend_from_slice(format!(";tag={tag}").as_bytes());
            // A To the builder refuses to re-emit (control bytes in a quoted display
            // name, RFC 4475 intmeth) is echoed as received, untagged.
            if sipx_sip::Header::build(HeaderName::To, tagged.clone()).is_ok() {
                b = b.set_header(&HeaderName::To, tagged).ok()?;
            }
        }
    }
    b = b.header(hn("Server"), SERVER).ok()?;
    for (name, value) in headers {
        b = b
            .header(
                HeaderName::parse(&Bytes::copy_from_slice(name.as_bytes())),
                value.clone(),
            )
            .ok()?;
    }
    if let Some((ct, body)) = body {
        b = b
            .set_header(&HeaderName::ContentType, ct.to_string())
            .ok()?
            .body(body);
    }
    Some(b.build())
}

/// A running SIP gateway.
pub struct SipGateway {
    tx: mpsc::UnboundedSender<Input>,
    task: tokio::task::JoinHandle<()>,
    pub local: SocketAddr,
}

impl SipGateway {
    /// Bind UDP and TCP on `config.listen` and start serving.
    pub async fn start(
        config: SipConfig,
        conference: Arc<Conference>,
        metrics: SipMetrics,
    ) -> std::io::Result<SipGateway> {
        let udp = Arc::new(UdpSocket::bind(config.listen).await?);
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        tokio::spawn(udp_loop(udp.clone(), tx.clone(), metrics.clone()));
        tokio::spawn(tcp::tcp_loop(tcp, tx.clone(), metrics.clone(), config.tcp));
        let ports = PortAllocator::new(config.rtp_ports.0, config.rtp_ports.1);
        let trunk = config.trunk.clone();
        if trunk.is_some() {
            let (dial_tx, mut dial_rx) = mpsc::unbounded_channel();
            conference.set_dialer(dial_tx);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(cmd) = dial_rx.recv().await {
                    if tx.send(Input::Dial(cmd)).is_err() {
                        return;
                    }
                }
            });
        }
        let mut config = config;
        config.listen = local;
        let max_transactions_per_source = config.max_transactions_per_source;
        let ua = Ua {
            config,
            conference,
            metrics,
            layer: TransactionLayer::new(Timers::default()),
            timers_cfg: Timers::default(),
            udp,
            tcp: HashMap::new(),
            tx_peers: HashMap::new(),
            admission: admission::TxAdmission::new(max_transactions_per_source),
            timers: BTreeMap::new(),
            tx_timers: HashMap::new(),
            timer_seq: 0,
            calls: HashMap::new(),
            legs: HashMap::new(),
            ports,
            media_tx,
            trunk,
            outgoing: HashMap::new(),
            client_invites: HashMap::new(),
            dialog_calls: HashMap::new(),
            call_dialogs: HashMap::new(),
            acks: HashMap::new(),
        };
        let task = tokio::spawn(run(ua, rx, media_rx));
        Ok(SipGateway { tx, task, local })
    }

    /// Send BYE to every call, wait briefly for the answers, stop.
    pub async fn shutdown(self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Input::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        }
        self.task.abort();
    }
}

async fn run(
    mut ua: Ua,
    mut rx: mpsc::UnboundedReceiver<Input>,
    mut media_rx: mpsc::UnboundedReceiver<(LegId, MediaEnd)>,
) {
    let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        let deadline = ua.next_deadline();
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                match input {
                    Input::Datagram(bytes, from) => ua.on_datagram(bytes, from),
                    Input::Stream(m, peer) => ua.on_message(*m, peer),
                    Input::TcpOpened(id, tx) => { ua.tcp.insert(id, tx); }
                    Input::TcpClosed(id) => { ua.tcp.remove(&id); }
                    Input::Dial(cmd) => ua.on_dial(cmd),
                    Input::Shutdown(done) => {
                        let ids: Vec<String> = ua.calls.keys().cloned().collect();
                        tracing::info!(calls = ids.len(), "SIP shutdown: sending BYE to every call");
                        for id in ids {
                            ua.end_call(&id, true);
                        }
                        // Give the BYEs a moment to be answered.
                        stopping = Some((done, Instant::now() + Duration::from_millis(500)));
                    }
                }
            }
            ended = media_rx.recv() => {
                if let Some((leg, why)) = ended {
                    ua.on_media_end(leg, why);
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => ua.fire_timers(),
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
        }
        if let Some((_, until)) = &stopping {
            if Instant::now() >= *until || ua.layer.is_empty() {
                if let Some((done, _)) = stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, tx: mpsc::UnboundedSender<Input>, metrics: SipMetrics) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if n > MAX_DATAGRAM {
                    metrics.sip_oversized.inc();
                    continue;
                }
                if tx
                    .send(Input::Datagram(Bytes::copy_from_slice(&buf[..n]), from))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "UDP receive error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse_datagram(Bytes::from(text.replace('\n', "\r\n")), &Limits::datagram()).unwrap()
        {
            Message::Request(r) => r,
            _ => panic!("not a request"),
        }
    }

    const BASE: &str = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@y>\nCall-ID: c1\nMax-Forwards: 70\n";

    #[test]
    fn prechecks() {
        let r = req(&format!(
            "OPTIONS sip:x SIP/2.0\n{BASE}CSeq: 1 OPTIONS\nContent-Length: 0\n\n"
        ));
        assert!(precheck(&r).is_none());
        let r = req(&format!(
            "FOO sip:x SIP/2.0\n{BASE}CSeq: 1 FOO\nContent-Length: 0\n\n"
        ));
        assert_eq!(precheck(&r).map(|p| p.0), Some(501));
        let r = req(&format!(
            "REGISTER sip:x SIP/2.0\n{BASE}CSeq: 1 REGISTER\nContent-Length: 0\n\n"
        ));
        assert_eq!(precheck(&r).map(|p| p.0), Some(405));
        let r = req(&format!(
            "OPTIONS sip:x SIP/2.0\n{BASE}CSeq: 1 INVITE\nContent-Length: 0\n\n"
        ));
        assert_eq!(precheck(&r).map(|p| p.0), Some(400));
        let r = req(&format!(
            "OPTIONS tel:+15551234 SIP/2.0\n{BASE}CSeq: 1 OPTIONS\nContent-Length: 0\n\n"
        ));
        assert_eq!(precheck(&r).map(|p| p.0), Some(416));
        let r = req(&format!("OPTIONS sip:x SIP/2.0\n{BASE}CSeq: 1 OPTIONS\nRequire: foo, bar\nContent-Length: 0\n\n"));
        let (code, _, headers) = precheck(&r).unwrap();
        assert_eq!(code, 420);
        assert_eq!(headers[0].1, "foo, bar");
        let r = req(&format!("INVITE sip:x SIP/2.0\n{BASE}CSeq: 1 INVITE\nContent-Type: text/plain\nContent-Length: 2\n\nhi"));
        assert_eq!(precheck(&r).map(|p| p.0), Some(415));
        let r = req(&format!("INVITE sip:x SIP/2.0\n{BASE}CSeq: 1 INVITE\nAccept: text/nothing\nContent-Length: 0\n\n"));
        assert_eq!(precheck(&r).map(|p| p.0), Some(406));
    }

    #[test]
    fn crude_400_needs_a_request_with_via() {
        let reply = crude_400(
            b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nTo: <sip:x>\r\nBroken\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(reply.to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 1.2.3.4\r\n"));
        assert!(crude_400(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
        assert!(crude_400(b"garbage").is_none());
        assert!(crude_400(b"INVITE sip:x SIP/2.0\r\nTo: x\r\n\r\n").is_none());
    }
}
