//! A v3 device's subscribing connection as the browser holds it, handed from one owner
//! of the session to the next (another node of a cluster, or this process after a
//! restart).
//!
//! The SDK keeps its subscribing `RTCPeerConnection` when its WebSocket reconnects and
//! ignores every `sdpOffer` whose `sdpRevision` is not above the last one it answered.
//! A new owner's offer must therefore carry a higher revision and the browser's m-lines
//! first, in order, under the browser's mids (JSEP: a subsequent offer keeps every
//! m-section). Our WebRTC stack picks its own mids, so the new owner adds one inactive
//! m-line per old one and renames its mids to the browser's in every SDP it sends on that
//! connection (and back in every answer): a [`MidMap`]. The streams themselves come in
//! new m-lines, as any stream re-added after a removal does.

/// The kind of an m-line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Audio,
    Video,
    Application,
}

impl LineKind {
    fn as_str(self) -> &'static str {
        match self {
            LineKind::Audio => "audio",
            LineKind::Video => "video",
            LineKind::Application => "application",
        }
    }

    fn parse(s: &str) -> Option<LineKind> {
        match s {
            "audio" => Some(LineKind::Audio),
            "video" => Some(LineKind::Video),
            "application" => Some(LineKind::Application),
            _ => None,
        }
    }
}

/// Most m-lines a kept layout may have (a stored record is read back through this).
pub const MAX_LINES: usize = 512;
/// Longest mid kept (RFC 8843 allows any token; ours are 3 characters).
const MAX_MID: usize = 32;

/// The m-lines of the last offer a device's subscribing connection was sent, in
/// order, with that offer's `sdpRevision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeLayout {
    pub revision: u64,
    pub lines: Vec<(LineKind, String)>,
}

impl SubscribeLayout {
    /// `kind:mid` per line, separated by spaces.
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self
            .lines
            .iter()
            .map(|(k, mid)| format!("{}:{mid}", k.as_str()))
            .collect();
        parts.join(" ")
    }

    /// The inverse of [`encode`](Self::encode); `None` for anything malformed.
    pub fn decode(revision: u64, text: &str) -> Option<SubscribeLayout> {
        let mut lines = Vec::new();
        for part in text.split_whitespace() {
            let (kind, mid) = part.split_once(':')?;
            if mid.is_empty() || mid.len() > MAX_MID || lines.len() >= MAX_LINES {
                return None;
            }
            lines.push((LineKind::parse(kind)?, mid.to_string()));
        }
        Some(SubscribeLayout { revision, lines })
    }

    /// The layout an SDP we wrote describes (its `m=` lines and their mids).
    pub(super) fn of_sdp(revision: u64, sdp: &str) -> SubscribeLayout {
        let mut lines: Vec<(LineKind, String)> = Vec::new();
        let mut kind = None;
        for line in sdp.lines() {
            if let Some(m) = line.strip_prefix("m=") {
                kind = m.split(' ').next().and_then(LineKind::parse);
            } else if let Some(mid) = line.strip_prefix("a=mid:") {
                if let Some(k) = kind.take() {
                    lines.push((k, mid.trim().to_string()));
                }
            }
        }
        SubscribeLayout { revision, lines }
    }
}

/// Our mids and the browser's, for the m-lines a previous owner offered.
#[derive(Clone, Debug, Default)]
pub(super) struct MidMap {
    /// (ours, the browser's)
    pairs: Vec<(String, String)>,
}

