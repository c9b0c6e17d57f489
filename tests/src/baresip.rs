//! baresip (Debian `baresip`) as an independent softphone: it dials from a config
//! directory of its own, plays a WAV, dumps what it hears to WAV (the `sndfile`
//! module), and takes commands (DTMF, hang-up) over `ctrl_tcp`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sipp::free_udp_ports;

/// One baresip instance: its SIP port (TLS on the next), its control port, its RTP
/// port range.
pub struct Baresip {
    dir: PathBuf,
    pub sip_port: u16,
    pub ctrl_port: u16,
    pub rtp_ports: (u16, u16),
    /// `audio_codecs` of the account, e.g. `opus/48000/2`.
    pub codecs: String,
    /// Account parameters appended, e.g. `;mediaenc=srtp-mand`.
    pub params: String,
    /// Parameters of the account's URI, e.g. `;transport=tls`.
    pub uri_params: String,
    child: Option<Child>,
}

/// A mono 16-bit WAV of `hz` at 8 kHz (what `aufile` plays), `seconds` long.
fn write_source(path: &Path, hz: f64, seconds: u32) {
    let rate = 8000u32;
    let n = rate * seconds;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let v = (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("write the source WAV");
}

impl Baresip {
    /// A softphone in `dir/name` that will play `hz` and offer `codecs`.
    pub fn new(dir: &Path, name: &str, hz: f64, codecs: &str) -> Baresip {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("snd")).expect("baresip dir");
        write_source(&dir.join("source.wav"), hz, 60);
        let base = free_udp_ports(4);
        let rtp = free_udp_ports(8);
        Baresip {
            dir,
            sip_port: base,
            ctrl_port: base + 2,
            rtp_ports: (rtp, rtp + 7),
            codecs: codecs.to_string(),
            params: String::new(),
            uri_params: String::new(),
            child: None,
        }
    }

    pub fn params(mut self, p: &str) -> Baresip {
        self.params = p.to_string();
        self
    }

    pub fn uri_params(mut self, p: &str) -> Baresip {
        self.uri_params = p.to_string();
        self
    }

    /// Start and dial `uri` (its account trusts the test CA for TLS).
    pub fn dial(&mut self, uri: &str) {
        let d = self.dir.display().to_string();
        let config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{sip}\n\
             sip_cafile {ca}\n\
             audio_player aubridge,nul\n\
             audio_source aufile,{d}/source.wav\n\
             audio_alert aubridge,nul\n\
             audio_level no\n\
             ausrc_srate 8000\n\
             auplay_srate 8000\n\
             ausrc_channels 1\n\
             auplay_channels 1\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule g722.so\nmodule opus.so\n\
             module aufile.so\nmodule aubridge.so\nmodule sndfile.so\nmodule srtp.so\n\
             module_app account.so\nmodule_app menu.so\nmodule ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl}\n\
             snd_path {d}/snd\n\
             net_interface 127.0.0.1\n\
             rtp_ports {r0}-{r1}\n",
            sip = self.sip_port,
            ctrl = self.ctrl_port,
            ca = crate::stunnel::tls_file("ca.pem").display(),
            r0 = self.rtp_ports.0,
            r1 = self.rtp_ports.1,
        );
        std::fs::write(self.dir.join("config"), config).expect("baresip config");
        std::fs::write(
            self.dir.join("accounts"),
            format!(
                "<sip:caller@127.0.0.1{}>;regint=0;audio_codecs={}{}\n",
                self.uri_params, self.codecs, self.params
            ),
        )
        .expect("baresip accounts");
        let log = std::fs::File::create(self.dir.join("baresip.log")).expect("log");
        let child = crate::own_group(&mut Command::new("baresip"))
            .arg("-f")
            .arg(&self.dir)
            .args(["-n", "127.0.0.1", "-e"])
            .arg(format!("/dial {uri}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run baresip (scripts/test installs it)");
        self.child = Some(child);
    }

    /// One `ctrl_tcp` command (a netstring of JSON); its response.
    pub fn command(&self, command: &str, params: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", self.ctrl_port)) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "baresip control: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let msg =
            serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        s.write_all(format!("{}:{msg},", msg.len()).as_bytes())
            .expect("baresip control write");
        // Events come on the same connection: read until the command's response.
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if let Some(r) = netstrings(&got)
                .into_iter()
                .find(|m| m.contains("\"response\":true"))
            {
                return r;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Wait until the log shows `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "baresip never logged `{needle}`:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it heard (its decoder's output, dumped by `sndfile`), as mono samples, and
    /// the sample rate.
    pub fn heard(&self) -> (Vec<i16>, f64) {
        let dump = std::fs::read_dir(self.dir.join("snd"))
            .expect("snd dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .expect("baresip dumped no decoded audio");
        let wav = std::fs::read(&dump).expect("read dump");
        let channels = u16::from_le_bytes([wav[22], wav[23]]) as usize;
        let rate = u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]) as f64;
        let data = wav
            .windows(4)
            .position(|w| w == b"data")
            .expect("a data chunk");
        let samples: Vec<i16> = wav[data + 8..]
            .chunks_exact(2 * channels.max(1))
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        (samples, rate)
    }

    /// Stop it (a clean quit first, so the WAV dumps are complete).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.command("quit", "");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            crate::kill_group(&mut c);
        }
    }
}

/// The complete netstrings (`LEN:DATA,`) at the start of `b`.
fn netstrings(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(colon) = b.iter().position(|&c| c == b':') {
        let Some(len) = std::str::from_utf8(&b[..colon])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        let Some(data) = b.get(colon + 1..colon + 1 + len) else {
            break;
        };
        out.push(String::from_utf8_lossy(data).into_owned());
        b = b.get(colon + 2 + len..).unwrap_or_default();
    }
    out
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::kill_group(&mut c);
        }
    }
}
