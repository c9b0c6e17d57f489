//! The user agent: a sans-IO core (`Ua`) that owns the sipx transaction layer, the
//! call table and the timers. It is handed inputs with the time (a datagram or stream
//! message with its source, a timer, a command of the control plane, the answer to
//! one of its questions) and queues outputs its shell carries out (`io.rs`: send,
//! connect, ask); it never reads the clock, touches a socket or spawns a task. The
//! shell (`runner.rs`) owns the sockets, connections, tasks and RTP ports, feeds the
//! core and fires its timers; `flow_tests` drives the core with fake time.
//!
//! Where things are: this file routes messages and transaction outputs and ends
//! calls; `dialog.rs` is the sans-IO RFC 3261 dialog (route set, CSeq, glare, 2xx
//! retransmission); `calls.rs` the one call table; `call.rs` a call's media;
//! `clients.rs` the one table of our client transactions and their owners;
//! `requests.rs` the one request builder; `identify.rs` who a new INVITE's caller is
//! (token, inbound rule, Replaces); `uas.rs` calls we answer; `uac.rs` dialogs we
//! place (`dialog_reports.rs` what becomes of them); `hold.rs` our re-INVITEs; `transfer.rs` a phone's REFER, `referring.rs`
//! ours; `registering.rs` (and the sans-IO `registration.rs`) REGISTER; `trunk.rs`
//! the next hop, its connections and OPTIONS pings; `streams.rs` TCP/TLS;
//! `addressing.rs` transports and the one Via/Contact formatter; `message.rs`
//! prechecks and response building; `admission.rs` the per-source cap.
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
use sipx_sip::headers::To;
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
use crate::sdp::{self, Crypto, Negotiated, SrtpMode};
use crate::uui;

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY";
const SERVER: &str = "patchbay";
/// Largest datagram we read.
const MAX_DATAGRAM: usize = 65_535;

/// SIP gateway settings.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: SocketAddr,
    /// Address bound for RTP (and advertised, unless `public_ip` is set).
    pub media_ip: IpAddr,
    /// Address advertised in SDP `c=`, Contact and Via instead of `media_ip` (a public
    /// address behind 1:1 NAT that is not on an interface).
    pub public_ip: Option<IpAddr>,
    pub rtp_ports: (u16, u16),
    pub rtp_timeout: Duration,
    /// Where dialogs (outbound calls) go; none: dialogs are refused.
    pub trunk: Option<SipTrunk>,
    pub tcp: TcpLimits,
    /// Server transactions at once from one IP address (more get 503).
    pub max_transactions_per_source: usize,
    /// The TLS listener, if any.
    pub tls: Option<SipTls>,
    /// CAs trusted for TLS trunks and proxies (PEM); none: the Web PKI roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Dialogs go through this proxy (a pre-loaded loose route) when set.
    pub outbound_proxy: Option<SipHop>,
    /// OPTIONS to the trunk this often (zero: never).
    pub trunk_ping_interval: Duration,
    /// SRTP in our offers, and whether plain RTP is refused.
    pub srtp: SrtpMode,
    /// Accounts kept registered with a PBX or carrier.
    pub registrations: Vec<SipRegistration>,
    /// Who calls without a token are (none: they get 403).
    pub inbound: Option<InboundRoute>,
    /// Held calls hear the music on hold (the media hub has it) rather than nothing.
    pub music_on_hold: bool,
    /// Where a phone's REFER may transfer its call (prefixes of the target's user
    /// part; `*`: anywhere); empty: REFERs are refused.
    pub transfer_targets: Vec<String>,
}

/// The rule naming the participant of a call without a token.
#[derive(Clone)]
pub struct InboundRoute(pub Arc<dyn patchbay_conference::inbound::InboundRouter>);

impl std::fmt::Debug for InboundRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboundRoute")
    }
}

impl SipConfig {
    /// The address peers are told to reach us at (SDP, Contact, Via).
    pub fn advertised_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or(self.media_ip)
    }
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

