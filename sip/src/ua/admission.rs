//! How many server transactions each source address holds, so that one peer cannot
//! fill the transaction layer (every transaction keeps its request for up to 32 s,
//! whatever it was answered): a new request over the cap is answered 503 statelessly.

use std::collections::HashMap;
use std::net::IpAddr;

use sipx_sip::TransactionKey;

pub(super) struct TxAdmission {
    max_per_source: usize,
    by_key: HashMap<TransactionKey, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
}

impl TxAdmission {
    pub(super) fn new(max_per_source: usize) -> TxAdmission {
        TxAdmission {
            max_per_source: max_per_source.max(1),
            by_key: HashMap::new(),
            per_source: HashMap::new(),
        }
    }

    /// Whether `source` may open one more server transaction.
    pub(super) fn has_room(&self, source: IpAddr) -> bool {
        self.per_source.get(&source).copied().unwrap_or(0) < self.max_per_source
    }

    /// A server transaction was created for a request from `source`.
    pub(super) fn opened(&mut self, key: TransactionKey, source: IpAddr) {
        if self.by_key.insert(key, source).is_none() {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
    }

    /// A transaction ended (server or client: client ones are not counted).
    pub(super) fn closed(&mut self, key: &TransactionKey) {
        let Some(source) = self.by_key.remove(key) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Server transactions open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sipx_sip::{parse_datagram, Limits, Message};

    fn key(branch: &str) -> TransactionKey {
        let text = format!(
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
             From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::datagram()) {
            Ok(Message::Request(r)) => TransactionKey::from_request(&r).expect("a key"),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn each_source_is_capped_on_its_own_and_room_comes_back() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut adm = TxAdmission::new(2);
        adm.opened(key("1"), a);
        adm.opened(key("1"), a); // the same transaction again: counted once
        assert!(adm.has_room(a));
        adm.opened(key("2"), a);
        assert!(!adm.has_room(a));
        assert!(adm.has_room(b), "another source is not affected");
        adm.closed(&key("9")); // not a counted transaction
        assert!(!adm.has_room(a));
        adm.closed(&key("1"));
        assert!(adm.has_room(a));
        adm.closed(&key("2"));
        assert_eq!(adm.open(), 0);
        assert!(adm.per_source.is_empty(), "no entry left per source");
    }
}
