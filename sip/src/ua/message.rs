//! SIP messages we build and check: prechecks of incoming requests, responses (in
//! a transaction, or crude ones for requests that did not parse), header helpers.

use super::*;

pub(super) fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(super) fn hn(name: &'static str) -> HeaderName {
    HeaderName::parse(&Bytes::from_static(name.as_bytes()))
}

/// Values of every header called `name` (case-insensitive, any spelling sipx knows).
pub(super) fn header_values<'a>(
    req: &'a Request,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    req.headers
        .iter()
        .filter(move |h| h.name().canonical().eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| h.raw_value())
}

/// Text from the network (a reason phrase, a sipfrag line) as at most 64 printable
/// characters, for logs and API answers.
pub(super) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_string()
}

pub(super) fn first_value(req: &Request, name: &str) -> Option<String> {
    header_values(req, name)
        .next()
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
}

/// A stateless 400 for a request that did not parse, from whatever header lines can be read.
pub(super) fn crude_400(raw: &[u8]) -> Option<Bytes> {
    crude_response(raw, "400 Bad Request")
}

/// A response with `status` (code and reason) to the request at the start of `raw`,
/// built from its raw header lines (for requests the parser refused).
pub(super) fn crude_response(raw: &[u8], status: &str) -> Option<Bytes> {
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
pub(super) type Refusal = (u16, &'static str, Vec<(&'static str, String)>);

pub(super) fn precheck(req: &Request) -> Option<Refusal> {
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
        Method::Invite
        | Method::Ack
        | Method::Bye
        | Method::Cancel
        | Method::Options
        | Method::Refer
        | Method::Notify => {}
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

/// A response to build: status, reason, our To tag, extra headers, body.
pub(super) struct Reply<'a> {
    code: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    headers: &'a [(&'a str, String)],
    body: Option<(&'a str, Bytes)>,
}

impl<'a> Reply<'a> {
    pub(super) fn new(code: u16, reason: &'a str) -> Reply<'a> {
        Reply {
            code,
            reason,
            to_tag: None,
            headers: &[],
            body: None,
        }
    }

    pub(super) fn tag(mut self, tag: &'a str) -> Reply<'a> {
        self.to_tag = Some(tag);
        self
    }

    pub(super) fn headers(mut self, headers: &'a [(&'a str, String)]) -> Reply<'a> {
        self.headers = headers;
        self
    }

    pub(super) fn body(mut self, content_type: &'a str, body: Bytes) -> Reply<'a> {
        self.body = Some((content_type, body));
        self
    }
}

pub(super) fn build_response(req: &Request, reply: Reply<'_>) -> Option<sipx_sip::Response> {
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
    let resp = b.build();
    // Headers copied from a malformed request (a To the parser took whole, say) can make a
    // response that does not parse: send none rather than garbage (RFC 3261 §8.2: a
    // request too malformed to answer is dropped).
    let wire = Message::Response(resp.clone()).to_bytes();
    matches!(
        parse_datagram(wire, &Limits::datagram()),
        Ok(Message::Response(_))
    )
    .then_some(resp)
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
