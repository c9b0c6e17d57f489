//! Our client transactions and who each answers to: one table, filled where a request
//! is sent ([`Ua::send_client`]) and emptied when its transaction ends, so that an
//! answer finds its owner by lookup (not by asking each owner in turn) and a closed
//! connection fails exactly the transactions that were on it.

use sipx_sip::Response;

use super::*;

/// Who a client transaction of ours answers to.
pub(super) enum Owner {
    /// A dialog's INVITE (the call's Call-ID): kept until the transaction ends, for
    /// the 2xx retransmissions it must ACK again.
    Invite(String),
    /// An OPTIONS ping to the trunk.
    Ping,
    /// Registration `i`'s REGISTER.
    Register(usize),
    /// A re-INVITE of ours (hold, resume), kept for its 2xx retransmissions.
    Reinvite(hold::Reinvite),
    /// A REFER of ours in a call (its Call-ID).
    Refer(String),
    /// Nobody waits for the answer (BYE, CANCEL, NOTIFY; a ping or REGISTER answered).
    Nobody,
}

/// How a client transaction answered.
pub(super) enum Answer<'a> {
    Response(&'a Response),
    /// No final answer in time (timer B or F).
    Timeout,
    /// The transport refused the request.
    TransportError,
    /// Its connection closed (or could not be opened), for this reason.
    ConnectionLost(&'a str),
}

#[derive(Default)]
pub(super) struct Clients {
    owners: HashMap<TransactionKey, Owner>,
}

impl Clients {
    pub(super) fn insert(&mut self, key: TransactionKey, owner: Owner) {
        self.owners.insert(key, owner);
    }

    pub(super) fn get_mut(&mut self, key: &TransactionKey) -> Option<&mut Owner> {
        self.owners.get_mut(key)
    }

    /// Nobody waits for `key`'s answer any more (its transaction may still run).
    pub(super) fn release(&mut self, key: &TransactionKey) {
        if let Some(o) = self.owners.get_mut(key) {
            *o = Owner::Nobody;
        }
    }

    /// The transaction ended: its owner, if it had one.
    pub(super) fn ended(&mut self, key: &TransactionKey) -> Option<Owner> {
        self.owners.remove(key)
    }

    /// Whether a ping is waiting for its answer.
    pub(super) fn pinging(&self) -> bool {
        self.owners.values().any(|o| matches!(o, Owner::Ping))
    }

    /// The transactions `f` picks (those on a connection that closed).
    pub(super) fn keys_where(&self, f: impl Fn(&TransactionKey) -> bool) -> Vec<TransactionKey> {
        self.owners.keys().filter(|k| f(k)).cloned().collect()
    }
}

impl Ua {
    /// An answer (or the lack of one) to a client transaction of ours, to its owner.
    pub(super) fn on_client_answer(&mut self, key: &TransactionKey, answer: Answer<'_>) {
        let resp = match answer {
            Answer::Response(r) => Some(r),
            _ => None,
        };
        let final_answer = resp.is_none_or(|r| r.status.code() >= 200);
        match self.clients.get_mut(key) {
            None | Some(Owner::Nobody) => {}
            Some(Owner::Invite(_)) => match answer {
                Answer::Response(r) => self.on_invite_response(key, r),
                Answer::Timeout => self.on_invite_failed(key, "no answer from the SIP trunk"),
                Answer::TransportError => {
                    self.on_invite_failed(key, "the SIP trunk is unreachable")
                }
                Answer::ConnectionLost(why) => self.on_invite_failed(key, why),
            },
            Some(Owner::Ping) => {
                if final_answer {
                    self.clients.release(key);
                    self.on_ping_result(resp.map(|r| r.status.code()));
                }
            }
            Some(Owner::Register(i)) => {
                let i = *i;
                if final_answer {
                    self.clients.release(key);
                    self.on_register_result(i, resp);
                }
            }
            Some(Owner::Reinvite(_)) => {
                self.on_reinvite_result(key, resp);
            }
            Some(Owner::Refer(call_id)) => {
                let call_id = call_id.clone();
                if final_answer {
                    self.clients.release(key);
                    self.on_refer_result(&call_id, resp);
                }
            }
        }
    }

    /// A client transaction ended (answered, timed out or failed for good).
    pub(super) fn client_ended(&mut self, key: &TransactionKey) {
        // Outcomes were reported on the answer (or its lack); a re-INVITE whose
        // transaction ended with none reported says so.
        if let Some(Owner::Reinvite(mut r)) = self.clients.ended(key) {
            r.no_outcome();
        }
    }

    /// A stream connection closed: the transactions waiting on it fail with `why`.
    pub(super) fn clients_lost(&mut self, id: ConnId, why: &str) {
        let tx_peers = &self.tx_peers;
        let lost = self.clients.keys_where(|k| {
            tx_peers
                .get(k)
                .is_some_and(|p| p.transport.conn() == Some(id))
        });
        for key in lost {
            self.on_client_answer(&key, Answer::ConnectionLost(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> TransactionKey {
        let text = format!(
            "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
             From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::datagram()) {
            Ok(Message::Request(r)) => TransactionKey::from_request(&r).expect("a key"),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn an_owner_is_found_until_its_transaction_ends() {
        let mut c = Clients::default();
        let (invite, ping, register) = (key("inv"), key("ping"), key("reg"));
        c.insert(invite.clone(), Owner::Invite("call-1".into()));
        c.insert(ping.clone(), Owner::Ping);
        c.insert(register.clone(), Owner::Register(3));
        assert!(c.pinging());
        assert!(matches!(c.get_mut(&invite), Some(Owner::Invite(id)) if id == "call-1"));
        assert!(matches!(c.get_mut(&register), Some(Owner::Register(3))));
        // Answered: nobody waits any more, but the transaction is still known.
        c.release(&ping);
        assert!(!c.pinging());
        assert!(matches!(c.get_mut(&ping), Some(Owner::Nobody)));
        // Ended: gone.
        assert!(matches!(c.ended(&ping), Some(Owner::Nobody)));
        assert!(c.get_mut(&ping).is_none());
        assert!(c.ended(&ping).is_none());
        // Those on a closed connection are picked by the caller's predicate.
        let mut on_conn = c.keys_where(|k| *k != register);
        on_conn.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(on_conn, vec![invite]);
    }
}
