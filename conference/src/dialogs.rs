//! Dialogs: outbound calls placed for a participant (third-party call control).
//!
//! The state machine is `NEW` → `CALLING` → `RINGING` → `ANSWERED` → `TERMINATED`
//! (any state may go to `TERMINATED`; states never go back). Each transition is
//! persisted and reported once, in order, to the [`crate::events::EventSink`]. The
//! SIP side places and ends the calls ([`DialCommand`]) and reports what happens
//! through [`crate::Conference::dialog_progress`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a dialog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DialogState {
    New,
    Calling,
    Ringing,
    Answered,
    Terminated,
}

impl DialogState {
    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::New => "NEW",
            DialogState::Calling => "CALLING",
            DialogState::Ringing => "RINGING",
            DialogState::Answered => "ANSWERED",
            DialogState::Terminated => "TERMINATED",
        }
    }

    pub fn parse(s: &str) -> Option<DialogState> {
        Some(match s {
            "NEW" => DialogState::New,
            "CALLING" => DialogState::Calling,
            "RINGING" => DialogState::Ringing,
            "ANSWERED" => DialogState::Answered,
            "TERMINATED" => DialogState::Terminated,
            _ => return None,
        })
    }

    /// Whether `next` may follow `self` (forward only; TERMINATED from anywhere).
    pub fn may_become(self, next: DialogState) -> bool {
        self != DialogState::Terminated && next > self
    }
}

/// What the application asked for (`data` of the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialogData {
    /// An E.164 number or a SIP URI.
    pub to: String,
    /// An E.164 number, `UNKNOWN` or `RESTRICTED`.
    pub from: String,
    /// Passed to the far end as a `User-to-User` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_to_user: Option<String>,
    /// A `Replaces` header for the INVITE (RFC 3891): a transfer a phone asked for
    /// with it in its `Refer-To` (attended), never from the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

impl DialogData {
    /// Check `to` and `from` (the API's 400s).
    pub fn validate(&self) -> Result<(), String> {
        if !is_e164(&self.to) && !is_sip_uri(&self.to) {
            return Err(format!(
                "data.to `{}` must be an E.164 number (+ and 2-15 digits) or a sip: URI",
                self.to
            ));
        }
        if !is_e164(&self.from) && self.from != "UNKNOWN" && self.from != "RESTRICTED" {
            return Err(format!(
                "data.from `{}` must be an E.164 number, UNKNOWN or RESTRICTED",
                self.from
            ));
        }
        if let Some(u) = &self.user_to_user {
            if u.len() > 1024 || u.chars().any(|c| c.is_control()) {
                return Err("data.userToUser must be at most 1024 printable characters".into());
            }
        }
        if let Some(r) = &self.replaces {
            if r.len() > 512 || r.chars().any(|c| c.is_control()) {
                return Err("Replaces must be at most 512 printable characters".into());
            }
        }
        Ok(())
    }
}

/// `+` then 2–15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `sip:` or `sips:`, a host, no spaces or angle brackets.
pub fn is_sip_uri(s: &str) -> bool {
    let rest = s
        .strip_prefix("sip:")
        .or_else(|| s.strip_prefix("sips:"))
        .unwrap_or("");
    let host = rest.rsplit('@').next().unwrap_or("");
    !host.is_empty()
        && !host.starts_with(';')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == '"')
}

/// A dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: Uuid,
    pub account_id: String,
    pub participant_id: Uuid,
    pub state: DialogState,
    pub data: DialogData,
    /// Why it ended (`eventData.reason`: `FAR END BUSY`, `ERROR`, …), if it failed.
    pub reason: Option<String>,
    /// More about it (`eventData.details`, e.g. the SIP status line).
    pub details: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Dialog {
    pub fn is_live(&self) -> bool {
        self.state != DialogState::Terminated
    }
}

/// A state change of a dialog (for the participant's `onSipDialogStateChange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogEvent {
    pub dialog: Dialog,
    pub callback_url: Option<String>,
    pub tag: Option<String>,
    pub at_ms: u64,
}

/// What the SIP side is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialCommand {
    /// Call `data.to` through the trunk for `participant_id`; report with `dialog_id`.
    Place {
        dialog_id: Uuid,
        participant_id: Uuid,
        data: DialogData,
    },
    /// End it: CANCEL before an answer, BYE after.
    Hangup { dialog_id: Uuid },
}

/// The `eventData.reason` for a failure status (RFC 3261 codes).
pub fn failure_reason(status: u16) -> &'static str {
    match status {
        486 | 600 => "FAR END BUSY",
        603 => "FAR END DECLINED",
        404 | 484 | 604 => "FAR END NOT FOUND",
        _ => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_go_forward() {
        use DialogState::*;
        assert!(New.may_become(Calling));
        assert!(Calling.may_become(Answered));
        assert!(Ringing.may_become(Terminated));
        assert!(!Ringing.may_become(Calling));
        assert!(!Terminated.may_become(Terminated));
        assert!(!Answered.may_become(Answered));
        for s in [New, Calling, Ringing, Answered, Terminated] {
            assert_eq!(DialogState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn numbers_and_uris() {
        let ok = |to: &str, from: &str| {
            DialogData {
                to: to.into(),
                from: from.into(),
                user_to_user: None,
                replaces: None,
            }
            .validate()
        };
        assert!(ok("+19195551212", "+18045551212").is_ok());
        assert!(ok("sip:alice@example.com", "RESTRICTED").is_ok());
        assert!(ok("sip:+1555@10.0.0.1:5070;transport=tcp", "UNKNOWN").is_ok());
        assert!(ok("19195551212", "+18045551212").is_err());
        assert!(ok("+0123", "+18045551212").is_err());
        assert!(ok("+1919555121212345", "+18045551212").is_err());
        assert!(ok("http://x", "+18045551212").is_err());
        assert!(ok("+19195551212", "anonymous").is_err());
        assert!(ok("sip:", "UNKNOWN").is_err());
        assert_eq!(failure_reason(486), "FAR END BUSY");
        assert_eq!(failure_reason(603), "FAR END DECLINED");
        assert_eq!(failure_reason(404), "FAR END NOT FOUND");
        assert_eq!(failure_reason(500), "ERROR");
    }
}
