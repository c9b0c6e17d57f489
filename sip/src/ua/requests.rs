//! The one builder of requests we originate (pings, BYE, REGISTER): Via, Max-Forwards,
//! the route, From, To, Call-ID, CSeq, User-Agent, then whatever else the caller adds.

use super::*;

/// A request to build (the body, if any, is the caller's to add).
pub(super) struct OutRequest {
    pub method: Method,
    /// The Request-URI.
    pub uri: String,
    /// From and To as they go on the wire (a dialog's, byte for byte).
    pub from: Bytes,
    pub to: Bytes,
    pub call_id: String,
    pub cseq: u32,
    /// Route headers, in order (a dialog's route set, or the outbound proxy's).
    pub route: Vec<Bytes>,
    pub headers: Vec<(HeaderName, String)>,
    /// The Via to send (CANCEL repeats its INVITE's); none: a fresh branch.
    pub via: Option<String>,
    /// Content type and body.
    pub body: Option<(&'static str, Bytes)>,
}

impl OutRequest {
    /// A request in `d` (its From, To, Call-ID and route set) with CSeq `cseq`.
    pub(super) fn in_dialog(method: Method, d: &super::dialog::Dialog, cseq: u32) -> OutRequest {
        OutRequest {
            from: d.local_addr.clone(),
            to: d.remote_addr.clone(),
            call_id: d.call_id.clone(),
            cseq,
            route: d.route_set.clone(),
            ..OutRequest::new(method, "")
        }
    }

    pub(super) fn new(method: Method, uri: impl Into<String>) -> OutRequest {
        OutRequest {
            method,
            uri: uri.into(),
            from: Bytes::new(),
            to: Bytes::new(),
            call_id: String::new(),
            cseq: 1,
            route: Vec::new(),
            headers: Vec::new(),
            via: None,
            body: None,
        }
    }
}

impl Ua {
    /// `r` as a request to `peer` (a fresh Via branch); None if a part does not parse
    /// (nothing from the network goes into these but dialog state we already parsed).
    pub(super) fn build_request(&self, r: &OutRequest, peer: &Peer) -> Option<Request> {
        let uri = Uri::parse(Bytes::from(r.uri.clone())).ok()?;
        self.build_request_to(r, uri, peer)
    }

    /// Start a client transaction for `req` to `peer`, its answers going to `owner`
    /// (recorded before any of its outputs runs); None when the transaction layer
    /// refuses the request (nothing is recorded then).
    pub(super) fn send_client(
        &mut self,
        req: Request,
        peer: Peer,
        owner: clients::Owner,
    ) -> Option<TransactionKey> {
        let (key, outputs) = self.layer.send_request(req, peer.reliability())?;
        self.tx_peers.insert(key.clone(), peer);
        self.clients.insert(key.clone(), owner);
        self.run_outputs(&key, outputs);
        Some(key)
    }

    /// As [`Self::build_request`], to an already parsed Request-URI.
    pub(super) fn build_request_to(
        &self,
        r: &OutRequest,
        uri: Uri,
        peer: &Peer,
    ) -> Option<Request> {
        let mut b = RequestBuilder::new(r.method.clone(), uri)
            .header(
                HeaderName::Via,
                r.via.clone().unwrap_or_else(|| self.new_via(peer)),
            )
            .ok()?
            .max_forwards(70);
        for route in &r.route {
            b = b.header(hn("Route"), route.clone()).ok()?;
        }
        b = b
            .header(HeaderName::From, r.from.clone())
            .ok()?
            .header(HeaderName::To, r.to.clone())
            .ok()?
            .header(HeaderName::CallId, r.call_id.clone())
            .ok()?
            .cseq(r.cseq, &r.method)
            .ok()?
            .header(hn("User-Agent"), SERVER)
            .ok()?;
        for (name, value) in &r.headers {
            b = b.header(name.clone(), value.clone()).ok()?;
        }
        if let Some((content_type, body)) = &r.body {
            b = b
                .header(hn("Content-Type"), *content_type)
                .ok()?
                .body(body.clone());
        }
        Some(b.build())
    }
}
