//! Typed identities of the session core.

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

/// A SIP leg (unique in the process; chosen by the SIP side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A device's signaling connection (unique in the process; chosen by the API side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A browser device: the participant it belongs to and the SDK's `uniqueId`. Another
/// participant choosing the same `uniqueId` names a different device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub participant_id: Uuid,
    pub unique_id: Arc<str>,
}

impl DeviceKey {
    pub fn new(participant_id: Uuid, unique_id: &str) -> DeviceKey {
        DeviceKey {
            participant_id,
            unique_id: Arc::from(unique_id),
        }
    }
}

/// A device inside one core: small, never reused (the hot path's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct DeviceId(pub(super) u32);

/// A peer connection of a device (stable while it lives, never reused by that device).
/// A v3 device's connections are [`PcId::V3_PUBLISH`] and [`PcId::V3_SUBSCRIBE`]; a v2
/// device's count up from 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct PcId(pub(super) u32);

impl PcId {
    pub(super) const V3_PUBLISH: PcId = PcId(0);
    pub(super) const V3_SUBSCRIBE: PcId = PcId(1);
    pub(super) const FIRST_V2: PcId = PcId(2);
}

/// Where forwarded media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// A SIP leg's audio (encoded to Opus for browsers).
    Leg(LegId),
    /// A track a device publishes (its connection and mid there).
    Track(DeviceId, PcId, str0m::media::Mid),
}
