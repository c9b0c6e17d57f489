//! What the session core reads from WebRTC SDP (str0m parses and writes the SDP
//! itself): the tracks and streams an offer publishes, its ICE ufrag, and an offer
//! with the kinds a participant may not publish refused.

use super::session::MediaType;

/// Reject (port 0) every `m=audio`/`m=video` section whose kind is not allowed, so the
/// answer refuses it and nothing of it is ever received.
pub fn reject_kinds(sdp: &str, allow_audio: bool, allow_video: bool) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let refused = (!allow_audio && line.starts_with("m=audio "))
            || (!allow_video && line.starts_with("m=video "));
        if refused {
            let mut parts: Vec<&str> = line.trim_end().split(' ').collect();
            if parts.len() > 1 {
                parts[1] = "0";
            }
            out.push_str(&parts.join(" "));
            out.push_str("\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The `a=ice-ufrag` of an SDP.
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
}

/// A track a device publishes, from its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    /// `AUDIO` or `VIDEO`.
    pub kind: MediaType,
    /// The msid stream id (the SDK's MediaStream id, the `streamMetadata` key).
    pub stream: String,
    pub track: String,
}

/// One m-section of an offer while it is being read.
#[derive(Default)]
struct Section {
    kind: Option<MediaType>,
    inactive: bool,
    mid: Option<String>,
    msid: Option<(String, String)>,
}

impl Section {
    fn track(self) -> Option<OfferedTrack> {
        match self {
            Section {
                kind: Some(kind),
                inactive: false,
                mid: Some(mid),
                msid: Some((stream, track)),
            } => Some(OfferedTrack {
                mid,
                kind,
                stream,
                track,
            }),
            _ => None,
        }
    }
}

/// The sending tracks of an offer, in m-line order.
pub fn offered_tracks(sdp: &str) -> Vec<OfferedTrack> {
    let mut out = Vec::new();
    let mut cur: Option<Section> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(cur.take().and_then(Section::track));
            let mut f = m.split_whitespace();
            let kind = match f.next() {
                Some("audio") => Some(MediaType::Audio),
                Some("video") => Some(MediaType::Video),
                _ => None,
            };
            cur = Some(Section {
                kind,
                inactive: f.next() == Some("0"),
                ..Section::default()
            });
        } else if let Some(sec) = cur.as_mut() {
            if line == "a=inactive" || line == "a=recvonly" {
                sec.inactive = true;
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                sec.mid = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("a=msid:") {
                let mut f = v.split_whitespace();
                if let (Some(s), Some(t)) = (f.next(), f.next()) {
                    if s != "-" {
                        sec.msid = Some((s.to_string(), t.to_string()));
                    }
                }
            }
        }
    }
    out.extend(cur.take().and_then(Section::track));
    out
}

/// Media streams of an offer: msid stream id → media kinds (`AUDIO`, `VIDEO`), in order.
pub fn offered_streams(sdp: &str) -> Vec<(String, Vec<MediaType>)> {
    let mut out: Vec<(String, Vec<MediaType>)> = Vec::new();
    let mut kind: Option<MediaType> = None;
    let mut inactive = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split_whitespace().next() {
                Some("audio") => Some(MediaType::Audio),
                Some("video") => Some(MediaType::Video),
                _ => None,
            };
            inactive = m.split_whitespace().nth(1) == Some("0");
        } else if line == "a=inactive" || line == "a=recvonly" {
            inactive = true;
        } else if let (Some(k), false, Some(msid)) = (kind, inactive, line.strip_prefix("a=msid:"))
        {
            let stream = msid.split_whitespace().next().unwrap_or("").to_string();
            if stream.is_empty() || stream == "-" {
                continue;
            }
            match out.iter_mut().find(|(s, _)| *s == stream) {
                Some((_, kinds)) if !kinds.contains(&k) => kinds.push(k),
                Some(_) => {}
                None => out.push((stream, vec![k])),
            }
        }
    }
    out
}

