//! What becomes of the dialogs we place, told once per state: to the participant's
//! application (`onSipDialogStateChange`) and, when a phone's transfer waits for the
//! dialog, to that phone (NOTIFY with the SIP status).

use patchbay_conference::dialogs::DialogState;
use uuid::Uuid;

use super::*;

/// What became of a dialog we place (see `Ua::report`).
pub(super) enum Progress<'a> {
    Calling,
    Ringing,
    Answered,
    /// It ended unanswered: the SIP status for a transferring phone, the callback's
    /// `reason` and `details`.
    Failed {
        status: u16,
        phrase: &'a str,
        reason: &'a str,
        details: String,
    },
}

impl Ua {
    /// What became of a dialog we place, told once: to its participant's application
    /// (`onSipDialogStateChange`) and, when a phone's transfer waits for it, to that
    /// phone (a NOTIFY with the SIP status).
    pub(super) fn report(&mut self, participant_id: Uuid, dialog_id: Uuid, progress: Progress<'_>) {
        let (state, sip) = match &progress {
            Progress::Calling => (DialogState::Calling, None),
            Progress::Ringing => (DialogState::Ringing, Some((180, "Ringing"))),
            Progress::Answered => (DialogState::Answered, Some((200, "OK"))),
            Progress::Failed { status, phrase, .. } => {
                (DialogState::Terminated, Some((*status, *phrase)))
            }
        };
        if let Some((status, phrase)) = sip {
            self.transfer_progress(participant_id, dialog_id, status, phrase);
        }
        let (reason, details) = match progress {
            Progress::Failed {
                reason, details, ..
            } => (Some(reason.to_string()), Some(details)),
            _ => (None, None),
        };
        self.conference
            .dialog_progress(dialog_id, state, reason, details);
    }

    /// A dialog that could not be placed or used: 503 to a transfer's phone.
    pub(super) fn fail_dialog(&mut self, participant_id: Uuid, dialog_id: Uuid, details: String) {
        let progress = Progress::Failed {
            status: 503,
            phrase: "Service Unavailable",
            reason: "ERROR",
            details,
        };
        self.report(participant_id, dialog_id, progress);
    }

    /// A call ended (either side): the REST dialog it was placed for, if any, is over.
    pub(super) fn dialog_call_ended(&mut self, placed_for: Option<Uuid>, we_hung_up: bool) {
        let Some(dialog_id) = placed_for else {
            return;
        };
        let details = if we_hung_up {
            "hung up by the gateway"
        } else {
            "the far end hung up"
        };
        self.conference.dialog_progress(
            dialog_id,
            DialogState::Terminated,
            None,
            Some(details.into()),
        );
    }
}
