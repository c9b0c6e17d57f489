//! A raw SIP client over UDP, for what sipp cannot do (reuse another call's Call-ID,
//! send any header, watch what the gateway sends back).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::Gateway;

/// A raw SIP client over UDP (for what sipp cannot do: reuse another call's Call-ID).
pub struct RawSip {
    sock: std::net::UdpSocket,
    to: String,
}

impl RawSip {
    pub fn new(g: &Gateway) -> RawSip {
        RawSip::from(g, "127.0.0.1".parse().unwrap())
    }

    /// From a given loopback address (127.0.0.0/8 are all local).
    pub fn from(g: &Gateway, ip: IpAddr) -> RawSip {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        RawSip {
            sock,
            to: format!("127.0.0.1:{}", g.sip_port),
        }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    pub fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), &self.to).unwrap();
    }

    /// The first final response (≥ 200) within 5 s.
    pub fn final_response(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
                if text.starts_with("SIP/2.0 ") && code >= 200 {
                    return text;
                }
            }
        }
        panic!("no final response");
    }

    pub fn options(&self, branch: &str) -> String {
        let port = self.port();
        format!(
            "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n\
             From: <sip:o@127.0.0.1>;tag=o\r\nTo: <sip:{to}>\r\nCall-ID: opt-{branch}\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = self.to
        )
    }

    pub fn invite(&self, call_id: &str, branch: &str, token: &str, media_port: u16) -> String {
        self.invite_with(call_id, branch, token, media_port, "")
    }

    /// An INVITE with `extra` header lines (each ending in CRLF) after the Contact.
    pub fn invite_with(
        &self,
        call_id: &str,
        branch: &str,
        token: &str,
        media_port: u16,
        extra: &str,
    ) -> String {
        let sdp = format!(
            "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        let port = self.port();
        format!(
            "INVITE sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n\
             From: <sip:raw@127.0.0.1:{port}>;tag=raw1\r\nTo: <sip:{to}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:raw@127.0.0.1:{port}>\r\n{extra}Max-Forwards: 70\r\n\
             User-To-User: {token};encoding=jwt\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            to = self.to
        )
    }

    pub fn in_dialog(
        &self,
        method: &str,
        cseq: u32,
        call_id: &str,
        to_tag: &str,
        branch: &str,
    ) -> String {
        let port = self.port();
        format!(
            "{method} sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n\
             From: <sip:raw@127.0.0.1:{port}>;tag=raw1\r\nTo: <sip:{to}>;tag={to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = self.to
        )
    }

    /// The To tag of a response.
    pub fn to_tag(response: &str) -> String {
        response
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("to:"))
            .and_then(|l| l.split(";tag=").nth(1))
            .expect("a To tag")
            .trim()
            .to_string()
    }

    /// The next request of `method` within 10 s (answering nothing).
    pub fn request(&self, method: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if text.starts_with(&format!("{method} ")) {
                    return text;
                }
            }
        }
        panic!("no {method} request");
    }
}
