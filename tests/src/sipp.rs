//! Running real `sipp` (Debian `sip-tester`) against the gateway with the
//! scenario templates of `tests/sipp/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{workspace, Gateway};

/// A base port with `n` consecutive ports free for both UDP and TCP (a SIP listener
/// takes both; sipp's media port has neighbours).
///
/// The ports come from 10000–19999: below Linux's ephemeral range (32768–60999), out
/// of which the kernel hands ports to every connecting socket of the parallel tests
/// (HTTP clients, browsers, gateways' outbound sockets) between this check and the
/// peer's own bind; and below the gateway's default RTP range (20000–29999). A sipp
/// whose port was taken that way exits at once, and its call never comes.
///
/// Tests run in parallel processes that probe the same range: two of them could find
/// the same port free and both hand it to a peer. A port handed out is therefore also
/// reserved with an exclusive lock on a file named after it, held until this process
/// exits (the kernel drops the lock with the process, even after a crash).
pub fn free_udp_ports(n: u16) -> u16 {
    for _ in 0..400 {
        let base = 10000 + (rand_u16() % 4950) * 2;
        if (base..base + n).any(|p| BROWSER_BLOCKED.contains(&p)) {
            continue;
        }
        let Some(locks) = reserve(base, n) else {
            continue;
        };
        let ok = (0..n).all(|i| {
            std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
        });
        if ok {
            RESERVED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(locks);
            return base;
        }
    }
    panic!("no free UDP port range");
}

/// Ports of the range browsers refuse to load a page from (`net::ERR_UNSAFE_PORT`:
/// Chromium's and Firefox's restricted ports; 10080 is Amanda's): a gateway's HTTP port
/// there fails every browser test that opens its page.
const BROWSER_BLOCKED: [u16; 1] = [10080];

