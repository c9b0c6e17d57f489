//! Control of a participant's SIP call from the control plane: hold and resume (the
//! SIP side renegotiates with the phone; this module only carries the command and its
//! outcome).

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
}

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
        let Some(tx) = self.tx.get() else {
            return Err(CallError::NoCall);
        };
        let (reply, outcome) = oneshot::channel();
        tx.send(CallCommand::Hold {
            participant_id,
            hold,
            reply,
        })
        .map_err(|_| CallError::NoCall)?;
        match tokio::time::timeout(CALL_COMMAND_TIMEOUT, outcome).await {
            Ok(Ok(r)) => r,
            // The SIP side dropped it (stopping) or never answered.
            _ => Err(CallError::NoAnswer),
        }
    }
}