impl MidMap {
    /// Pair the m-lines of `ours` (an offer we wrote) with `prior`'s, by position; `None`
    /// when the kinds do not line up (the browser would refuse the offer).
    pub(super) fn pair(ours: &SubscribeLayout, prior: &SubscribeLayout) -> Option<MidMap> {
        if ours.lines.len() < prior.lines.len() {
            return None;
        }
        let mut pairs = Vec::with_capacity(prior.lines.len());
        for ((k1, mine), (k2, theirs)) in ours.lines.iter().zip(&prior.lines) {
            if k1 != k2 {
                return None;
            }
            pairs.push((mine.clone(), theirs.clone()));
        }
        // A mid of ours on a later line that equals one of the browser's would be
        // ambiguous.
        let clash = ours.lines[prior.lines.len()..]
            .iter()
            .any(|(_, m)| pairs.iter().any(|(_, theirs)| theirs == m));
        (!clash).then_some(MidMap { pairs })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether a mid of ours would read as one of the browser's old m-lines.
    pub(super) fn clashes(&self, mid: &str) -> bool {
        self.pairs
            .iter()
            .any(|(ours, theirs)| theirs == mid && ours != mid)
    }

    /// An SDP of ours as the browser must see it.
    pub(super) fn outgoing(&self, sdp: &str) -> String {
        rename(
            sdp,
            self.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        )
    }

    /// The browser's SDP as our stack must see it.
    pub(super) fn incoming(&self, sdp: &str) -> String {
        rename(
            sdp,
            self.pairs.iter().map(|(a, b)| (b.as_str(), a.as_str())),
        )
    }
}

/// Rename mids in `a=mid:` lines and `a=group:BUNDLE` lists (every line ends in CRLF,
/// as SDP requires).
fn rename<'a>(sdp: &str, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let map = |mid: &str| -> String {
        pairs
            .clone()
            .find(|(from, _)| *from == mid)
            .map_or_else(|| mid.to_string(), |(_, to)| to.to_string())
    };
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.lines() {
        if let Some(mid) = line.strip_prefix("a=mid:") {
            out.push_str("a=mid:");
            out.push_str(&map(mid.trim()));
        } else if let Some(list) = line.strip_prefix("a=group:BUNDLE") {
            out.push_str("a=group:BUNDLE");
            for mid in list.split_whitespace() {
                out.push(' ');
                out.push_str(&map(mid));
            }
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str =
        "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE x0a y1b z2c\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:x0a\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:y1b\r\na=inactive\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:actpass\r\na=mid:z2c\r\na=sendonly\r\n";

    #[test]
    fn a_layout_round_trips_through_its_text() {
        let l = SubscribeLayout::of_sdp(7, SDP);
        assert_eq!(
            l.lines,
            [
                (LineKind::Application, "x0a".to_string()),
                (LineKind::Audio, "y1b".to_string()),
                (LineKind::Video, "z2c".to_string())
            ]
        );
        assert_eq!(l.encode(), "application:x0a audio:y1b video:z2c");
        assert_eq!(SubscribeLayout::decode(7, &l.encode()), Some(l));
        assert_eq!(SubscribeLayout::decode(1, "audio:"), None);
        assert_eq!(SubscribeLayout::decode(1, "text:abc"), None);
        assert_eq!(SubscribeLayout::decode(1, "audioabc"), None);
        let long = "audio:a ".repeat(MAX_LINES + 1);
        assert_eq!(SubscribeLayout::decode(1, &long), None);
    }

    #[test]
    fn mids_are_renamed_out_and_back_by_position() {
        let ours = SubscribeLayout::of_sdp(1, SDP);
        let prior = SubscribeLayout::decode(9, "application:AAA audio:BBB").unwrap();
        let map = MidMap::pair(&ours, &prior).unwrap();
        let out = map.outgoing(SDP);
        assert!(out.contains("a=group:BUNDLE AAA BBB z2c\r\n"), "{out}");
        assert!(out.contains("a=mid:AAA\r\n") && out.contains("a=mid:BBB\r\n"));
        assert!(out.contains("a=mid:z2c\r\n"));
        assert_eq!(map.incoming(&out), SDP);
        assert!(map.clashes("BBB") && !map.clashes("z2c"));
        // Kinds out of line, or fewer lines than the browser has: no pairing.
        let wrong = SubscribeLayout::decode(9, "audio:AAA").unwrap();
        assert!(MidMap::pair(&ours, &wrong).is_none());
        let more = SubscribeLayout::decode(9, "application:A audio:B video:C audio:D").unwrap();
        assert!(MidMap::pair(&ours, &more).is_none());
        // A new line of ours named like one of the browser's old ones: no pairing.
        let clash = SubscribeLayout::decode(9, "application:z2c").unwrap();
        assert!(MidMap::pair(&ours, &clash).is_none());
    }
}
