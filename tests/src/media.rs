//! What a phone would observe: WAV tone files for sipp to play, packet
//! capture of what sipp receives (dumpcap on loopback), and tone detection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// G.711 μ-law encode (independent of the gateway's own codec).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(32635) + 0x84;
    let mut exp = 7;
    while exp > 0 && pcm & (1 << (exp + 7)) == 0 {
        exp -= 1;
    }
    let man = (pcm >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | man as u8)
}

pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let e = ((u >> 4) & 7) as i32;
    let m = (u & 0x0f) as i32;
    let mag = (((m << 3) + 0x84) << e) - 0x84;
    if u & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

pub fn alaw_encode(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let mask = if pcm >= 0 {
        0xd5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    pcm = pcm.min(0x7fff);
    let code = if pcm < 256 {
        (pcm >> 4) as u8
    } else {
        let mut exp = 7;
        while exp > 1 && pcm & (1 << (exp + 7)) == 0 {
            exp -= 1;
        }
        ((exp << 4) | ((pcm >> (exp + 3)) & 0x0f)) as u8
    };
    code ^ mask
}

pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let e = ((a >> 4) & 7) as i32;
    let m = (a & 0x0f) as i32;
    let mag = if e == 0 {
        (m << 4) + 8
    } else {
        ((m << 4) + 0x108) << (e - 1)
    };
    if a & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

/// G.711 law of a WAV / RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

impl Law {
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }
    }
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_decode(b),
            Law::Alaw => alaw_decode(b),
        }
    }
}

/// Write a 16-bit PCM mono WAV of a sine tone at `rate` Hz (a fake microphone for Chromium).
pub fn write_pcm_tone_wav(path: &Path, hz: f64, seconds: u32, rate: u32) {
    let n = (rate * seconds) as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16;
        data.extend_from_slice(&s.to_le_bytes());
    }
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("write wav");
}

/// Write a G.711 WAV (8 kHz mono, format tag 7 μ-law / 6 A-law) of a sine tone, as sipp's `rtp_stream` plays.
pub fn write_tone_wav(path: &Path, hz: f64, seconds: u32, law: Law) {
    let n = 8000 * seconds as usize;
    let data: Vec<u8> = (0..n)
        .map(|i| {
            let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16;
            match law {
                Law::Ulaw => ulaw_encode(s),
                Law::Alaw => alaw_encode(s),
            }
        })
        .collect();
    let tag: u16 = if law == Law::Ulaw { 7 } else { 6 };
    let mut fmt = Vec::new();
    for v in [tag, 1] {
        fmt.extend_from_slice(&v.to_le_bytes());
    }
    fmt.extend_from_slice(&8000u32.to_le_bytes());
    fmt.extend_from_slice(&8000u32.to_le_bytes());
    fmt.extend_from_slice(&1u16.to_le_bytes());
    fmt.extend_from_slice(&8u16.to_le_bytes());
    fmt.extend_from_slice(&0u16.to_le_bytes());
    let mut body = b"WAVE".to_vec();
    body.extend_from_slice(b"fmt ");
    body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"fact");
    body.extend_from_slice(&4u32.to_le_bytes());
    body.extend_from_slice(&(n as u32).to_le_bytes());
    body.extend_from_slice(b"data");
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&data);
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&(body.len() as u32).to_le_bytes());
    wav.extend_from_slice(&body);
    std::fs::write(path, wav).expect("write wav");
}