/// The lock files of the ports this process handed out (never released before exit).
static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// Exclusive locks on `base..base + n`, or `None` when another test process holds one.
fn reserve(base: u16, n: u16) -> Option<Vec<std::fs::File>> {
    let dir = std::env::temp_dir().join("patchbay-test-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let mut locks = Vec::new();
    for port in base..base + n {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .ok()?;
        file.try_lock().ok()?;
        locks.push(file);
    }
    Some(locks)
}

fn rand_u16() -> u16 {
    static DRAWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let x = nanos ^ std::process::id().wrapping_mul(2654435761) ^ n.wrapping_mul(40503);
    (x ^ (x >> 16)) as u16
}

/// One sipp call.
pub struct SippCall {
    pub name: String,
    pub scenario: &'static str,
    pub vars: Vec<(&'static str, String)>,
    /// Injected as field0 (the participant token).
    pub token: Option<String>,
    /// `u1` (UDP) or `t1` (TCP).
    pub transport: &'static str,
    pub sip_port: u16,
    pub media_port: u16,
    /// sipp gives up (and fails) after this long.
    pub timeout_s: u32,
}

impl SippCall {
    pub fn new(name: &str, scenario: &'static str) -> SippCall {
        SippCall {
            name: name.to_string(),
            scenario,
            vars: Vec::new(),
            token: None,
            transport: "u1",
            sip_port: free_udp_ports(1),
            media_port: free_udp_ports(4),
            timeout_s: 30,
        }
    }

    /// A caller (`uac_tone.xml`) playing `hz` (a 2 s WAV written into `dir`, looped) in
    /// `law` for `hold_ms`, then hanging up.
    pub fn tone(name: &str, dir: &Path, hz: u32, law: crate::media::Law, hold_ms: u32) -> SippCall {
        let wav = format!("tone{hz}-{}.wav", law.name());
        crate::media::write_tone_wav(&dir.join(&wav), hz as f64, 2, law);
        SippCall::new(name, "uac_tone.xml")
            .var("WAV", wav)
            .var("PT", law.payload_type().to_string())
            .var("CODEC", law.name())
            .var("HOLD_MS", hold_ms.to_string())
            .var("EXTRA", "")
    }

    /// A header line more in a `tone` caller's INVITE.
    pub fn header(mut self, name: &str, value: &str) -> SippCall {
        let line = format!("\n      {name}: {value}");
        match self.vars.iter_mut().find(|(k, _)| *k == "EXTRA") {
            Some((_, v)) => v.push_str(&line),
            None => self.vars.push(("EXTRA", line)),
        }
        self
    }

    /// A caller placed as Bandwidth Voice places a BXML `<Transfer>`: `uui` (the
    /// `SipUri`'s attribute, as the Bandwidth SDK's `generateTransferBxml` wrote it) is
    /// its `User-To-User` header, whole; it plays `hz` for `hold_ms`.
    pub fn transfer(name: &str, dir: &Path, hz: u32, hold_ms: u32, uui: &str) -> SippCall {
        let law = crate::media::Law::Ulaw;
        let wav = format!("tone{hz}-{}.wav", law.name());
        crate::media::write_tone_wav(&dir.join(&wav), hz as f64, 2, law);
        // sipp splits an injection line at ';': join the fields back.
        let fields: Vec<String> = (0..=uui.matches(';').count())
            .map(|i| format!("[field{i}]"))
            .collect();
        SippCall::new(name, "uac_transfer.xml")
            .var("WAV", wav)
            .var("PT", law.payload_type().to_string())
            .var("CODEC", law.name())
            .var("HOLD_MS", hold_ms.to_string())
            .var("UUI", fields.join(";"))
            .token(uui)
    }

    pub fn var(mut self, key: &'static str, value: impl Into<String>) -> SippCall {
        self.vars.push((key, value.into()));
        self
    }

    pub fn token(mut self, token: &str) -> SippCall {
        self.token = Some(token.to_string());
        self
    }

    /// A call that lasts longer than sipp's 30 s default timeout.
    pub fn timeout(mut self, seconds: u32) -> SippCall {
        self.timeout_s = seconds;
        self
    }

    pub fn tcp(mut self) -> SippCall {
        self.transport = "t1";
        self
    }

    /// Render the scenario into `dir` and start sipp against `g`.
    pub fn spawn(&self, g: &Gateway, dir: &Path) -> RunningSipp {
        self.start(Some(format!("127.0.0.1:{}", g.sip_port)), dir)
    }

    /// Render the scenario into `dir` and start sipp against `remote` (`IP:port`).
    pub fn spawn_to(&self, remote: &str, dir: &Path) -> RunningSipp {
        self.start(Some(remote.to_string()), dir)
    }

    /// Render the scenario into `dir` and start sipp as a server (a trunk) on `sip_port`.
    pub fn serve(&self, dir: &Path) -> RunningSipp {
        self.start(None, dir)
    }

    /// The trunk URI of a serving sipp (`--sip-trunk`).
    pub fn trunk_uri(&self) -> String {
        let transport = if self.transport == "t1" { "tcp" } else { "udp" };
        format!("sip:127.0.0.1:{};transport={transport}", self.sip_port)
    }

    fn start(&self, remote: Option<String>, dir: &Path) -> RunningSipp {
        let template = std::fs::read_to_string(workspace().join("tests/sipp").join(self.scenario))
            .expect("scenario");
        let mut xml = template;
        for (k, v) in &self.vars {
            xml = xml.replace(&format!("@{k}@"), v);
        }
        if let Some(left) = unfilled_placeholder(&xml) {
            panic!("placeholder @{left}@ of {} not filled", self.scenario);
        }
        let scenario = dir.join(format!("{}.xml", self.name));
        std::fs::write(&scenario, xml).expect("write scenario");
        let inf = dir.join(format!("{}.csv", self.name));
        std::fs::write(
            &inf,
            format!(
                "SEQUENTIAL\n{};\n",
                self.token.clone().unwrap_or_else(|| "none".into())
            ),
        )
        .expect("write injection file");
        let errors = dir.join(format!("{}-errors.log", self.name));
        let messages = dir.join(format!("{}-messages.log", self.name));
        let mut cmd = Command::new("sipp");
        crate::own_group(&mut cmd);
        if let Some(remote) = remote {
            cmd.arg(remote);
        }
        let child = cmd
            .arg("-sf")
            .arg(&scenario)
            .arg("-inf")
            .arg(&inf)
            .args([
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-t",
                self.transport,
                "-nostdin",
                "-timeout",
                &format!("{}s", self.timeout_s),
                "-timeout_error",
                "-trace_err",
                "-trace_msg",
            ])
            .arg("-p")
            .arg(self.sip_port.to_string())
            .arg("-mp")
            .arg(self.media_port.to_string())
            .arg("-error_file")
            .arg(&errors)
            .arg("-message_file")
            .arg(&messages)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sipp (scripts/test installs sip-tester)");
        RunningSipp {
            child: Some(child),
            name: self.name.clone(),
            errors,
            messages,
        }
    }
}

pub struct RunningSipp {
    child: Option<Child>,
    pub name: String,
    errors: PathBuf,
    messages: PathBuf,
}

impl RunningSipp {
    /// Wait for sipp to finish (at most `limit`); sipp exits 0 only when the call went as scripted.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                crate::kill_group(&mut child);
                break child.wait().expect("wait sipp");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = format!(
            "--- {} errors:\n{}\n--- messages (tail):\n{}",
            self.name,
            std::fs::read_to_string(&self.errors).unwrap_or_default(),
            tail(
                &std::fs::read_to_string(&self.messages).unwrap_or_default(),
                200
            )
        );
        (status, log)
    }

    /// Whether sipp is still running (its call not over).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Wait and assert success.
    pub fn assert_ok(self, limit: Duration) -> String {
        let name = self.name.clone();
        let (status, log) = self.wait(limit);
        assert!(status.success(), "sipp `{name}` failed ({status}):\n{log}");
        log
    }
}

impl Drop for RunningSipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::kill_group(&mut c);
        }
    }
}

/// The first `@NAME@` left in a rendered template.
fn unfilled_placeholder(xml: &str) -> Option<&str> {
    let mut rest = xml;
    while let Some(i) = rest.find('@') {
        let after = &rest[i + 1..];
        let len = after
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .count();
        if len > 0 && after[len..].starts_with('@') {
            return Some(&after[..len]);
        }
        rest = after;
    }
    None
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A caller that presses "1" (sip-tester's RFC 4733 capture) `delay_ms` after it is
/// answered and hangs up `hold_ms` later: `uac_dtmf.xml` with the capture copied into `dir`.
pub fn presser(dir: &Path, token: &str, delay_ms: u32, hold_ms: u32) -> SippCall {
    std::fs::copy(
        "/usr/share/sip-tester/dtmf_2833_1.pcap",
        dir.join("dtmf1.pcap"),
    )
    .expect("sip-tester's DTMF capture");
    SippCall::new("presser", "uac_dtmf.xml")
        .var("DELAY_MS", delay_ms.to_string())
        .var("HOLD_MS", hold_ms.to_string())
        .token(token)
}
