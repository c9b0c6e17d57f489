//! Control of a participant's SIP call from the control plane: hold and resume (the
//! SIP side renegotiates with the phone), and transfer (the SIP side asks the phone's
//! side to call elsewhere, REFER); this module only carries the command and its outcome.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Longest wait for the SIP side's outcome (a re-INVITE's transaction ends in 32 s).
pub const CALL_COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// Why a command to a call did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the participant has no SIP call on this node")]
    NoCall,
    #[error("the call is renegotiating its media; try again")]
    Busy,
    #[error("the phone refused ({0})")]
    Refused(String),
    #[error("the phone did not answer; the call was ended")]
    NoAnswer,
    #[error("the SIP side gave no outcome in time")]
    NoOutcome,
}

/// How a transfer of ours (REFER) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The target answered the phone's side; we ended our call.
    Completed,
    /// The REFER was refused, or the target refused the call (the status line).
    Rejected(String),
    /// The target did not answer in time (ours, or the phone side's: 408, 480, 487).
    RingingTimeout,
    /// The call ended before the transfer did.
    CallEnded,
}

impl TransferOutcome {
    /// The API's name of the outcome.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransferOutcome::Completed => "COMPLETED",
            TransferOutcome::Rejected(_) => "REJECTED",
            TransferOutcome::RingingTimeout => "RINGING_TIMEOUT",
            TransferOutcome::CallEnded => "CALL_ENDED",
        }
    }
}

/// The longest ringing time a transfer may be given.
pub const MAX_TRANSFER_RINGING: Duration = Duration::from_secs(120);

/// A command for a participant's SIP call.
#[derive(Debug)]
pub enum CallCommand {
    /// Hold (`hold`) or resume the participant's call: a re-INVITE `sendonly` or
    /// `sendrecv`; the reply comes with the phone's answer.
    Hold {
        participant_id: Uuid,
        hold: bool,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// Ask the phone's side to call `to` instead (REFER, blind): the reply comes with
    /// the outcome its NOTIFYs report.
    Transfer {
        participant_id: Uuid,
        /// A `sip:`, `sips:` or `tel:` URI.
        to: String,
        reply: oneshot::Sender<Result<TransferOutcome, CallError>>,
    },
}

/// Where call commands go (the SIP side), set once at startup.
#[derive(Debug, Default)]
pub struct CallControl {
    tx: std::sync::OnceLock<mpsc::UnboundedSender<CallCommand>>,
}

impl CallControl {
    pub fn set(&self, tx: mpsc::UnboundedSender<CallCommand>) {
        let _ = self.tx.set(tx);
    }

    /// Hold or resume `participant_id`'s call; the outcome once the phone answered.
    pub async fn hold(&self, participant_id: Uuid, hold: bool) -> Result<(), CallError> {
        let command = |reply| CallCommand::Hold {
            participant_id,
            hold,
            reply,
        };
        let answer = self.command(command, CALL_COMMAND_TIMEOUT).await?;
        answer.ok_or(CallError::NoOutcome)
    }

    /// Transfer `participant_id`'s call to `to` (see [`CallCommand::Transfer`]); a
    /// target that has not answered within `ringing` is a ringing timeout (the call
    /// stays as it was).
    pub async fn transfer(
        &self,
        participant_id: Uuid,
        to: String,
        ringing: Duration,
    ) -> Result<TransferOutcome, CallError> {
        let command = |reply| CallCommand::Transfer {
            participant_id,
            to,
            reply,
        };
        let answer = self.command(command, ringing.min(MAX_TRANSFER_RINGING));
        Ok(answer.await?.unwrap_or(TransferOutcome::RingingTimeout))
    }

    /// Send the command `make` builds around its reply and wait at most `limit` for the
    /// answer (`None`: none in time; the SIP side dropping it is `NoOutcome`).
    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CallError>>) -> CallCommand,
        limit: Duration,
    ) -> Result<Option<T>, CallError> {
        let Some(tx) = self.tx.get() else {
            return Err(CallError::NoCall);
        };
        let (reply, outcome) = oneshot::channel();
        tx.send(make(reply)).map_err(|_| CallError::NoCall)?;
        match tokio::time::timeout(limit, outcome).await {
            Ok(Ok(answer)) => answer.map(Some),
            // The SIP side dropped it (stopping).
            Ok(Err(_)) => Err(CallError::NoOutcome),
            Err(_) => Ok(None),
        }
    }
}

/// Whether `to` may be a transfer target: a `sip:`, `sips:` or `tel:` URI of printable
/// characters without spaces, quotes or angle brackets, at most 256 of them.
pub fn valid_transfer_target(to: &str) -> bool {
    let scheme = ["sip:", "sips:", "tel:"].iter().any(|s| {
        to.len() > s.len() && to.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s))
    });
    scheme
        && to.len() <= 256
        && !to
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_targets() {
        assert!(valid_transfer_target("sip:2001@pbx.example"));
        assert!(valid_transfer_target("SIPS:2001@pbx.example"));
        assert!(valid_transfer_target("tel:+15551234567"));
        assert!(!valid_transfer_target("sip:"));
        assert!(!valid_transfer_target("http://x"));
        assert!(!valid_transfer_target("sip:a b@c"));
        assert!(!valid_transfer_target("sip:<a>@c"));
        assert!(!valid_transfer_target(&format!("sip:{}", "a".repeat(300))));
        // Multi-byte text where a scheme would end is refused, never sliced through.
        assert!(!valid_transfer_target("si€:2001@pbx"));
        assert!(!valid_transfer_target("t€l:1"));
    }
}