/// One captured RTP packet.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    /// Capture time, seconds since the epoch.
    pub at: f64,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_type: u8,
    pub marker: bool,
    /// The second header byte as sent (RTCP packet types 200..204 live here).
    pub second_byte: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// A running dumpcap on loopback.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Capture UDP to any of `ports` on `lo`; returns once the capture is running.
    pub fn start(dir: &Path, ports: &[u16]) -> Capture {
        let file = dir.join(format!(
            "cap-{}.pcap",
            ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("-")
        ));
        let filter = ports
            .iter()
            .map(|p| format!("udp dst port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let child = Command::new("dumpcap")
            .args(["-q", "-P", "-i", "lo", "-f", &filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run dumpcap (scripts/test installs tshark)");
        // dumpcap writes the pcap header as soon as it captures.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 24 {
            assert!(Instant::now() < deadline, "dumpcap did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The header is written before the filter is attached: give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        Capture {
            child: Some(child),
            file,
        }
    }

    /// Stop and read every RTP packet captured.
    pub fn stop(mut self) -> Vec<RtpPacket> {
        if let Some(c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let mut c = c;
            let _ = c.wait();
        }
        read_pcap(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parse a classic pcap of Ethernet (or Linux cooked) frames holding IPv4/UDP/RTP.
pub fn read_pcap(path: &Path) -> Vec<RtpPacket> {
    let data = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    if data.len() < 24 {
        return out;
    }
    let linktype = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
    let mut off = 24;
    while off + 16 <= data.len() {
        let rd = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let (sec, usec, incl) = (rd(off), rd(off + 4), rd(off + 8) as usize);
        let Some(frame) = data.get(off + 16..off + 16 + incl) else {
            break;
        };
        off += 16 + incl;
        let ip = match linktype {
            1 => frame.get(14..),
            113 => frame.get(16..),
            _ => frame.get(4..),
        };
        let Some(ip) = ip else { continue };
        if ip.is_empty() || ip[0] >> 4 != 4 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 + 12 {
            continue;
        }
        let rtp = &udp[8..];
        if rtp[0] >> 6 != 2 {
            continue;
        }
        let cc = (rtp[0] & 0x0f) as usize;
        let start = 12 + cc * 4;
        if rtp.len() < start {
            continue;
        }
        out.push(RtpPacket {
            at: sec as f64 + usec as f64 / 1e6,
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload_type: rtp[1] & 0x7f,
            marker: rtp[1] & 0x80 != 0,
            second_byte: rtp[1],
            seq: u16::from_be_bytes([rtp[2], rtp[3]]),
            timestamp: u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]),
            payload: rtp[start..].to_vec(),
        });
    }
    out
}

/// Packets sent to `port` (what the peer on that port received), by payload type.
pub fn received(packets: &[RtpPacket], port: u16) -> Vec<&RtpPacket> {
    packets.iter().filter(|p| p.dst_port == port).collect()
}

/// Now, in seconds since the epoch (comparable to capture times).
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Root mean square of `x` (0 for no samples).
pub fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// `who` received at least a second of audio (8 kHz) in `pcm` and it was not silence.
pub fn assert_audible(pcm: &[i16], who: &str) {
    assert!(
        pcm.len() > 8000,
        "{who} received too little audio ({} samples)",
        pcm.len()
    );
    let rms = rms(pcm);
    assert!(rms > 100.0, "{who} heard silence (rms {rms:.0})");
}

/// Goertzel power of `hz` in `x` sampled at `rate`.
pub fn goertzel(x: &[i16], hz: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// Share of the window's energy at each frequency (≈ 1 for a pure tone, ≈ ½ each for two equal tones).
pub fn tone_shares(x: &[i16], freqs: &[f64], rate: f64) -> HashMap<u32, f64> {
    let energy: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    freqs
        .iter()
        .map(|&f| {
            let share = if energy <= 0.0 {
                0.0
            } else {
                goertzel(x, f, rate) / (energy * x.len() as f64 / 2.0)
            };
            (f as u32, share)
        })
        .collect()
}

/// The set of `freqs` present (share > 0.1) in a window; also returns the window's RMS.
pub fn tones_present(x: &[i16], freqs: &[f64], rate: f64) -> (Vec<u32>, f64) {
    let rms = rms(x);
    let mut present: Vec<u32> = tone_shares(x, freqs, rate)
        .into_iter()
        .filter(|(_, s)| *s > 0.1)
        .map(|(f, _)| f)
        .collect();
    present.sort_unstable();
    (present, rms)
}

/// Decode the G.711 audio packets of a received stream captured between `from` and `to` (epoch seconds).
pub fn decode_window(packets: &[&RtpPacket], law: Law, from: f64, to: f64) -> Vec<i16> {
    packets
        .iter()
        .filter(|p| p.at >= from && p.at < to && p.payload_type == law.payload_type())
        .flat_map(|p| p.payload.iter().map(|&b| law.decode(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_matches_the_reference_points() {
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xaa), 32256);
        for s in [-30000i16, -1000, -5, 0, 7, 1234, 30000] {
            assert!(
                (ulaw_decode(ulaw_encode(s)) as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 16
            );
            assert!(
                (alaw_decode(alaw_encode(s)) as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 16
            );
        }
    }

    #[test]
    fn tone_detection() {
        let mk = |fs: &[f64]| -> Vec<i16> {
            (0..800)
                .map(|i| {
                    fs.iter()
                        .map(|f| {
                            4000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 8000.0).sin()
                        })
                        .sum::<f64>() as i16
                })
                .collect()
        };
        let freqs = [440.0, 660.0, 880.0];
        assert_eq!(tones_present(&mk(&[440.0]), &freqs, 8000.0).0, vec![440]);
        assert_eq!(
            tones_present(&mk(&[660.0, 880.0]), &freqs, 8000.0).0,
            vec![660, 880]
        );
        assert!(tones_present(&vec![0; 800], &freqs, 8000.0).0.is_empty());
    }
}

/// Write a pcap (Ethernet/IPv4/UDP) of one RTP packet per payload, `packet_ms`
/// apart, for sipp's `play_pcap_audio` (which replays it to the call's media address).
pub fn write_rtp_pcap(
    path: &Path,
    payloads: &[Vec<u8>],
    payload_type: u8,
    ts_step: u32,
    packet_ms: u32,
) {
    write_lossy_rtp_pcap(path, payloads, payload_type, ts_step, packet_ms, |_| true)
}

/// Like [`write_rtp_pcap`], leaving out the packets `keep` refuses (their sequence
/// numbers and times stay unused: the receiver sees them lost).
pub fn write_lossy_rtp_pcap(
    path: &Path,
    payloads: &[Vec<u8>],
    payload_type: u8,
    ts_step: u32,
    packet_ms: u32,
    keep: impl Fn(usize) -> bool,
) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, payload) in payloads.iter().enumerate().filter(|(i, _)| keep(*i)) {
        let mut rtp = vec![0x80, payload_type, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        rtp[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        rtp[4..8].copy_from_slice(&(i as u32 * ts_step).to_be_bytes());
        rtp.extend_from_slice(payload);
        let udp_len = 8 + rtp.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&10000u16.to_be_bytes());
        udp.extend_from_slice(&20000u16.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes());
        udp.extend_from_slice(&rtp);
        let total = 20 + udp_len;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let sum: u32 = ip
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        let t_us = i as u64 * packet_ms as u64 * 1000;
        out.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// An independent G.722 codec: spandsp's, through `tests/tools/g722tool.c`
/// (compiled once per test run; scripts/test installs libspandsp-dev).
pub mod g722 {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;

    fn tool() -> PathBuf {
        static TOOL: OnceLock<PathBuf> = OnceLock::new();
        TOOL.get_or_init(|| {
            let src = crate::workspace().join("tests/tools/g722tool.c");
            let dir = crate::workspace().join("target/test-tools");
            std::fs::create_dir_all(&dir).expect("tool dir");
            let bin = dir.join(format!("g722tool-{}", std::process::id()));
            let status = Command::new("cc")
                .args(["-O2", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg("-lspandsp")
                .status()
                .expect("run cc");
            assert!(
                status.success(),
                "building g722tool failed (needs libspandsp-dev)"
            );
            bin
        })
        .clone()
    }

    fn run(mode: &str, input: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (i, o) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&i, input).expect("write");
        let status = Command::new(tool())
            .arg(mode)
            .arg(&i)
            .arg(&o)
            .status()
            .expect("run g722tool");
        assert!(status.success());
        std::fs::read(&o).expect("read")
    }

    /// 16 kHz PCM to 64 kbit/s G.722.
    pub fn encode(pcm: &[i16]) -> Vec<u8> {
        run(
            "encode",
            &pcm.iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    /// G.722 to 16 kHz PCM.
    pub fn decode(data: &[u8]) -> Vec<i16> {
        run("decode", data)
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}
