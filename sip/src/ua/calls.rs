//! The one call table: every call the user agent holds — answered or placed and
//! ringing — by Call-ID, with the indexes to them (media leg, REST dialog) kept in step
//! here and nowhere else (our INVITEs' transactions are in the client table).

use std::collections::HashMap;

use patchbay_conference::media::session::LegId;
use uuid::Uuid;

use super::call::Call;
use super::uac::Outgoing;

#[derive(Default)]
pub(super) struct CallTable {
    /// Calls with a dialog (we answered, or our INVITE was answered).
    calls: HashMap<String, Call>,
    /// Calls we placed that have no final answer yet.
    ringing: HashMap<String, Outgoing>,
    by_leg: HashMap<LegId, String>,
    /// REST dialog (`POST …/dialogs`) → its call, ringing or answered.
    by_dialog: HashMap<Uuid, String>,
}

impl CallTable {
    pub fn insert(&mut self, call: Call) {
        let id = call.dialog.call_id.clone();
        self.by_leg.insert(call.leg, id.clone());
        if let Some(d) = call.placed_for {
            self.by_dialog.insert(d, id.clone());
        }
        self.calls.insert(id, call);
    }

    /// Remove a call and every index to it.
    pub fn remove(&mut self, call_id: &str) -> Option<Call> {
        let call = self.calls.remove(call_id)?;
        self.by_leg.remove(&call.leg);
        if let Some(d) = call.placed_for {
            self.by_dialog.remove(&d);
        }
        Some(call)
    }

    pub fn get(&self, call_id: &str) -> Option<&Call> {
        self.calls.get(call_id)
    }

    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut Call> {
        self.calls.get_mut(call_id)
    }

    pub fn contains(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }

    /// The Call-IDs of a participant's inbound calls.
    pub fn of_participant(&self, participant_id: Uuid) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(_, c)| c.owner.participant_id == participant_id && c.placed_for.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The Call-ID of an answered call placed (a REST dialog) for a participant.
    pub fn placed_for_participant(&self, participant_id: Uuid) -> Option<String> {
        self.calls
            .iter()
            .find(|(_, c)| c.owner.participant_id == participant_id && c.placed_for.is_some())
            .map(|(id, _)| id.clone())
    }

    /// The Call-IDs of the calls with a dialog.
    pub fn ids(&self) -> Vec<String> {
        self.calls.keys().cloned().collect()
    }

    /// The call (answered or ringing) of a media leg.
    pub fn of_leg(&self, leg: LegId) -> Option<&str> {
        self.by_leg.get(&leg).map(String::as_str)
    }

    /// The call (answered or ringing) of a REST dialog.
    pub fn of_dialog(&self, dialog_id: Uuid) -> Option<&str> {
        self.by_dialog.get(&dialog_id).map(String::as_str)
    }

    // ---- calls we placed, before their final answer ----

    pub fn ring(&mut self, out: Outgoing) {
        let id = out.call_id().to_string();
        self.by_leg.insert(out.leg(), id.clone());
        self.by_dialog.insert(out.dialog_id(), id.clone());
        self.ringing.insert(id, out);
    }

    /// Take a ringing call out to work on it; its indexes stay. Put it back with
    /// [`CallTable::put_back`], answer it with [`CallTable::insert`], or drop it with
    /// [`CallTable::forget`].
    pub fn take_ringing(&mut self, call_id: &str) -> Option<Outgoing> {
        self.ringing.remove(call_id)
    }

    pub fn put_back(&mut self, out: Outgoing) {
        self.ringing.insert(out.call_id().to_string(), out);
    }

    /// A ringing call taken out and ended without an answer: its indexes go.
    pub fn forget(&mut self, out: &Outgoing) {
        self.by_leg.remove(&out.leg());
        self.by_dialog.remove(&out.dialog_id());
    }
}
