//! stunnel (Debian `stunnel4`) as an independent TLS peer: a TLS server in front of a
//! plain TCP SIP peer (sipp as a TLS trunk), or a TLS client behind one (sipp calling
//! the gateway's TLS listener). Certificates: `tests/data/tls`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace;

/// The test CA and the `localhost`/`127.0.0.1` certificate it signed.
pub fn tls_file(name: &str) -> PathBuf {
    workspace().join("tests/data/tls").join(name)
}

pub struct Stunnel {
    child: Child,
    pub accept_port: u16,
    log: PathBuf,
}

impl Stunnel {
    /// Take TLS on `accept_port` (the test certificate) and forward it as TCP to `connect_port`.
    pub fn server(dir: &Path, name: &str, accept_port: u16, connect_port: u16) -> Stunnel {
        let section = format!(
            "cert = {}\nkey = {}\n",
            tls_file("server.pem").display(),
            tls_file("server.key").display()
        );
        Stunnel::start(dir, name, accept_port, connect_port, &section)
    }

    /// Take TCP on `accept_port` and forward it over TLS to `connect_port`, checking the
    /// server's certificate against the test CA.
    pub fn client(dir: &Path, name: &str, accept_port: u16, connect_port: u16) -> Stunnel {
        let section = format!(
            "client = yes\nCAfile = {}\nverifyChain = yes\ncheckIP = 127.0.0.1\n",
            tls_file("ca.pem").display()
        );
        Stunnel::start(dir, name, accept_port, connect_port, &section)
    }

    fn start(dir: &Path, name: &str, accept: u16, connect: u16, section: &str) -> Stunnel {
        let log = dir.join(format!("{name}-stunnel.log"));
        let conf = dir.join(format!("{name}-stunnel.conf"));
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {}\ndebug = 5\n[sip]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n{section}",
                log.display()
            ),
        )
        .expect("write stunnel.conf");
        let child = crate::own_group(&mut Command::new("stunnel4"))
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run stunnel4 (scripts/test installs stunnel4)");
        // Ready once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", accept)).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {accept}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Stunnel {
            child,
            accept_port: accept,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        crate::kill_group(&mut self.child);
    }
}
