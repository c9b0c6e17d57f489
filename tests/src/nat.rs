//! A 1:1 NAT in front of the gateway, as on a cloud VM whose public address is not on
//! an interface: an nftables table of this test's own DNATs UDP sent to the "public"
//! loopback address (e.g. 127.0.0.2) on the gateway's ports to its "private" one
//! (127.0.0.1), and conntrack rewrites the replies' source back, so peers see one
//! address both ways — what ICE's symmetric checks need. Needs root (as the suite runs)
//! and nftables (`scripts/test` installs it). Removed when dropped.

use std::process::Command;

pub struct Nat {
    table: String,
}

impl Nat {
    /// DNAT UDP to `public` on `ports` (single ports or `LOW-HIGH` ranges) to `private`.
    pub fn one_to_one(public: &str, private: &str, ports: &[String]) -> Nat {
        let table = format!("pbnat{}", uuid::Uuid::new_v4().simple());
        let ports = ports.join(", ");
        let script = format!(
            "table ip {table} {{\n  chain out {{\n    type nat hook output priority -100;\n    ip daddr {public} udp dport {{ {ports} }} dnat to {private}\n  }}\n}}\n"
        );
        let out = Command::new("nft")
            .arg("-f")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run nft (scripts/test installs nftables; the suite runs as root)");
        assert!(
            out.status.success(),
            "nft refused the NAT table:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Nat { table }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}