/// Inputs queued for the user agent at most (datagrams beyond it are dropped and
/// counted in `patchbay_sip_input_dropped_total`).
const INPUT_QUEUE: usize = 4096;
/// INVITEs waiting at once for the cluster to place their session.
const MAX_PLACING: usize = 256;

/// What the user agent core is handed (with the time), from the network, the control
/// plane, the RTP legs and the answers to its own questions.
enum Input {
    Datagram(Bytes, SocketAddr),
    Stream(Box<Message>, Peer),
    /// A stream connection is up (accepted, or ours connected).
    StreamOpened(ConnId),
    /// A connection ended; why, when ours could not be opened.
    StreamClosed(ConnId, Option<String>),
    Dial(patchbay_conference::dialogs::DialCommand),
    /// Hold or resume a participant's call.
    Call(patchbay_conference::calls::CallCommand),
    /// A cluster decided where an INVITE's session runs (`placed`: the store answered).
    Placed {
        key: TransactionKey,
        req: Box<Request>,
        token: String,
        placed: bool,
    },
    /// The inbound rule answered for a call without a token.
    Routed {
        key: TransactionKey,
        req: Box<Request>,
        token: Result<String, patchbay_conference::inbound::Refused>,
    },
    /// The conference would not place the dialog a transfer of this participant asked for.
    TransferRefused(uuid::Uuid),
    /// A leg's media ended (RTP timeout, or the session removed it).
    MediaEnded(LegId, MediaEnd),
}

#[derive(Debug, Clone)]
enum TimerKind {
    Tx(TransactionKey, Timer),
    /// Retransmit the 2xx of a call until its ACK (RFC 3261 §13.3.1.4).
    Retransmit2xx(String),
    /// Time for an OPTIONS ping to the trunk.
    TrunkPing,
    /// Time for registration N (a REGISTER, or its binding's expiry).
    Register(usize),
}

/// The user agent core (sans-IO: see `io.rs`).
struct Ua {
    config: SipConfig,
    conference: Arc<Conference>,
    metrics: SipMetrics,
    /// The time of the input being handled.
    now: Instant,
    /// Work queued for the shell.
    out: std::collections::VecDeque<Out>,
    layer: TransactionLayer,
    timers_cfg: Timers,
    /// The stream connections (TCP and TLS, accepted or ours) that are open.
    open_conns: std::collections::HashSet<ConnId>,
    conn_ids: ConnIds,
    /// The TLS listener's port, if it listens.
    tls_port: Option<u16>,
    tx_peers: HashMap<TransactionKey, Peer>,
    /// Server transactions per source address, under a cap.
    admission: admission::TxAdmission,
    timers: BTreeMap<(Instant, u64), TimerKind>,
    tx_timers: HashMap<(TransactionKey, Timer), (Instant, u64)>,
    timer_seq: u64,
    /// Every call and its indexes.
    calls: calls::CallTable,
    legs: Box<dyn LegPorts>,
    /// Dialogs (outbound calls).
    trunk: Option<SipTrunk>,
    /// Our connection to each next hop over TCP or TLS.
    out_conns: HashMap<SocketAddr, ConnId>,
    /// Whether the shell can open TLS connections (a TLS next hop is configured).
    tls_client: bool,
    health: trunk::TrunkHealth,
    /// Call-IDs of INVITEs waiting for the cluster (a merged INVITE is refused).
    placing: std::collections::HashSet<String>,
    /// Our registrations with PBXs or carriers.
    registrations: registering::Registrations,
    /// Our client transactions and who each answers to.
    clients: clients::Clients,
    /// Transfers phones asked for (their REFERs), by participant.
    transfers: HashMap<uuid::Uuid, transfer::Transferring>,
    /// Our transfers (REFERs) under way, by call.
    referring: referring::Referring,
}

