//! Patchbay's domain and media core.
//!
//! Knows nothing about HTTP or SIP syntax: the `api` and `sip` crates translate
//! their protocols into calls on [`Conference`].

pub mod calls;
pub mod dialogs;
pub mod events;
#[cfg(test)]
mod fuzz_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod inbound;
pub mod media;
pub mod model;
pub mod recording;
pub mod registry;
pub mod resolver;
pub mod store;
#[cfg(any(test, feature = "fuzzing"))]
pub mod testing;
pub mod token;
pub mod webhooks;

pub use model::{
    DeviceApiVersion, MediaStream, Participant, ParticipantSubscription, PublishPermission,
    Session, StreamProtocol, Subscriptions, UnixMillis,
};
pub use registry::{
    system_clock, Change, ChangeKind, Clock, Conference, ConferenceError, JoinError,
    NewParticipant, NewRecording, Options, Placement, RecordingHome, RecordingOptions,
    MAX_PARTICIPANTS_PER_SESSION, MAX_TAG_CHARS,
};
