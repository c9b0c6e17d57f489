//! The RFC 4475 torture corpus (tests/data/rfc4475, kept in the repository with its
//! SHA256SUMS, checked before use) sent to the
//! gateway over UDP and TCP, exactly as stored: it never crashes or stalls,
//! answers what the manifest says and stays responsive after every message.
//!
//! Patchbay answers a UDP request at the address it came from (RFC 3581
//! style), never at the corpus's own Via addresses, so nothing leaves loopback.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use patchbay_tests::{workspace, Gateway};

fn corpus_dir() -> PathBuf {
    workspace().join("tests/data/rfc4475")
}

/// What the manifest allows for each file: the final status codes, or none (no reply).
fn expectations() -> HashMap<&'static str, &'static [u16]> {
    HashMap::from([
        // wsinv carries a To tag: an INVITE for a dialog we do not have (481).
        ("wsinv.dat", &[481, 403][..]),
        ("intmeth.dat", &[501][..]),
        ("esc01.dat", &[403][..]),
        ("escnull.dat", &[405][..]),
        ("esc02.dat", &[501][..]),
        ("lwsdisp.dat", &[200][..]),
        ("longreq.dat", &[403][..]),
        ("dblreq.dat", &[405][..]),
        ("semiuri.dat", &[200, 404][..]),
        ("transports.dat", &[200][..]),
        ("mpart01.dat", &[405, 501, 415, 200][..]),
        ("unreason.dat", &[][..]),
        ("noreason.dat", &[][..]),
        ("badinv01.dat", &[400][..]),
        ("clerr.dat", &[400][..]),
        ("ncl.dat", &[400][..]),
        ("scalar02.dat", &[400][..]),
        ("scalarlg.dat", &[][..]),
        ("quotbal.dat", &[400][..]),
        ("ltgtruri.dat", &[400][..]),
        ("lwsruri.dat", &[400][..]),
        ("lwsstart.dat", &[400, 403][..]),
        ("trws.dat", &[400, 200][..]),
        ("escruri.dat", &[400, 403][..]),
        ("baddate.dat", &[400, 403][..]),
        ("regbadct.dat", &[400, 405][..]),
        ("badaspec.dat", &[400, 200][..]),
        ("baddn.dat", &[400, 0][..]),
        ("badvers.dat", &[505][..]),
        ("mismatch01.dat", &[400][..]),
        ("mismatch02.dat", &[400][..]),
        ("bigcode.dat", &[][..]),
        ("badbranch.dat", &[400, 200][..]),
        ("insuf.dat", &[400][..]),
        ("unkscm.dat", &[416][..]),
        ("novelsc.dat", &[416, 404][..]),
        ("unksm2.dat", &[405, 400][..]),
        ("bext01.dat", &[420][..]),
        ("invut.dat", &[415][..]),
        ("regaut01.dat", &[405][..]),
        ("multi01.dat", &[400][..]),
        ("mcl01.dat", &[400][..]),
        ("bcast.dat", &[][..]),
        ("zeromf.dat", &[200][..]),
        ("cparam01.dat", &[405][..]),
        ("cparam02.dat", &[405][..]),
        ("regescrt.dat", &[405][..]),
        ("sdp01.dat", &[406][..]),
        ("inv2543.dat", &[403][..]),
        ("test.dat", &[400, 0][..]),
    ])
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..32.min(response.len()))?).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Final (>= 200) responses received on `sock` within `wait` (and at most
/// 200 ms after the first one, to catch any unexpected second answer).
fn finals_udp(sock: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .ok();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if status_of(&buf[..n]).is_some_and(|s| s >= 200) {
                    out.push(buf[..n].to_vec());
                    deadline = deadline.min(Instant::now() + Duration::from_millis(200));
                }
            }
            Err(_) => break,
        }
    }
    out
}