mod addressing;
mod admission;
mod call;
mod calls;
mod clients;
mod dialog;
mod dialog_reports;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod fuzz_tests;
mod hold;
mod identify;
mod io;
mod message;
mod referring;
mod registering;
mod registration;
mod requests;
mod runner;
mod streams;
mod transfer;
mod trunk;
mod uac;
mod uas;
use addressing::*;
use call::*;
use io::*;
use message::*;
pub use patchbay_config::{SipHop, SipRegistration, SipTls, SipTransport, SipTrunk};
pub use patchbay_tls::{TlsFiles, TlsServer};
use requests::OutRequest;
pub use runner::SipGateway;

impl Ua {
    /// A new leg's id and RTP endpoint (an even/odd port pair on `media_ip`).
    fn start_leg(&mut self) -> Result<(LegId, RtpLeg), String> {
        let leg = self.conference.media().new_leg();
        let rtp = self.legs.open(leg)?;
        Ok((leg, rtp))
    }

    fn send_bytes(&mut self, bytes: &[u8], peer: &Peer) {
        self.out
            .push_back(Out::Send(*peer, Bytes::copy_from_slice(bytes)));
    }

    fn send_message(&mut self, m: &Message, peer: &Peer) {
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
        let id = self.schedule(self.now + after, TimerKind::Tx(key.clone(), timer));
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
        let now = self.now;
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
                TimerKind::TrunkPing => self.ping_trunk(),
                TimerKind::Register(i) => self.registration_timer(i),
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
                    self.client_ended(key);
                    self.tx_peers.remove(key);
                    self.admission.closed(key);
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
                Method::Refer => self.on_refer(key, &req),
                Method::Notify => self.on_notify(key, &req),
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
            // Answers to our requests, to whoever sent them.
            TuEvent::Response(r) => self.on_client_answer(key, clients::Answer::Response(&r)),
            TuEvent::Timeout => self.on_client_answer(key, clients::Answer::Timeout),
            TuEvent::TransportError => self.on_client_answer(key, clients::Answer::TransportError),
            _ => {}
        }
    }

    /// Remove a call, leave its session, optionally sending BYE to the caller.
    fn end_call(&mut self, call_id: &str, send_bye: bool) {
        // Where the BYE goes (a dialog's lost trunk connection opened again).
        let peer = if send_bye {
            self.call_peer(call_id)
        } else {
            None
        };
        let Some(mut call) = self.calls.remove(call_id) else {
            return;
        };
        // Its leg leaves whatever session (or the lobby) it is in now.
        call.media = None;
        self.referring_call_ended(call_id);
        self.metrics.sip_calls_active.dec();
        if send_bye {
            call.peer = peer.unwrap_or(call.peer);
            if let Some(bye) = self.build_bye(&mut call) {
                let peer = call.peer;
                self.send_client(bye, peer, clients::Owner::Nobody);
            }
        }
        tracing::info!(call_id, leg = %call.leg, role = ?call.dialog.role, bye = send_bye, "call ended");
        self.dialog_call_ended(call.placed_for, send_bye);
    }

    /// Our BYE: to the remote target through the route set (loose routing), with the
    /// dialog's next CSeq.
    fn build_bye(&self, call: &mut Call) -> Option<Request> {
        let cseq = call.dialog.next_cseq();
        let d = &call.dialog;
        let bye = OutRequest::in_dialog(Method::Bye, d, cseq);
        self.build_request_to(&bye, d.remote_target.clone(), &call.peer)
    }

    fn on_media_end(&mut self, leg: LegId, why: MediaEnd) {
        let Some(call_id) = self.calls.of_leg(leg).map(str::to_string) else {
            return;
        };
        if !self.calls.contains(&call_id) {
            // A dialog still ringing with early media: its member was removed.
            if let Some(out) = self.calls.take_ringing(&call_id) {
                let dialog_id = out.dialog_id();
                self.calls.put_back(out);
                tracing::info!(%dialog_id, %leg, ?why, "dialog: cancelled from the session");
                self.hang_up_dialog(dialog_id);
            }
            return;
        }
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