/// The m-lines of an offer that receive (`recvonly` or `sendrecv`, not refused): mid and
/// kind, in order (a v2 client's offer for a receiving endpoint).
pub fn offered_receivers(sdp: &str) -> Vec<(String, MediaType)> {
    let mut out = Vec::new();
    // The current section: kind, refused or not receiving, mid.
    let mut cur: Option<(MediaType, bool, Option<String>)> = None;
    let mut flush = |cur: Option<(MediaType, bool, Option<String>)>| {
        if let Some((kind, false, Some(mid))) = cur {
            out.push((mid, kind));
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            flush(cur.take());
            let mut f = m.split_whitespace();
            let kind = match f.next() {
                Some("audio") => Some(MediaType::Audio),
                Some("video") => Some(MediaType::Video),
                _ => None,
            };
            let refused = f.next() == Some("0");
            cur = kind.map(|k| (k, refused, None));
        } else if let Some((_, off, mid)) = cur.as_mut() {
            if line == "a=inactive" || line == "a=sendonly" {
                *off = true;
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                *mid = Some(v.to_string());
            }
        }
    }
    flush(cur.take());
    out
}

/// `sdp` with every track in the msid stream `stream` (`a=msid`, `a=ssrc … msid` and the
/// session's `a=msid-semantic`), so a receiver sees one MediaStream whose id is `stream`.
pub fn with_msid_stream(sdp: &str, stream: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if let Some(v) = body.strip_prefix("a=msid:") {
            let track = v.split_whitespace().nth(1).unwrap_or("");
            out.push_str(&format!("a=msid:{stream} {track}"));
        } else if let Some((ssrc, track)) = body
            .strip_prefix("a=ssrc:")
            .and_then(|v| v.split_once(" msid:"))
            .map(|(ssrc, v)| (ssrc, v.split_whitespace().nth(1).unwrap_or("")))
        {
            out.push_str(&format!("a=ssrc:{ssrc} msid:{stream} {track}"));
        } else if body.starts_with("a=msid-semantic:") {
            out.push_str(&format!("a=msid-semantic: WMS {stream}"));
        } else {
            out.push_str(body);
        }
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_an_offer() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=msid:s1 t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=msid:s1 t2\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=msid:s2 t3\r\n";
        assert_eq!(
            offered_streams(sdp),
            vec![("s1".to_string(), vec![MediaType::Audio, MediaType::Video])]
        );
        assert_eq!(sdp_ufrag("a=ice-ufrag:Xy12\r\n"), Some("Xy12"));
        let av = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s t2\r\n";
        let audio_only = reject_kinds(av, true, false);
        assert!(
            audio_only.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{audio_only}"
        );
        assert!(audio_only.contains("m=audio 9 "));
        assert_eq!(
            offered_streams(&audio_only),
            vec![("s".to_string(), vec![MediaType::Audio])]
        );
        let with_mids = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s1 t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\na=msid:s1 t2\r\n";
        assert_eq!(
            offered_tracks(with_mids),
            vec![OfferedTrack {
                mid: "0".into(),
                kind: MediaType::Audio,
                stream: "s1".into(),
                track: "t1".into()
            }]
        );
    }

    #[test]
    fn receiving_sections_of_a_v2_offer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=sendonly\r\n";
        assert_eq!(
            offered_receivers(sdp),
            vec![
                ("0".to_string(), MediaType::Audio),
                ("1".to_string(), MediaType::Video)
            ]
        );
    }

    #[test]
    fn every_track_into_one_stream() {
        let sdp = "v=0\r\na=msid-semantic: WMS a b\r\nm=audio 9 X 111\r\na=msid:a ta\r\n\
                   a=ssrc:1 cname:x\r\na=ssrc:1 msid:a ta\r\nm=video 9 X 96\r\na=msid:b tv\r\n";
        assert_eq!(
            with_msid_stream(sdp, "ep"),
            "v=0\r\na=msid-semantic: WMS ep\r\nm=audio 9 X 111\r\na=msid:ep ta\r\n\
             a=ssrc:1 cname:x\r\na=ssrc:1 msid:ep ta\r\nm=video 9 X 96\r\na=msid:ep tv\r\n"
        );
    }
}