fn options(port: u16, local: u16, branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{branch};rport\r\n\
         From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn assert_alive(g: &Gateway, after: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap().port();
    sock.send_to(
        &options(g.sip_port, local, &format!("alive{}", rand_branch())),
        ("127.0.0.1", g.sip_port),
    )
    .unwrap();
    let r = finals_udp(&sock, Duration::from_secs(2));
    assert_eq!(
        r.first().and_then(|m| status_of(m)),
        Some(200),
        "no 200 to OPTIONS after {after}:\n{}",
        g.log()
    );
}

fn rand_branch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_over_udp() {
    let g = Gateway::start().await;
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv"))
        .expect("conformance corpus beside the repo");
    let expect = expectations();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let file = line.split('\t').next().unwrap_or("");
        let Some(allowed) = expect.get(file) else {
            panic!("{file} is in the manifest but has no expectation here");
        };
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(&bytes, ("127.0.0.1", g.sip_port)).unwrap();
        let finals = finals_udp(
            &sock,
            Duration::from_millis(if allowed.is_empty() { 400 } else { 1500 }),
        );
        let codes: Vec<u16> = finals.iter().filter_map(|m| status_of(m)).collect();
        if allowed.is_empty() {
            assert!(codes.is_empty(), "{file}: expected no reply, got {codes:?}");
        } else if allowed.contains(&0) && codes.is_empty() {
            // Dropping is allowed for this one.
        } else {
            // One final response (an INVITE's is retransmitted until ACKed: same code).
            assert!(
                !codes.is_empty() && codes.iter().all(|c| *c == codes[0]),
                "{file}: finals {codes:?}"
            );
            assert!(
                allowed.contains(&codes[0]),
                "{file}: got {}, allowed {allowed:?}",
                codes[0]
            );
            if file == "dblreq.dat" {
                let text = String::from_utf8_lossy(&finals[0]).to_string();
                assert!(
                    finals
                        .iter()
                        .all(|f| String::from_utf8_lossy(f).contains("REGISTER")),
                    "{file}: answered the trailing INVITE:\n{text}"
                );
            }
        }
        // Specific content the manifest asks for.
        if let Some(resp) = finals.first() {
            let text = String::from_utf8_lossy(resp).to_string();
            match file {
                "intmeth.dat" | "esc02.dat" => {
                    assert!(text.contains("\r\nAllow: "), "{file}: 501 without Allow")
                }
                "bext01.dat" => assert!(
                    text.contains("nothingSupportsThis")
                        && text.contains("nothingSupportsThisEither"),
                    "{file}: 420 without Unsupported:\n{text}"
                ),
                "invut.dat" => assert!(
                    text.contains("Accept: application/sdp"),
                    "{file}: 415 without Accept"
                ),
                "longreq.dat" => {
                    let is_via = |l: &&str| {
                        let name = l
                            .split(':')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase();
                        name == "via" || name == "v"
                    };
                    let values: usize = text
                        .lines()
                        .filter(is_via)
                        .map(|l| l.matches("SIP/2.0/").count())
                        .sum();
                    assert_eq!(
                        values, 34,
                        "{file}: response echoes {values} Via values:\n{text}"
                    );
                }
                _ => {}
            }
        }
        assert_alive(&g, file);
        checked += 1;
    }
    assert_eq!(checked, 50);
    assert!(g.metric("patchbay_sip_parse_errors_total").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_over_tcp() {
    let g = Gateway::start().await;
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    let expect = expectations();
    for line in manifest.lines().skip(1) {
        let file = line.split('\t').next().unwrap_or("");
        let allowed = expect[file];
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", g.sip_port)).unwrap();
        conn.write_all(&bytes).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_millis(400);
        // Read until a final response is complete (headers end), the peer closes, or time is up.
        while Instant::now() < deadline {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if text.contains("\r\n\r\n") && !text.starts_with("SIP/2.0 100 ") {
                break;
            }
        }
        // On a stream, framing decides: a response, if any, must be one the manifest allows
        // (a message whose declared length never arrives just waits, on that connection only).
        let finals: Vec<u16> = String::from_utf8_lossy(&got)
            .split("SIP/2.0 ")
            .skip(1)
            .filter_map(|r| r.get(..3)?.parse().ok())
            .filter(|c| *c >= 200)
            .collect();
        for code in &finals {
            assert!(
                allowed.contains(code),
                "{file} over TCP: got {code}, allowed {allowed:?}"
            );
        }
        if allowed.is_empty() {
            assert!(
                finals.is_empty(),
                "{file} over TCP: a response got an answer: {finals:?}"
            );
        }
        assert_alive(&g, &format!("{file} (TCP)"));
    }
}

/// The corpus's bytes are the tests: they must be exactly the RFC's (git's text
/// filters or an editor would silently break the malformed ones).
#[test]
fn the_corpus_is_byte_exact() {
    let out = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(corpus_dir())
        .output()
        .expect("run sha256sum");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let checked = String::from_utf8_lossy(&out.stdout).matches(": OK").count();
    assert_eq!(checked, 50, "{}", String::from_utf8_lossy(&out.stdout));
}
