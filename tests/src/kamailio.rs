//! Kamailio (Debian `kamailio`, `kamailio-tls-modules`) as a carrier-style proxy in
//! front of the gateway, from `tests/kamailio/proxy.cfg`: record-routing, adding the
//! call's token as `User-To-User`, logging each request it relays.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sipp::free_udp_ports;
use crate::stunnel::tls_file;
use crate::workspace;

pub struct Kamailio {
    child: Child,
    log: PathBuf,
    /// UDP port (and TLS on `tls_port` when asked for).
    pub port: u16,
    pub tls_port: Option<u16>,
}

impl Kamailio {
    /// Relay new calls to `gateway` (a SIP URI) with `token`; listen on UDP, and on TLS
    /// too when `tls`.
    pub fn start(dir: &Path, gateway: &str, token: &str, tls: bool) -> Kamailio {
        let port = free_udp_ports(2);
        let tls_port = tls.then(|| free_udp_ports(1));
        let mut listen = format!("listen=udp:127.0.0.1:{port}\n");
        let mut modules = String::new();
        if let Some(t) = tls_port {
            listen.push_str(&format!("listen=tls:127.0.0.1:{t}\n"));
            let tls_cfg = dir.join("kamailio-tls.cfg");
            std::fs::write(
                &tls_cfg,
                format!(
                    "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = {key}\ncertificate = {cert}\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\nca_list = {ca}\n",
                    key = tls_file("server.key").display(),
                    cert = tls_file("server.pem").display(),
                    ca = tls_file("ca.pem").display(),
                ),
            )
            .expect("write kamailio tls.cfg");
            modules = format!(
                "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")\n",
                tls_cfg.display()
            );
        }
        let k = Kamailio::run(
            dir,
            "proxy.cfg",
            &[
                ("@LISTEN@", listen),
                ("@MODULES@", modules),
                ("@ENABLE_TLS@", if tls { "yes" } else { "no" }.into()),
                ("@GATEWAY@", gateway.into()),
                ("@TOKEN@", token.into()),
            ],
            port,
            tls_port,
        );
        if let Some(t) = tls_port {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", t)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "kamailio TLS never listened:\n{}",
                    k.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        k
    }

    /// `tests/kamailio/cluster.cfg` in front of the nodes at `nodes` (SIP URIs): the
    /// dispatcher's round robin, following a node's 302 to the session's node.
    pub fn dispatcher(dir: &Path, nodes: &[String]) -> Kamailio {
        let port = free_udp_ports(2);
        let list = dir.join("dispatcher.list");
        let lines: Vec<String> = nodes.iter().map(|n| format!("1 {n}\n")).collect();
        std::fs::write(&list, lines.concat()).expect("write dispatcher.list");
        Kamailio::run(
            dir,
            "cluster.cfg",
            &[
                ("@LISTEN@", format!("listen=udp:127.0.0.1:{port}\n")),
                ("@LIST@", list.display().to_string()),
            ],
            port,
            None,
        )
    }

    /// `tests/kamailio/pbx.cfg` on `port` (a free one when none): a registrar checking
    /// `password`, relaying calls to registered extensions.
    pub fn pbx(dir: &Path, password: &str, port: Option<u16>) -> Kamailio {
        let port = port.unwrap_or_else(|| free_udp_ports(2));
        Kamailio::run(
            dir,
            "pbx.cfg",
            &[
                ("@LISTEN@", format!("listen=udp:127.0.0.1:{port}\n")),
                ("@PASSWORD@", password.to_string()),
            ],
            port,
            None,
        )
    }

    /// The `PBX-…` lines of the log (registrations, challenges, calls).
    pub fn pbx_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.find("PBX-").map(|i| l[i..].to_string()))
            .collect()
    }

    /// Run `tests/kamailio/<template>` with its placeholders replaced.
    fn run(
        dir: &Path,
        template: &str,
        replace: &[(&str, String)],
        port: u16,
        tls_port: Option<u16>,
    ) -> Kamailio {
        let mut cfg = std::fs::read_to_string(workspace().join("tests/kamailio").join(template))
            .expect("kamailio template");
        for (from, to) in replace {
            cfg = cfg.replace(from, to);
        }
        let path = dir.join("kamailio.cfg");
        std::fs::write(&path, cfg).expect("write kamailio.cfg");
        let log = dir.join("kamailio.log");
        let out = std::fs::File::create(&log).expect("kamailio log");
        let child = crate::own_group(&mut Command::new("kamailio"))
            .args(["-DD", "-E", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("run kamailio (scripts/test installs it)");
        let k = Kamailio {
            child,
            log,
            port,
            tls_port,
        };
        k.wait_log("SO_RCVBUF is finally", Duration::from_secs(10));
        k
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "kamailio never logged `{needle}`:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `RELAY-…` lines of the log (what it relayed, from whom, where to).
    pub fn relayed(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.find("RELAY-").map(|i| l[i..].to_string()))
            .collect()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Its workers with it (`-DD` forks them; they outlive a killed parent).
        crate::kill_group(&mut self.child);
    }
}
